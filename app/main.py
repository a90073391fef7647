"""The FastAPI application: ``uvicorn app.main:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import errors
from app.api.routes import curves, dashboard, health, jobs
from app.core.config import Settings, get_settings, require_session_secret
from app.core.logging import configure_logging
from app.db import migrate
from app.db.session import engine_for
from app.services.hooks import resolve

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """An API for ``settings`` (the environment's when None)."""
    settings = settings or get_settings()
    require_session_secret(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        # the schema is made by `plateau db upgrade` only; refuse an old one
        migrate.require_current(engine_for(settings.sqlalchemy_url))
        # import the engine's checks now, not on the first request (torch)
        resolve(settings.validate_function)
        logger.info(
            "API ready (%s database, %s broker)",
            settings.sqlalchemy_url.split(":", 1)[0],
            settings.celery_broker_url.split(":", 1)[0],
        )
        yield

    app = FastAPI(
        title="Plateau",
        summary="Have we labelled enough data yet?",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    for module in (jobs, curves, health, dashboard):
        app.include_router(module.router)
    dashboard.install(app)
    return app
