"""The service on loopback for bench/load.py and bench/soak.py, removed at the end.

A scratch database on the machine's PostgreSQL (127.0.0.1:5432), a key prefix
of its own on database 8 of the machine's Redis (127.0.0.1:6379), the API
(uvicorn), workers and the reaper as child processes, and the no-op engine
of tests/reliability/slow_engine.py, so that a job costs only the service's
own work. Everything it starts it stops, by pid; the database is dropped and
the Redis keys deleted. Traffic stays on loopback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

import sqlalchemy as sa  # noqa: E402
from harness import Process  # noqa: E402
from plateau_service import Service  # noqa: E402

PG = os.environ.get("PLATEAU_BENCH_POSTGRES", "127.0.0.1:5432")
REDIS = os.environ.get("PLATEAU_BENCH_REDIS", "redis://127.0.0.1:6379/8")
#: a job that does nothing: the engine returns at once
NO_OP = {"dataset": {"uri": "fake:train=0,measure=0"}}


def admin_url() -> str:
    for user in ("postgres", "root"):
        url = f"postgresql+psycopg://{user}@{PG}/test"
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    raise SystemExit(f"PostgreSQL is not reachable at {PG}")


class Stack:
    """API, ``workers`` workers and (optionally) the reaper on a fresh database."""

    def __init__(
        self, *, workers: int = 0, reaper: bool = False, api_processes: int = 1
    ) -> None:
        self.workers, self.with_reaper = workers, reaper
        self.api_processes = api_processes
        self.folder = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
        self.name = f"plateau_bench_{uuid.uuid4().hex[:10]}"
        self.prefix = f"plateau-bench-{uuid.uuid4().hex[:8]}:"
        self.admin = admin_url()
        self.worker_processes: list[Process] = []
        self.reaper: Process | None = None

    def __enter__(self) -> Stack:
        from app.db import migrate

        admin = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        url = sa.make_url(self.admin).set(database=self.name)
        self.url = url.render_as_string(False)
        try:
            migrate.upgrade(self.url)
            self.service = Service(
                self.folder,
                {
                    "database_url": self.url,
                    "broker_url": REDIS,
                    "broker_key_prefix": self.prefix,
                    "rate_limit_per_minute": 0,
                    "log_level": "WARNING",
                    # leases and passes as in production, not as in the tests
                    "lease_seconds": 60,
                    "reaper_interval_seconds": 10,
                    "enqueue_grace_seconds": 30,
                    "progress_interval_seconds": 0.5,
                },
            )
            self.key = self.service.key("bench")
            self.api = self.service.api(processes=self.api_processes)
            for _ in range(self.workers):
                self.worker_processes.append(self.service.worker())
            if self.with_reaper:
                self.reaper = self.service.reaper()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def pids(self) -> dict[str, int]:
        """The processes whose memory a soak watches, by role."""
        found = {"api": self.api.pid}
        for n, worker in enumerate(self.worker_processes):
            found[f"worker{n}"] = worker.pid
            for m, child in enumerate(worker.children()):
                found[f"worker{n}-child{m}"] = child
        if self.reaper is not None:
            found["reaper"] = self.reaper.pid
        return found

    def query(self, sql: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(sql), params).all())
        finally:
            engine.dispose()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        import shutil

        import redis

        from app.db.session import dispose_all

        if hasattr(self, "service"):
            self.service.close()
        dispose_all()
        admin = sa.create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(
                sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            )
        admin.dispose()
        client = redis.Redis.from_url(REDIS)
        try:
            for key in client.scan_iter(match=f"{self.prefix}*", count=500):
                client.delete(key)
        finally:
            client.close()
        shutil.rmtree(self.folder, ignore_errors=True)
