"""Signing in to the dashboard with an API key, once, and signing out.

The key is checked like a Bearer key and then forgotten: the browser keeps a
signed session cookie that names the key (see ``app.web.sessions``).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import SessionDep, SettingsDep
from app.core.security import key_prefix
from app.services import keys
from app.web import forms, sessions
from app.web.context import (
    browser_session,
    redirect,
    render,
    require_csrf,
    safe_next,
)
from app.web.sessions import CSRF_FIELD

router = APIRouter(include_in_schema=False)
logger = logging.getLogger(__name__)

NextQuery = Annotated[str | None, Query(max_length=2048)]


def _login_page(
    request: Request,
    settings: SettingsDep,
    next_url: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    web, fresh = browser_session(request, settings)
    context = {
        "csrf": sessions.csrf_token(settings, web),
        "next_url": next_url,
        "error": error,
        "keyless": bool(settings.local_tenant),
    }
    return render(
        request,
        None,
        "login.html",
        context,
        status_code=status_code,
        session=web if fresh else None,
    )


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, settings: SettingsDep, next: NextQuery = None
) -> Response:
    """The form that takes an API key."""
    return _login_page(request, settings, safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, settings: SettingsDep, db: SessionDep, posted: forms.PostedDep
) -> Response:
    """Check the key; on success a new signed-in session replaces the old one."""
    other = posted.other
    web = sessions.from_request(request)
    next_url = safe_next(other.get("next"))
    if web is None:
        # no cookie: an expired form, or cookies are blocked
        return _login_page(
            request,
            settings,
            next_url,
            error="Your browser did not send the sign-in cookie; reload and try again.",
            status_code=400,
        )
    require_csrf(request, settings, web, other.get(CSRF_FIELD))
    plaintext = other.get("api_key", "").strip()
    tenant = keys.authenticate(db, plaintext) if plaintext else None
    prefix = key_prefix(plaintext) if tenant is not None else None
    api_key = sessions.key_row(db, tenant, prefix) if tenant and prefix else None
    if api_key is None:
        logger.info("dashboard sign-in refused")
        return _login_page(
            request,
            settings,
            next_url,
            error="That API key is not valid. Keys start with plt_.",
            status_code=401,
        )
    logger.info("dashboard sign-in for tenant %s", tenant.name)
    response = redirect(request, next_url)
    sessions.set_cookie(
        response, request, settings, sessions.new_session(settings, api_key)
    )
    return response


@router.post("/logout")
def logout(
    request: Request, settings: SettingsDep, posted: forms.PostedDep
) -> Response:
    """End the session: the cookie is replaced by an anonymous one."""
    web = sessions.from_request(request)
    if web is not None:
        require_csrf(request, settings, web, posted.other.get(CSRF_FIELD))
    response = redirect(request, "/login" if not settings.local_tenant else "/")
    sessions.set_cookie(response, request, settings, sessions.new_session(settings))
    return response
