"""Domain errors of the engine.

Every message names what was wrong and, where it helps, what would be right;
callers show it to users as it is (the CLI on one line, the API as a 422).
"""


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    #: a short machine-readable code, used by the API and the workers
    code = "engine_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: the request field the error is about (``dataset.uri``, ...), if any
        self.field = field


class DataError(EngineError):
    """The data set reference or the data behind it cannot be used."""

    code = "bad_data"


class SpecError(EngineError):
    """An architecture, training or analysis setting is out of range."""

    code = "bad_spec"


class TrainingError(EngineError):
    """Training went wrong in a way the data or settings explain (divergence)."""

    code = "training_failed"


class AnalysisCancelled(EngineError):
    """Raised from a progress callback to stop an analysis between steps."""

    code = "cancelled"
