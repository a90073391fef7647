"""API keys: ``plt_<prefix>_<secret>``; the database keeps the prefix and a hash.

The secret has 256 bits of entropy, so one round of SHA-256 is as good as a
slow password hash here, and a lookup costs one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_SCHEME = "plt"


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: show ``plaintext`` once, store ``prefix`` and ``digest``."""

    plaintext: str
    prefix: str
    digest: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_key() -> NewKey:
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, digest=hash_key(plaintext))


def key_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented key, or None when it is not one of ours."""
    scheme, _, rest = plaintext.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 12 or not secret:
        return None
    return prefix


def key_matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), digest)
