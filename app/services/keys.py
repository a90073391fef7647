"""Tenants and their API keys."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.security import key_matches, key_prefix, new_key
from app.db.models import ApiKey, Tenant, utcnow


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created when it does not exist yet."""
    tenant = session.scalar(sa.select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant_name: str) -> str:
    """A new key for the tenant (created if needed); the plaintext is not stored."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = new_key()
    session.add(ApiKey(tenant_id=tenant.id, prefix=key.prefix, key_hash=key.digest))
    session.flush()
    return key.plaintext


def authenticate(session: Session, plaintext: str) -> Tenant | None:
    """The tenant of a valid, unrevoked key; None for anything else."""
    prefix = key_prefix(plaintext)
    if prefix is None:
        return None
    key = session.scalar(
        sa.select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    )
    if key is None or not key_matches(plaintext, key.key_hash):
        return None
    return session.get(Tenant, key.tenant_id)


def revoke_key(session: Session, prefix: str) -> bool:
    """Revoke the key with this prefix; False when no live key has it."""
    revoked = session.execute(
        sa.update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return revoked.rowcount == 1
