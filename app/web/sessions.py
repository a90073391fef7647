"""Dashboard sessions: a signed cookie that names an API key and never holds it.

The cookie is ``<payload>.<signature>``: the payload is base64url JSON with a
random nonce, the key's public prefix, a fingerprint of the key's stored hash
and an expiry; the signature is HMAC-SHA256 under the session key. A session
stays valid only while its key exists and is not revoked, so revoking a key
signs its browsers out. A session without a key is anonymous: it only carries
the nonce that the CSRF token of its forms is derived from.

Cookies are HttpOnly and SameSite=Strict (Secure over https); forms and the
page's own unsafe API calls must also present the session's CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Request, Response
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.models import ApiKey, Tenant

COOKIE = "plateau_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: used when no ``PLATEAU_SESSION_SECRET`` is set (development only): sign-ins
#: last until the process restarts
_PROCESS_SECRET = secrets.token_bytes(32)


@dataclass(frozen=True)
class WebSession:
    """A verified session cookie."""

    nonce: str
    #: the public prefix of the API key that signed in; None: anonymous
    key_prefix: str | None
    #: binds the session to that key's stored hash (a re-issued prefix fails)
    fingerprint: str | None
    #: Unix time after which the cookie is refused
    expires: int

    @property
    def signed_in(self) -> bool:
        return self.key_prefix is not None


def signing_key(settings: Settings) -> bytes:
    """The HMAC key for sessions, separated from any other use of the secret."""
    secret = (
        settings.session_secret.get_secret_value().encode()
        if settings.session_secret is not None
        else _PROCESS_SECRET
    )
    return hmac.new(secret, b"plateau dashboard session v1", hashlib.sha256).digest()


def _mac(key: bytes, purpose: str, message: str) -> str:
    digest = hmac.new(key, f"{purpose}|{message}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_session(settings: Settings, api_key: ApiKey | None = None) -> WebSession:
    """A fresh session (new nonce), signed in with ``api_key`` or anonymous."""
    return WebSession(
        nonce=secrets.token_urlsafe(18),
        key_prefix=api_key.prefix if api_key is not None else None,
        fingerprint=(
            _mac(signing_key(settings), "key", api_key.key_hash)
            if api_key is not None
            else None
        ),
        expires=int(time.time()) + settings.session_max_age_seconds,
    )


def encode(settings: Settings, session: WebSession) -> str:
    fields = {
        "n": session.nonce,
        "k": session.key_prefix,
        "f": session.fingerprint,
        "e": session.expires,
    }
    payload = base64.urlsafe_b64encode(
        json.dumps(fields, separators=(",", ":")).encode()
    ).decode()
    payload = payload.rstrip("=")
    return f"{payload}.{_mac(signing_key(settings), 'cookie', payload)}"


def decode(settings: Settings, value: str) -> WebSession | None:
    """The session in a cookie value; None when forged, malformed or expired."""
    payload, _, signature = value.partition(".")
    expected = _mac(signing_key(settings), "cookie", payload)
    if not signature or not hmac.compare_digest(signature, expected):
        return None
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        fields = json.loads(raw)
        session = WebSession(
            nonce=str(fields["n"]),
            key_prefix=fields["k"],
            fingerprint=fields["f"],
            expires=int(fields["e"]),
        )
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None
    if session.expires < time.time():
        return None
    return session


def from_request(request: Request) -> WebSession | None:
    value = request.cookies.get(COOKIE)
    if not value or len(value) > 1024:
        return None
    return decode(request.app.state.settings, value)


def tenant_of(db: Session, settings: Settings, session: WebSession) -> Tenant | None:
    """The tenant of a signed-in session whose key is still valid, else None."""
    if not session.signed_in:
        return None
    key = db.scalar(
        sa.select(ApiKey).where(
            ApiKey.prefix == session.key_prefix, ApiKey.revoked_at.is_(None)
        )
    )
    if key is None or session.fingerprint is None:
        return None
    expected = _mac(signing_key(settings), "key", key.key_hash)
    if not hmac.compare_digest(session.fingerprint, expected):
        return None
    return db.get(Tenant, key.tenant_id)


def key_row(db: Session, tenant: Tenant, prefix: str) -> ApiKey | None:
    return db.scalar(
        sa.select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.tenant_id == tenant.id)
    )


def csrf_token(settings: Settings, session: WebSession) -> str:
    """The token a session's forms and unsafe fetches must send back."""
    return _mac(signing_key(settings), "csrf", session.nonce)


def csrf_ok(
    settings: Settings, session: WebSession | None, presented: str | None
) -> bool:
    if session is None or not presented:
        return False
    return hmac.compare_digest(presented, csrf_token(settings, session))


def set_cookie(
    response: Response, request: Request, settings: Settings, session: WebSession
) -> None:
    response.set_cookie(
        COOKIE,
        encode(settings, session),
        max_age=max(session.expires - int(time.time()), 0),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
