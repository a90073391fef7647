"""Errors at the HTTP boundary: engine errors are 422s, database outages 503s."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine.errors import EngineError

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

#: what every route behind a key may answer besides its own statuses (OpenAPI)
KEYED_RESPONSES: dict[int | str, dict] = {
    401: {"description": "No valid API key"},
    404: {"description": "No such job for this key's tenant"},
    429: {"description": "Over the key's rate limit; see Retry-After"},
    503: {"description": "The database is unavailable; see Retry-After"},
}


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


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's answer, with two corrections: bad bodies are 422, Allow is whole."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == BODY_NOT_PARSED:
        # bytes that are not UTF-8, say: bad input like any other, so a 422
        message = "the body is not JSON text encoded in UTF-8"
        detail = [field_error(None, message, "json_invalid")]
        return JSONResponse({"detail": detail}, status_code=422)
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route of the path only
        methods = allowed_methods(request)
        if methods:
            exc = StarletteHTTPException(
                405, exc.detail, headers={"Allow": ", ".join(sorted(methods))}
            )
    return await http_exception_handler(request, exc)


#: FastAPI's detail for a body it could not parse (not JSON text at all)
BODY_NOT_PARSED = "There was an error parsing the body"


#: the methods a route of this API may have, for the Allow header
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> set[str]:
    """Every method some route of the application fully matches at this path."""
    scope = {
        "type": "http",
        "path": request.scope["path"],
        "root_path": request.scope.get("root_path", ""),
        "headers": [],
        "query_string": b"",
    }
    return {
        method
        for method in METHODS
        if any(
            route.matches({**scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    }


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(sa.exc.OperationalError, database_unavailable)
    app.add_exception_handler(sa.exc.InterfaceError, database_unavailable)
    app.add_exception_handler(sa.exc.TimeoutError, database_unavailable)
