"""Fixtures of the reliability tests: real PostgreSQL, Redis, workers and APIs.

Each session gets a scratch database on the machine's PostgreSQL and a Redis
key prefix of its own on database 7 of the machine's Redis; tests that stop,
flush or restart a server start a private one instead (``harness``). Where a
service is unreachable the tests skip, except under CI (``CI=true``), where
they fail. Settings go to the service's processes as environment variables,
with leases and reaper passes short enough for a test to watch them expire.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `harness`, and `slow_engine` for settings

from harness import pg_admin_url  # noqa: E402
from plateau_service import Service  # noqa: E402

from app.db import migrate  # noqa: E402
from app.db.models import Base  # noqa: E402
from app.db.session import dispose_all, session_scope  # noqa: E402
from tests.support.services import redis_key_prefix  # noqa: E402

REDIS_BASE = f"redis://127.0.0.1:{os.environ.get('PLATEAU_TEST_REDIS_PORT', '6379')}"
#: the machine's Redis is shared: this suite keeps to database 7
REDIS_DB = 7


@pytest.fixture(scope="session")
def scratch_db() -> Iterator[str]:
    """A migrated scratch database for this session, dropped at its end."""
    admin_url = pg_admin_url()
    name = f"plateau_reliability_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin_url).set(database=name).render_as_string(False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        dispose_all()
        with admin.connect() as connection:
            connection.execute(
                sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )
        admin.dispose()


@pytest.fixture
def db(scratch_db: str) -> str:
    """The scratch database, emptied: a reaper sees only this test's jobs."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with session_scope(scratch_db) as session:
        session.execute(sa.text(f"TRUNCATE {tables} CASCADE"))
    return scratch_db


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[dict[str, str]]:
    """Broker settings on the machine's Redis: database 7, a key prefix of our own."""
    url = f"{REDIS_BASE}/{REDIS_DB}"
    with redis_key_prefix(url, "plateau-reliability") as prefix:
        yield {"broker_url": url, "broker_key_prefix": prefix}


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    dispose_all()


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator:
    """``make_service(database_url=..., broker_url=...)``: a Service, closed after."""
    made: list[Service] = []

    def make(**values: Any) -> Service:
        service = Service(tmp_path / f"service-{len(made)}", values)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def service(make_service, db: str, shared_redis: dict[str, str]) -> Service:
    """A Service on the scratch database and the shared Redis."""
    return make_service(database_url=db, **shared_redis)
