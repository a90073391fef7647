"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.api.deps import SettingsDep
from app.core import metrics
from app.db.session import engine_for
from app.schemas import Health
from workers.celery_app import celery_for

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(settings: SettingsDep) -> Health | JSONResponse:
    """Readiness: the database and the broker are reachable (503 otherwise)."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with engine_for(settings.sqlalchemy_url).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {exc.__class__.__name__}"
    try:
        with celery_for(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # kombu raises many kinds; all mean "not ready"
        checks["broker"] = f"unreachable: {exc.__class__.__name__}"
    if all(state == "ok" for state in checks.values()):
        return Health(status="ok", checks=checks)
    logger.warning("not ready: %s", checks)
    body = Health(status="unavailable", checks=checks).model_dump()
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics", response_class=Response, include_in_schema=False)
def prometheus_metrics(settings: SettingsDep) -> Response:
    """Prometheus metrics of this process (or machine) and job counts."""
    body = metrics.render(engine_for(settings.sqlalchemy_url).connect)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
