"""Database faults (RELIABILITY.md tests 9-11) against a real API, worker and reaper.

Test 9 terminates the connections of this session's scratch database only.
Test 10 stops PostgreSQL hard, so it runs on a throwaway cluster of its own
(``initdb`` in a temporary folder, a free port), never the machine's. Test
11 crashes the API between its commit and its enqueue, through a setting
that exists for tests and is refused in production. Test 12 (webhooks) is
covered by tests/webhooks, in progress.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from harness import (
    PostgresInstance,
    pg_admin_url,
    record,
    unavailable,
    wait_until,
)

from app.db import migrate
from app.db.models import ApiKey, CurvePointRow, Job, Tenant
from app.db.session import dispose_all, session_scope

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}
SHORT = {"dataset": {"uri": "fake:train=2,measure=2,step=0.02"}}


class Load:
    """A few threads sending GETs and POSTs until stopped; every answer is kept."""

    def __init__(self, url: str, key: str, job_id: str, threads: int = 4) -> None:
        self.url, self.job_id = url, job_id
        self.headers = {"Authorization": f"Bearer {key}"}
        self.answers: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=15) as http:
            i = 0
            while not self._stop.is_set() and i < 100_000:
                i += 1
                try:
                    if (i + n) % 3:
                        status = http.get(f"/v1/jobs/{self.job_id}").status_code
                    else:
                        # a few keys: real inserts, but a bounded number of jobs
                        once = {"Idempotency-Key": f"load-{i % 4}"}
                        response = http.post("/v1/jobs", json=SHORT, headers=once)
                        status = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.answers.append((time.monotonic(), status))

    def counts(self) -> Counter:
        return Counter(status for _t, status in self.answers)


def terminate_backends(database: str) -> int:
    """pg_terminate_backend every connection to ``database`` but this one."""
    admin = sa.create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        admin.dispose()


def test_9_terminated_connections_under_load_give_503s_then_recover(service, db):
    database = sa.make_url(db).database
    key = service.key()
    api = service.api(rate_limit_per_minute=0)  # the load is over the default
    service.worker()
    service.reaper()
    with httpx.Client(base_url=api.url, timeout=15) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        job_id = http.post("/v1/jobs", json=SHORT).json()["id"]
        long = http.post(
            "/v1/jobs", json={"dataset": {"uri": "fake:train=40,measure=40"}}
        ).json()["id"]

    terminated: list[tuple[float, int]] = []
    with Load(api.url, key, job_id) as load:
        wait_until(lambda: len(load.answers) > 50, 60, "the load to start")
        for _ in range(3):
            terminated.append((time.monotonic(), terminate_backends(database)))
            time.sleep(1.5)
        time.sleep(1.5)

    counts = load.counts()
    last_cut = terminated[-1][0]
    after = [(t, s) for t, s in load.answers if t > last_cut]
    first_ok = next((t for t, s in after if s in (200, 202)), None)
    server_errors = sum(n for s, n in counts.items() if isinstance(s, int) and s >= 500)
    rows = [service.wait_status(j, FINAL, timeout=90) for j in (job_id, long)]

    assert counts[500] == 0, counts
    assert set(counts) <= {200, 202, 503}, counts
    assert "Exception in ASGI application" not in api.text()
    assert first_ok is not None, "no success after the connections were cut"
    assert [row.status for row in rows] == ["succeeded", "succeeded"]
    record(
        "9",
        requests=len(load.answers),
        answers={str(s): n for s, n in sorted(counts.items(), key=str)},
        server_errors_5xx=server_errors,
        http_500=counts[500],
        connections_terminated=sum(n for _t, n in terminated),
        recovery_seconds=round(first_ok - last_cut, 3),
        job_attempts=[row.attempt for row in rows],
    )


@pytest.fixture
def own_postgres() -> Any:
    """A throwaway PostgreSQL cluster, migrated; removed after the test."""
    try:
        instance = PostgresInstance()
    except RuntimeError as exc:  # no initdb on this machine
        unavailable("a private PostgreSQL", exc)
    try:
        instance.create()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        instance.remove()
        unavailable("a private PostgreSQL", exc)
    try:
        migrate.upgrade(instance.url)
        dispose_all()
        yield instance
    finally:
        dispose_all()
        instance.remove()


def test_10_postgres_stopped_hard_for_20_s_loses_no_row_and_the_job_completes(
    make_service, own_postgres, shared_redis
):
    outage = 20.0
    service = make_service(database_url=own_postgres.url, **shared_redis)
    key = service.key()
    api = service.api()
    service.worker()
    service.reaper()
    with httpx.Client(base_url=api.url, timeout=15) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        done = [http.post("/v1/jobs", json=SHORT).json()["id"] for _ in range(3)]
        for job_id in done:
            service.wait_status(job_id, FINAL, timeout=60)
        long = http.post(
            "/v1/jobs", json={"dataset": {"uri": "fake:train=40,measure=60"}}
        ).json()["id"]
        service.wait_status(long, {"running"}, timeout=60)
        before = _committed_rows(service.url)
        dispose_all()

        own_postgres.stop("immediate")
        stopped = time.monotonic()
        during: Counter = Counter()
        while time.monotonic() - stopped < outage:
            try:
                during[http.get(f"/v1/jobs/{long}").status_code] += 1
            except httpx.HTTPError as exc:
                during[type(exc).__name__] += 1
            time.sleep(0.5)
        own_postgres.start()
        restarted = time.monotonic()

        first_ok = wait_until(
            lambda: _ok(http, f"/v1/jobs/{long}"), 60, "the API to recover"
        )
        api_back = first_ok - restarted
        row = service.wait_status(long, FINAL, timeout=120)
        completed = time.monotonic() - restarted
    after = _committed_rows(service.url)

    lost = {table: before[table] - after[table] for table in before}
    assert row.status == "succeeded", row.error_message
    assert during[500] == 0 and 503 in during, during
    assert "Exception in ASGI application" not in api.text()
    assert all(not missing for missing in lost.values()), lost
    record(
        "10",
        outage_seconds=outage,
        lost_rows=sum(len(missing) for missing in lost.values()),
        answers_during_outage={str(s): n for s, n in during.items()},
        api_recovered_seconds_after_restart=round(api_back, 2),
        job_completed_seconds_after_restart=round(completed, 2),
        job_attempts=row.attempt,
    )


def _ok(http: httpx.Client, path: str) -> float | None:
    try:
        return time.monotonic() if http.get(path).status_code == 200 else None
    except httpx.HTTPError:
        return None


def _committed_rows(url: str) -> dict[str, set]:
    """Every committed row that must survive, by table, as comparable tuples."""
    with session_scope(url) as session:
        return {
            "tenants": set(session.execute(sa.select(Tenant.id, Tenant.name)).all()),
            "api_keys": set(
                session.execute(sa.select(ApiKey.prefix, ApiKey.key_hash)).all()
            ),
            "jobs": set(session.execute(sa.select(Job.id, Job.created_at)).all()),
            "finished_jobs": set(
                session.execute(
                    sa.select(Job.id, Job.status, Job.finished_at).where(
                        Job.status.in_(FINAL)
                    )
                ).all()
            ),
            "curve_points": set(
                session.execute(sa.select(CurvePointRow.job_id, CurvePointRow.k)).all()
            ),
        }


def test_11_a_crash_between_commit_and_enqueue_is_enqueued_by_the_reaper(service):
    rounds = 3
    key = service.key()
    service.worker()
    service.reaper()
    crashed: list[str] = []
    for _ in range(rounds):
        api = service.api(test_crash_after_commit="true")
        with httpx.Client(base_url=api.url, timeout=15) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            with pytest.raises(httpx.HTTPError):
                http.post("/v1/jobs", json=SHORT)
        wait_until(lambda api=api: not api.alive(), 30, "the API to die")
        assert api.popen.returncode == 70
        with session_scope(service.url) as session:
            newest = session.scalars(
                sa.select(Job).order_by(Job.created_at.desc()).limit(1)
            ).one()
            assert newest.enqueued_at is None, "it was enqueued before the crash"
            crashed.append(str(newest.id))
    assert len(set(crashed)) == rounds

    rows = [service.wait_status(job, FINAL, timeout=90) for job in crashed]

    assert [row.status for row in rows] == ["succeeded"] * rounds
    stuck = [(row.started_at - row.created_at).total_seconds() for row in rows]
    record(
        "11",
        crashes=rounds,
        jobs_recovered=len(rows),
        longest_seconds_in_queued=round(max(stuck), 2),
        enqueue_grace_seconds=service.settings.enqueue_grace_seconds,
        reaper_interval_seconds=service.settings.reaper_interval_seconds,
    )


def test_the_crash_hook_is_refused_in_production():
    from pydantic import ValidationError

    from app.core.config import Settings

    with pytest.raises(ValidationError, match="TEST_CRASH_AFTER_COMMIT"):
        Settings(env="production", test_crash_after_commit=True)
