"""Dependencies of the routes: settings, a database session, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.models import Tenant
from app.db.session import sessionmaker_for
from app.services import keys
from app.web import sessions

bearer = HTTPBearer(auto_error=False, description="An API key: `plateau keys create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with sessionmaker_for(settings.sqlalchemy_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Tenant:
    """The tenant of the presented key or dashboard session; else the local one.

    A request authenticated by the dashboard's session cookie must send the
    session's CSRF token in ``X-CSRF-Token`` unless it is a GET.
    """
    if credentials is not None:
        tenant = keys.authenticate(session, credentials.credentials)
        if tenant is None:
            raise _unauthorised("the API key is not valid")
        return tenant
    web = sessions.from_request(request)
    if web is not None and web.signed_in:
        tenant = sessions.tenant_of(session, settings, web)
        if tenant is None:
            raise _unauthorised("the dashboard session has ended; sign in again")
        presented = request.headers.get(sessions.CSRF_HEADER)
        if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
            settings, web, presented
        ):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a request signed in by cookie needs the {sessions.CSRF_HEADER} "
                "header of its dashboard page",
            )
        return tenant
    if settings.local_tenant:
        tenant = keys.get_or_create_tenant(session, settings.local_tenant)
        session.commit()
        return tenant
    raise _unauthorised("an API key is required: Authorization: Bearer <key>")


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


TenantDep = Annotated[Tenant, Depends(get_tenant)]
