"""The dashboard at ``/``: the pages of ``app.web``, its static files and login.

Pages are server-rendered (Jinja2) and kept live by htmx polling; the chart
library and htmx are vendored under ``app/static/vendor`` (no CDN).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from app.web import auth, pages
from app.web.context import (
    LoginRequired,
    ReloadSameSite,
    login_redirect,
    reload_same_site,
)

STATIC = Path(__file__).resolve().parents[2] / "static"

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(auth.router)


def install(app: FastAPI) -> None:
    """Serve ``/static``; send page views without a session to the login page."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_exception_handler(ReloadSameSite, reload_same_site)
