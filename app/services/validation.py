"""Checks a request must pass before a job is queued (the engine's cheap ones)."""

from __future__ import annotations

import logging

from app.core.config import Settings
from app.services.hooks import resolve
from engine.errors import DataError, EngineError
from engine.specs import AnalysisRequest

logger = logging.getLogger(__name__)


def check_request(settings: Settings, request: AnalysisRequest) -> None:
    """Raise an EngineError (with ``.field``) when the request cannot run.

    The data set reference must resolve and be present under the data
    directory, and the network must fit the parameter limit. Anything else
    the engine raises while looking is reported as bad data, not a crash.
    """
    validate = resolve(settings.validate_function)
    try:
        validate(
            request,
            data_dir=settings.data_dir,
            limits=settings.limits,
            allow_download=settings.allow_download,
        )
    except EngineError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("validation of %s raised %r", request.dataset.uri, exc)
        raise DataError(
            f"the data set could not be inspected: {exc}", field="dataset.uri"
        ) from exc
