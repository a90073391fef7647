"""End to end on PostgreSQL and Redis with a real ``celery worker`` subprocess.

The API runs in-process (TestClient); the worker is ``python -m workers``,
the same code ``plateau worker`` runs, with the real engine on sklearn:digits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import DIGITS, REPO

from app.core.config import Settings
from app.db.models import CurvePointRow, Job
from app.db.session import session_scope
from workers.reaper import run_forever

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(pg_migrated, redis_broker, tmp_path_factory) -> Iterator[Settings]:
    """Settings shared by the in-process API and a worker subprocess."""
    var = tmp_path_factory.mktemp("e2e") / "var"
    values = {
        "database_url": pg_migrated,
        **redis_broker,
        "var_dir": str(var),
        "lease_seconds": "4",
        "progress_interval_seconds": "0.2",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update({f"PLATEAU_{key.upper()}": str(value) for key, value in values.items()})
    log = (var.parent / "worker.log").open("w")
    worker = Worker(
        subprocess.Popen(
            [sys.executable, "-m", "workers", "--loglevel", "INFO"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
        Path(log.name),
    )
    try:
        yield Settings(**values), worker
    finally:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        log.close()
    errors = [line for line in worker.log.read_text().splitlines() if "ERROR" in line]
    # the only error allowed is the child this module kills on purpose
    assert all("WorkerLostError" in line or "SIGKILL" in line for line in errors), (
        errors
    )


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]


@pytest.fixture(scope="module")
def api(service) -> Iterator:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.keys import create_key

    settings, _worker = service
    with session_scope(settings.sqlalchemy_url) as session:
        key = create_key(session, "e2e")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def wait_for(api, job_id: str, statuses: set[str], timeout: float = 90) -> list[dict]:
    """Poll the job until its status is in ``statuses``; every state seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        seen.append(job)
        if job["status"] in statuses:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {seen[-1]['status']} after {timeout} s")


def test_digits_runs_through_the_worker_to_a_result_and_curve(api, service):
    settings, _worker = service
    response = api.post("/v1/jobs", json=DIGITS, headers={"Idempotency-Key": "digits"})
    assert response.status_code == 202
    job_id = response.json()["id"]

    seen = wait_for(api, job_id, {"succeeded", "failed", "cancelled"})

    job = seen[-1]
    assert job["status"] == "succeeded", job["error"]
    assert "running" in [s["status"] for s in seen]
    stages = [s["progress"]["stage"] for s in seen if s["status"] == "running"]
    assert any(stages), "progress never moved while the job ran"
    result = job["result"]
    assert result["sample_size"] == 1797 and result["method"] == "point"
    assert result["train"]["epochs"] == 2
    assert isinstance(result["sufficient"], bool)
    assert job["started_at"] >= job["created_at"] and job["finished_at"]

    points = api.get(f"/v1/jobs/{job_id}/curve").json()["points"]
    assert points and [p["k"] for p in points] == sorted(p["k"] for p in points)
    assert api.get(f"/v1/jobs/{job_id}/curve.png").content.startswith(b"\x89PNG")
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get_one(Job, job_id)
        count = session.scalar(
            sa.select(sa.func.count()).where(CurvePointRow.job_id == row.id)
        )
    assert (row.status, row.attempt, row.fence) == ("succeeded", 1, 1)
    assert count == len(points)
    assert not (settings.checkpoint_dir / f"{job_id}.pt").exists()


def test_cancelling_a_queued_and_a_running_job(api):
    long = {**DIGITS, "training": {**DIGITS["training"], "epochs": 400}}
    running_id = api.post("/v1/jobs", json=long).json()["id"]
    seen = wait_for(api, running_id, {"running"}, timeout=60)
    while seen[-1]["progress"]["stage"] != "training":
        seen = wait_for(api, running_id, {"running"})
    # the only worker is busy: this one waits in the queue
    queued_id = api.post("/v1/jobs", json=DIGITS).json()["id"]

    queued = api.post(f"/v1/jobs/{queued_id}/cancel")
    running = api.post(f"/v1/jobs/{running_id}/cancel")

    assert queued.json()["status"] == "cancelled"
    assert running.json()["status"] == "running"
    ended = wait_for(api, running_id, {"succeeded", "failed", "cancelled"}, timeout=30)
    assert ended[-1]["status"] == "cancelled"
    assert ended[-1]["error"]["code"] == "cancelled"
    assert ended[-1]["progress"]["fraction"] < 1.0
    # the worker then takes the cancelled job's message and refuses it
    time.sleep(1.0)
    never = api.get(f"/v1/jobs/{queued_id}").json()
    assert never["status"] == "cancelled" and never["started_at"] is None
    assert never["attempt"] == 0


def test_a_job_whose_worker_child_is_killed_is_requeued_and_finishes_once(api, service):
    settings, worker = service
    long = {**DIGITS, "training": {**DIGITS["training"], "epochs": 60}}
    job_id = api.post("/v1/jobs", json=long).json()["id"]
    seen = wait_for(api, job_id, {"running"}, timeout=60)
    while seen[-1]["progress"]["stage"] != "training":
        seen = wait_for(api, job_id, {"running"})
    stop = threading.Event()
    reaper = threading.Thread(
        target=run_forever,
        args=(settings.model_copy(update={"reaper_interval_seconds": 0.5}), stop),
    )
    reaper.start()
    try:
        killed = time.monotonic()
        for child in worker.children():
            os.kill(child, signal.SIGKILL)

        ended = wait_for(api, job_id, {"succeeded", "failed", "cancelled"}, timeout=90)
        recovered = time.monotonic() - killed
    finally:
        stop.set()
        reaper.join()

    job = ended[-1]
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    assert recovered < 60
    points = api.get(f"/v1/jobs/{job_id}/curve").json()["points"]
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalar(
            sa.select(sa.func.count()).where(CurvePointRow.job_id == uuid.UUID(job_id))
        )
    assert rows == len(points)
