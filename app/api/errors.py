"""Errors at the HTTP boundary: engine errors are 422s, database outages 503s."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.errors import EngineError

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def field_error(field: str | None, message: str, kind: str) -> dict:
    """One entry of a 422 ``detail`` list, shaped like FastAPI's own."""
    location = ["body", *(field.split(".") if field else [])]
    return {"loc": location, "msg": message, "type": kind}


async def engine_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    return JSONResponse(
        {"detail": [field_error(exc.field, exc.message, exc.code)]}, status_code=422
    )


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc.__class__.__name__)
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(sa.exc.OperationalError, database_unavailable)
    app.add_exception_handler(sa.exc.InterfaceError, database_unavailable)
    app.add_exception_handler(sa.exc.TimeoutError, database_unavailable)
