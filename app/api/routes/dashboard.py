"""``/``: a minimal page listing the caller's jobs (the full dashboard comes later)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

# TODO: the dashboard of the contract (key prompt with an HttpOnly session
# cookie under `plateau serve`, live charts) is a separate piece of work; this
# page only lists jobs, and works keyless under `plateau up`.
PAGE = (Path(__file__).parents[2] / "static" / "index.html").read_text()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(PAGE)
