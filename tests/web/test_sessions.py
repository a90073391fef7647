"""Dashboard sessions: signed, expiring, bound to a key; weak secrets refused."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from pydantic import ValidationError

from app.core.config import Settings, require_session_secret
from app.db.models import ApiKey
from app.web import sessions

SECRET = "0123456789abcdef" * 4


def make_key(prefix: str = "abcdefabcdef", digest: str = "d" * 64) -> ApiKey:
    return ApiKey(tenant_id=1, prefix=prefix, key_hash=digest)


def test_a_cookie_round_trips_and_names_the_key_without_holding_it():
    settings = Settings(session_secret=SECRET)
    session = sessions.new_session(settings, make_key())

    value = sessions.encode(settings, session)

    assert sessions.decode(settings, value) == session
    assert session.signed_in and session.key_prefix == "abcdefabcdef"
    assert "d" * 16 not in value  # the fingerprint is a MAC, not the hash


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # signature
        lambda v: ("f" if v[0] != "f" else "e") + v[1:],  # payload
        lambda v: v.split(".")[0],  # no signature
        lambda v: "",
    ],
)
def test_a_tampered_cookie_is_refused(tamper):
    settings = Settings(session_secret=SECRET)
    value = sessions.encode(settings, sessions.new_session(settings, make_key()))

    assert sessions.decode(settings, tamper(value)) is None


def test_a_cookie_signed_under_another_secret_or_expired_is_refused():
    settings = Settings(session_secret=SECRET)
    session = sessions.new_session(settings, make_key())
    other = Settings(session_secret="f" * 64)

    assert sessions.decode(other, sessions.encode(settings, session)) is None
    expired = replace(session, expires=int(time.time()) - 1)
    assert sessions.decode(settings, sessions.encode(settings, expired)) is None


def test_csrf_tokens_belong_to_one_session():
    settings = Settings(session_secret=SECRET)
    one, two = sessions.new_session(settings), sessions.new_session(settings)
    token = sessions.csrf_token(settings, one)

    assert sessions.csrf_ok(settings, one, token)
    assert not sessions.csrf_ok(settings, two, token)
    assert not sessions.csrf_ok(settings, one, "")
    assert not sessions.csrf_ok(settings, None, token)


def test_production_refuses_a_missing_or_placeholder_session_secret():
    with pytest.raises(ValueError, match="PLATEAU_SESSION_SECRET is required"):
        require_session_secret(Settings(env="production"))
    for weak in ("changeme", "x" * 20, "please-change-me-" + "0" * 32):
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(env="production", session_secret=weak)

    require_session_secret(Settings(env="production", session_secret=SECRET))
    require_session_secret(Settings())  # development: a random one per process


def test_the_api_refuses_to_start_in_production_without_a_secret(tmp_path):
    from app.main import create_app

    with pytest.raises(ValueError, match="PLATEAU_SESSION_SECRET"):
        create_app(Settings(env="production", var_dir=tmp_path))
