"""Fixtures of the service tests: databases, Redis, settings, clients, tenants.

PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) are real
services. Each session gets its own scratch database and its own Redis key
prefix and queue names. Where they are unreachable the tests that need them
skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.config import Settings
from app.db import migrate
from app.db.models import Base
from app.db.session import dispose_all, session_scope
from app.services.keys import create_key
from tests.support.services import (  # noqa: F401 - also for the tests
    free_port,
    pg_admin_url,
    redis_key_prefix,
    unavailable,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # `fakes:analyze` for settings and subprocesses

# overridable (like PLATEAU_TEST_POSTGRES_PORT) so that a test can prove what
# an unreachable service does
REDIS_URL_BASE = (
    f"redis://127.0.0.1:{os.environ.get('PLATEAU_TEST_REDIS_PORT', '6379')}"
)
REDIS_DB = 5
FAKE = {
    "analyze_function": "fakes:analyze",
    "validate_function": "fakes:validate",
}


# -- PostgreSQL ------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A scratch database for this session (dropped at the end); its base URL."""
    admin_url = pg_admin_url()
    name = f"plateau_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin_url).set(database=name).render_as_string(False)
    try:
        yield url
    finally:
        dispose_all()
        with admin.connect() as connection:
            connection.execute(
                sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )
        admin.dispose()


@pytest.fixture(scope="session")
def pg_migrated(pg_server_url: str) -> str:
    migrate.upgrade(pg_server_url)
    return pg_server_url


def truncate(url: str) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with session_scope(url) as session:
        session.execute(sa.text(f"TRUNCATE {tables} CASCADE"))


# -- Redis -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_broker() -> Iterator[dict[str, str]]:
    """Broker settings on Redis db 5 with a key prefix and queues of our own."""
    url = f"{REDIS_URL_BASE}/{REDIS_DB}"
    with redis_key_prefix(url, "plateau-test") as prefix:
        tag = prefix.rstrip(":").rsplit("-", 1)[-1]
        yield {
            "broker_url": url,
            "broker_key_prefix": prefix,
            "queue": f"plateau-{tag}",
            "gpu_queue": f"gpu-{tag}",
        }


# -- settings, apps, tenants -----------------------------------------------------


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    dispose_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'var' / 'plateau.sqlite'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("pg_migrated")
    truncate(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "var_dir": tmp_path / "var",
            "data_dir": tmp_path / "data",
            "local_tenant": None,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(database_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(database_url=database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def new_key(settings: Settings) -> Callable[[str], dict[str, str]]:
    """Make a key for a tenant; returns the Authorization header."""

    def make(tenant: str) -> dict[str, str]:
        with session_scope(settings.sqlalchemy_url) as session:
            key = create_key(session, tenant)
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
def auth(new_key: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return new_key("acme")


DIGITS = {
    "dataset": {"uri": "sklearn:digits"},
    "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 3},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.001, "seed": 0},
    "analysis": {"method": "point", "tolerance": 0.0001, "permutations": 10},
}
