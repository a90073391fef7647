"""Who is looking at a page, and how pages are answered.

Every page and fragment depends on :func:`get_viewer`: the tenant of the
signed-in dashboard session, or the local tenant under ``plateau up``;
anyone else is sent to the login page. Responses carry the session cookie
when it is new, a strict Content-Security-Policy and ``no-store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.deps import SessionDep, SettingsDep
from app.core.config import Settings
from app.db.models import Tenant
from app.services import keys
from app.web import sessions, views
from app.web.sessions import WebSession

TEMPLATES = Path(__file__).resolve().parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)
templates.env.filters["count"] = views.count
templates.env.filters["number"] = views.number
templates.env.filters["sentence"] = views.sentence

#: scripts and styles only from this origin (uPlot sets element styles)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


class LoginRequired(Exception):
    """A page was asked for without a valid session under ``plateau serve``."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class ReloadSameSite(Exception):
    """A link from another site arrived without the SameSite=Strict cookie."""


@dataclass
class Viewer:
    """The caller of a page: their tenant and their dashboard session."""

    tenant: Tenant
    session: WebSession
    #: the session is new and its cookie must be set on the response
    fresh: bool
    #: ``plateau up``'s local tenant, signed in by nobody
    keyless: bool
    csrf: str


def browser_session(request: Request, settings: Settings) -> tuple[WebSession, bool]:
    """The cookie's session, or a new anonymous one (True: set the cookie).

    A browser does not send a SameSite=Strict cookie when a link on another
    site opens a page; rather than sign the viewer out, the page reloads
    itself once, from this site, so that the cookie comes along.
    """
    current = sessions.from_request(request)
    if current is not None:
        return current, False
    if (
        request.method == "GET"
        and request.headers.get("Sec-Fetch-Site") == "cross-site"
        and request.headers.get("Sec-Fetch-Mode") == "navigate"
    ):
        raise ReloadSameSite
    return sessions.new_session(settings), True


def get_viewer(request: Request, settings: SettingsDep, db: SessionDep) -> Viewer:
    web, fresh = browser_session(request, settings)
    if web.signed_in:
        tenant = sessions.tenant_of(db, settings, web)
        if tenant is not None:
            csrf = sessions.csrf_token(settings, web)
            return Viewer(tenant, web, fresh, keyless=False, csrf=csrf)
        # the key was revoked or the secret changed: start over, anonymous
        web, fresh = sessions.new_session(settings), True
    if settings.local_tenant:
        tenant = keys.get_or_create_tenant(db, settings.local_tenant)
        db.commit()
        csrf = sessions.csrf_token(settings, web)
        return Viewer(tenant, web, fresh, keyless=True, csrf=csrf)
    next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(next_url)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def safe_next(next_url: str | None) -> str:
    """A same-site path to return to after login; ``/`` for anything else."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or "\\" in next_url:
        return "/"
    return next_url


def login_redirect(request: Request, exc: Exception) -> Response:
    """Send a page view to the login page; an htmx fragment request too."""
    assert isinstance(exc, LoginRequired)
    target = "/login?next=" + quote(safe_next(exc.next_url), safe="/")
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


def reload_same_site(request: Request, exc: Exception) -> Response:
    """A page that loads itself again from this site (see ``browser_session``)."""
    page = (
        '<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0">'
        '<title>Plateau</title><p><a href="">Continue to Plateau</a></p>'
    )
    return finish(HTMLResponse(page), request, request.app.state.settings)


def finish(
    response: Response,
    request: Request,
    settings: Settings,
    session: WebSession | None = None,
) -> Response:
    """Add the security headers, and the cookie of a new ``session``."""
    response.headers.update(SECURITY_HEADERS)
    if session is not None:
        sessions.set_cookie(response, request, settings, session)
    return response


def render(
    request: Request,
    viewer: Viewer | None,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    session: WebSession | None = None,
) -> HTMLResponse:
    """A template, with the viewer's tenant, CSRF token and mode in its context."""
    settings: Settings = request.app.state.settings
    if viewer is not None:
        context = {
            "tenant": viewer.tenant,
            "csrf": viewer.csrf,
            "keyless": viewer.keyless,
            **context,
        }
        if viewer.fresh and session is None:
            session = viewer.session
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    return finish(response, request, settings, session)  # type: ignore[return-value]


def redirect(request: Request, url: str, viewer: Viewer | None = None) -> Response:
    settings: Settings = request.app.state.settings
    response = RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
    session = viewer.session if viewer is not None and viewer.fresh else None
    return finish(response, request, settings, session)


def require_csrf(
    request: Request, settings: Settings, session: WebSession, presented: str | None
) -> None:
    """403 unless the form's token is this session's and the form is ours."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        ours = f"{request.url.scheme}://{request.url.netloc}"
        if origin != ours:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site form refused")
    if not sessions.csrf_ok(settings, session, presented):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "the form has expired or was not made by this dashboard; reload the page",
        )
