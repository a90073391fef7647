"""The service a reliability test runs: settings, its processes, its jobs.

A ``Service`` holds the settings a test shares with the processes it starts
(workers, reaper, API), passes them as ``PLATEAU_*`` variables, reads jobs
back from the database, and stops every process at the end.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from harness import (
    Process,
    service_env,
    start_api,
    start_reaper,
    start_worker,
    wait_until,
)

from app.core.config import Settings
from app.db.models import CurvePointRow, Job
from app.db.session import session_scope
from app.services.keys import create_key

#: the fast fake engine, and leases a test can watch expire
FAST = {
    "analyze_function": "slow_engine:analyze",
    "validate_function": "slow_engine:validate",
    "lease_seconds": 3,
    "reaper_interval_seconds": 0.5,
    "progress_interval_seconds": 0.1,
    "enqueue_grace_seconds": 1,
    "log_level": "INFO",
}


# -- a service made of processes ----------------------------------------------------


class Service:
    """Settings shared by a test and the processes it starts; stops them all."""

    def __init__(self, folder: Path, values: dict[str, Any]) -> None:
        self.folder = folder
        self.events = folder / "events"
        self.events.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        self.values: dict[str, Any] = {
            **FAST,
            "var_dir": str(folder / "var"),
            "data_dir": str(folder / "data"),
            "queue": f"plateau-{tag}",
            "gpu_queue": f"gpu-{tag}",
            **values,
        }
        if self.values.get("broker_key_prefix"):
            # one prefix per service: leftovers of a killed worker stay apart
            self.values["broker_key_prefix"] += f"{tag}:"
        (folder / "data").mkdir(exist_ok=True)
        self.processes: list[Process] = []
        self.settings = Settings(**self.values)
        self.url = self.settings.sqlalchemy_url

    def env(self, **overrides: Any) -> dict[str, str]:
        values = {**self.values, **overrides}
        return service_env(values, RELIABILITY_EVENTS=str(self.events))

    def _log(self, name: str) -> Path:
        return self.folder / f"{name}-{len(self.processes)}.log"

    def worker(self, concurrency: int = 1, **overrides: Any) -> Process:
        process = start_worker(self.env(**overrides), self._log("worker"), concurrency)
        self.processes.append(process)
        return process

    def reaper(self, **overrides: Any) -> Process:
        process = start_reaper(self.env(**overrides), self._log("reaper"))
        self.processes.append(process)
        return process

    def api(self, processes: int = 1, **overrides: Any) -> Process:
        process = start_api(self.env(**overrides), self._log("api"), processes)
        self.processes.append(process)
        return process

    def key(self, tenant: str = "acme") -> str:
        with session_scope(self.url) as session:
            return create_key(session, tenant)

    def submit(self, uri: str, **body: Any) -> str:
        """Submit through the API code in this process (enqueued after commit)."""
        from fastapi.testclient import TestClient

        from app.main import create_app

        if not hasattr(self, "_client"):
            self._client = TestClient(create_app(self.settings))
            self._client.headers["Authorization"] = f"Bearer {self.key()}"
        response = self._client.post("/v1/jobs", json={"dataset": {"uri": uri}, **body})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def row(self, job_id: str) -> Job:
        with session_scope(self.url) as session:
            return session.get_one(Job, uuid.UUID(job_id))

    def curve_rows(self, job_id: str) -> int:
        with session_scope(self.url) as session:
            query = sa.select(sa.func.count()).where(
                CurvePointRow.job_id == uuid.UUID(job_id)
            )
            return session.scalar(query)

    def wait_status(self, job_id: str, statuses: set[str], timeout: float) -> Job:
        def reached() -> Job | None:
            try:
                row = self.row(job_id)
            except sa.exc.OperationalError:
                return None  # the database is being faulted
            return row if row.status in statuses else None

        return wait_until(reached, timeout, f"job {job_id} to reach {statuses}", 0.1)

    def close(self) -> None:
        if hasattr(self, "_client"):
            self._client.close()
        # the test is over: no warm shutdown needed, kill whole process groups
        for process in reversed(self.processes):
            process.stop(grace=0)


def seed_jobs(url: str, tenant: str) -> dict[str, str]:
    """A job in every status for ``tenant``; their ids by status."""
    from slow_engine import curve, result_for

    from app.schemas import JobCreate
    from app.services import jobs
    from app.services.keys import get_or_create_tenant
    from workers import claims

    body = JobCreate.model_validate({"dataset": {"uri": "sklearn:digits"}})
    ids: dict[str, str] = {}
    with session_scope(url) as session:
        owner = get_or_create_tenant(session, tenant).id
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            job = jobs.submit(session, owner, body, queue="nowhere").job
            ids[status] = str(job.id)
    for status, job_id in ids.items():
        if status in ("running", "succeeded", "failed"):
            claim = claims.claim(url, uuid.UUID(job_id), lease_seconds=3600)
            assert claim is not None
            if status == "succeeded":
                request = body.analysis_request()
                result = result_for(request).model_dump(mode="json")
                points = [point.model_dump() for point in curve()]
                claims.finish(url, claim, "succeeded", result=result, curve=points)
            elif status == "failed":
                claims.finish(url, claim, "failed", error=("bad_data", "seeded"))
    with session_scope(url) as session:
        cancelled = jobs.get(session, owner, uuid.UUID(ids["cancelled"]))
        jobs.request_cancel(session, cancelled)
    return ids
