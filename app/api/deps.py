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

bearer = HTTPBearer(auto_error=False, description="An API key: `plateau keys create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with sessionmaker_for(settings.sqlalchemy_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Tenant:
    """The tenant of the presented key; the local tenant in ``plateau up``."""
    if credentials is None:
        if settings.local_tenant:
            tenant = keys.get_or_create_tenant(session, settings.local_tenant)
            session.commit()
            return tenant
        raise _unauthorised("an API key is required: Authorization: Bearer <key>")
    tenant = keys.authenticate(session, credentials.credentials)
    if tenant is None:
        raise _unauthorised("the API key is not valid")
    return tenant


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


TenantDep = Annotated[Tenant, Depends(get_tenant)]
