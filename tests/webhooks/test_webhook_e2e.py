"""Webhooks end to end: PostgreSQL, Redis, real ``celery worker`` subprocesses.

Two real-engine jobs on sklearn:digits (2 epochs, 10 permutations) end with
``data_budget.reached`` and ``data_budget.exceeded``. Then a worker started
with the crash hook dies between a job's final commit and its deliveries,
and ``plateau reaper`` (whose sweeper delivers webhooks) sends each event
exactly once, under the id it was committed with.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hookkit import FAKE, SECRET, SUFFICIENT, Receiver, payloads

from app.core.config import Settings
from app.db.models import Job
from app.db.session import session_scope
from app.schemas import JobCreate
from app.services import jobs, webhooks
from app.services.keys import get_or_create_tenant
from workers.enqueue import enqueue

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DIGITS = {
    "dataset": {"uri": "sklearn:digits"},
    "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 3},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.001, "seed": 0},
    "analysis": {"method": "point", "permutations": 10},
}
#: final delta is about 1.2e-4 on these settings: 2e-3 is met at k* ≈ 600 of
#: 1,797 samples; 1e-4 is not, and the projection (≈ 2,100, interval
#: ≈ [2,040, 2,160]) is far over a budget of 1,000 at either end
SUFFICIENT_DIGITS = {**DIGITS, "analysis": {**DIGITS["analysis"], "tolerance": 2e-3}}
OVER_BUDGET = {**DIGITS, "analysis": {**DIGITS["analysis"], "tolerance": 1e-4}}


def start(args: list[str], values: dict, log: Path) -> subprocess.Popen:
    """``python -m workers`` or ``python -m cli.main reaper`` with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update({f"PLATEAU_{key.upper()}": str(value) for key, value in values.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(check, timeout: float, what: str):  # noqa: ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def job_row(settings: Settings, job_id: uuid.UUID) -> Job:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.get_one(Job, job_id)


@pytest.fixture(scope="module")
def module_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def real_worker(
    pg_migrated, redis_broker, module_receiver, tmp_path_factory
) -> Iterator[Settings]:
    """A worker subprocess with the real engine; its settings."""
    var = tmp_path_factory.mktemp("hooks-e2e") / "var"
    values = {
        "database_url": pg_migrated,
        **redis_broker,
        "var_dir": var,
        "lease_seconds": 10,
        "webhook_allow_private": f"127.0.0.1:{module_receiver.port}",
        "public_base_url": "http://plateau.test:8000",
    }
    log = var.parent / "worker.log"
    worker = start(["workers", "--loglevel", "INFO"], values, log)
    try:
        yield Settings(**values)
    finally:
        stop(worker)
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert not errors, errors


@pytest.fixture(scope="module")
def api(real_worker: Settings) -> Iterator:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.keys import create_key

    with session_scope(real_worker.sqlalchemy_url) as session:
        key = create_key(session, "hooks-e2e")
    with TestClient(create_app(real_worker)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def test_real_jobs_end_with_data_budget_reached_and_exceeded(api, module_receiver):
    webhook = {"url": module_receiver.url, "secret": SECRET}
    reached = api.post(
        "/v1/jobs", json={**SUFFICIENT_DIGITS, "budget": 5000, "webhook": webhook}
    )
    exceeded = api.post(
        "/v1/jobs", json={**OVER_BUDGET, "budget": 1000, "webhook": webhook}
    )
    assert reached.status_code == exceeded.status_code == 202, reached.text

    got = module_receiver.wait_for(4, timeout=150)

    by_job: dict[str, list] = {}
    for delivery in got:
        assert delivery.payload is not None, delivery.error
        by_job.setdefault(delivery.payload["data"]["job_id"], []).append(delivery)
    ids = reached.json()["id"], exceeded.json()["id"]
    events = {job_id: payloads(by_job[job_id]) for job_id in ids}
    assert set(events[ids[0]]) == {"job.succeeded", "data_budget.reached"}
    assert set(events[ids[1]]) == {"job.succeeded", "data_budget.exceeded"}

    good = events[ids[0]]["data_budget.reached"]["data"]
    assert good["sufficient"] is True and good["sufficient_size"] <= 1797
    assert good["sample_size"] == 1797 and good["dataset"]["uri"] == "sklearn:digits"
    assert good["budget"] == {"limit": 5000, "status": "reached"}
    assert good["job_url"] == f"http://plateau.test:8000/v1/jobs/{ids[0]}"
    over = events[ids[1]]["data_budget.exceeded"]["data"]
    assert over["sufficient"] is False and over["budget"]["status"] == "exceeded"
    low, high = over["projected_interval"]
    assert 1000 < low <= over["projected_size"] <= high

    # from the job's end (finished_at) to the receiver, on loopback
    for job_id in ids:
        finished = datetime.fromisoformat(
            api.get(f"/v1/jobs/{job_id}").json()["finished_at"]
        )
        for delivery in by_job[job_id]:
            latency = delivery.received_at - finished.timestamp()
            logger.info("%s %s: %.1f ms", job_id, delivery.type, latency * 1000)
            assert 0 <= latency < 5.0
        rows = api.get(f"/v1/jobs/{job_id}/deliveries").json()
        assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "delivered")] * 2


def test_a_worker_that_dies_between_commit_and_delivery_still_delivers_once(
    pg_migrated, redis_broker, receiver, tmp_path
):
    tag = uuid.uuid4().hex[:8]
    values = {
        "database_url": pg_migrated,
        **redis_broker,
        "queue": f"crash-{tag}",
        "var_dir": tmp_path / "var",
        "webhook_allow_private": f"127.0.0.1:{receiver.port}",
        "webhook_sweep_interval_seconds": 0.2,
        "test_crash_before_delivery": "true",
        **FAKE,
    }
    settings = Settings(**values)
    worker = start(["workers", "--loglevel", "INFO"], values, tmp_path / "worker.log")
    reaper = None
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            tenant = get_or_create_tenant(session, "crash")
            body = {**SUFFICIENT, "webhook": {"url": receiver.url, "secret": SECRET}}
            job_id = jobs.submit(
                session, tenant.id, JobCreate.model_validate(body), queue=settings.queue
            ).job.id
        assert enqueue(settings, job_id, settings.queue)

        # the job's outcome and its events are committed, then the child dies
        wait_until(
            lambda: (
                "dying between the final commit"
                in (tmp_path / "worker.log").read_text()
            ),
            90,
            "the crash",
        )
        assert job_row(settings, job_id).status == "succeeded"
        time.sleep(0.5)
        assert receiver.deliveries == []
        with session_scope(settings.sqlalchemy_url) as session:
            committed = webhooks.events(session, [job_id])
        assert [(e.status, e.attempts) for e in committed] == [("pending", 0)] * 2

        reaper = start(["cli.main", "reaper"], values, tmp_path / "reaper.log")
        got = receiver.wait_for(2, timeout=60)
        time.sleep(1.0)  # five more sweeps: nothing is sent twice
    finally:
        if reaper is not None:
            stop(reaper)
        stop(worker)

    assert len(receiver.deliveries) == 2
    assert sorted(d.type for d in got) == ["data_budget.reached", "job.succeeded"]
    assert {d.webhook_id for d in got} == {e.webhook_id for e in committed}
    with session_scope(settings.sqlalchemy_url) as session:
        rows = webhooks.deliveries(session, job_id)
    assert [(r.attempt, r.outcome) for r in rows] == [(1, "delivered")] * 2
    job = job_row(settings, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)  # not run again
