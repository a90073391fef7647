"""What the tests that need real services share: where they are, and what to
do when one is missing (skip on a laptop, fail in CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
import sqlalchemy as sa

PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("PLATEAU_TEST_POSTGRES_PORT", "5432"))


def unavailable(what: str, why: object) -> NoReturn:
    """Skip locally; under CI (``CI=true``) a missing service fails the test."""
    message = f"{what} is unavailable: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: services are required)")
    pytest.skip(message)


def pg_admin_url() -> str:
    """A URL of the machine's PostgreSQL that may create databases."""
    last: Exception | None = None
    for user in ("postgres", "root"):
        url = f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/test"
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.OperationalError as exc:
            last = exc
        finally:
            engine.dispose()
    unavailable("PostgreSQL", str(last).splitlines()[0] if last else "no user")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_key_prefix(url: str, label: str) -> Iterator[str]:
    """A key prefix of our own on a shared Redis; its keys are deleted after."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("Redis", exc)
    prefix = f"{label}-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()
