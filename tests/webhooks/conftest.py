"""Fixtures of the webhook tests: a receiver on loopback, jobs that end on cue.

The databases, Redis and settings fixtures are the service tests' own
(``tests/service/conftest.py``, loaded under another name), so both suites
find PostgreSQL and Redis the same way and fail instead of skipping under
``CI=true``.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # `hookkit`, and `hookfakes:analyze` for settings


def _load_service_fixtures():  # noqa: ANN202 - a module
    path = REPO / "tests" / "service" / "conftest.py"
    spec = importlib.util.spec_from_file_location("plateau_service_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


service = _load_service_fixtures()
pg_server_url = service.pg_server_url
pg_migrated = service.pg_migrated
redis_broker = service.redis_broker
_close_engines = service._close_engines
sqlite_url = service.sqlite_url
database_url = service.database_url
make_settings = service.make_settings

from hookkit import FAKE, REQUEST, Receiver, Trap  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.db.session import session_scope  # noqa: E402
from app.schemas import JobCreate  # noqa: E402
from app.services import jobs  # noqa: E402
from app.services.keys import get_or_create_tenant  # noqa: E402


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    port = Trap()
    yield port
    port.close()


@pytest.fixture
def hook_settings(
    make_settings: Callable[..., Settings], database_url: str, receiver: Receiver
) -> Settings:
    """The fake engine, the receiver allowed on loopback, retries 0.1 s apart."""
    return make_settings(
        database_url=database_url,
        webhook_allow_private=f"127.0.0.1:{receiver.port}",
        webhook_retry_schedule=(0.1, 0.1),
        webhook_retry_jitter=0.0,
        webhook_timeout_seconds=3.0,
        public_base_url="https://plateau.example.org",
        progress_interval_seconds=0,
        **FAKE,
    )


@pytest.fixture
def submit(hook_settings: Settings, receiver: Receiver) -> Callable[..., uuid.UUID]:
    """Queue a job (not enqueued) whose webhook is the receiver; returns its id."""

    def make(
        body: dict | None = None, *, tenant: str = "acme", url: str | None = None
    ) -> uuid.UUID:
        body = {
            **(body or REQUEST),
            "webhook": {"url": url or receiver.url, "secret": receiver.secret},
        }
        with session_scope(hook_settings.sqlalchemy_url) as session:
            owner = get_or_create_tenant(session, tenant)
            submitted = jobs.submit(
                session,
                owner.id,
                JobCreate.model_validate(body),
                queue=hook_settings.queue,
            )
            return submitted.job.id

    return make
