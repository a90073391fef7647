"""Log set-up: one format for every process, the job id on every line of a job.

The job id lives in a context variable; a filter on the handler copies it to
each record, so the engine's own log lines carry it too.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

current_job_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_job_id", default="-"
)

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(process)d %(name)s [job=%(job_id)s] %(message)s"
)


class JobIdFilter(logging.Filter):
    """Adds ``record.job_id``: the id of the job being run, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job_id.get()
        return True


@contextmanager
def job_context(job_id: object) -> Iterator[None]:
    """Tag every log line inside the block with ``job_id``."""
    token = current_job_id.set(str(job_id))
    try:
        yield
    finally:
        current_job_id.reset(token)


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr in the service's format (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_plateau", False):
            break
    else:
        handler = logging.StreamHandler()
        handler._plateau = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(JobIdFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
