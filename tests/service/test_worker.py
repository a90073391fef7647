"""Claims, fences, the runner and the reaper, in-process with a fake engine."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

import fakes
import pytest
import sqlalchemy as sa
from conftest import DIGITS, FAKE

from app.db.models import CurvePointRow, Job, utcnow
from app.db.session import session_scope
from app.schemas import JobCreate
from app.services import jobs
from app.services.keys import get_or_create_tenant
from workers import claims, reaper, runner


@pytest.fixture
def worker_settings(make_settings, database_url):
    return make_settings(
        database_url=database_url, lease_seconds=30, progress_interval_seconds=0, **FAKE
    )


@pytest.fixture
def queued(worker_settings):
    """Make a queued job (not enqueued); returns its id."""

    def make(body: dict | None = None) -> uuid.UUID:
        with session_scope(worker_settings.sqlalchemy_url) as session:
            tenant = get_or_create_tenant(session, "acme")
            submitted = jobs.submit(
                session,
                tenant.id,
                JobCreate.model_validate(body or DIGITS),
                queue=worker_settings.queue,
            )
            return submitted.job.id

    return make


def row(settings, job_id) -> Job:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.get_one(Job, job_id)


def curve_rows(settings, job_id) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        query = sa.select(sa.func.count()).where(CurvePointRow.job_id == job_id)
        return session.scalar(query)


def expire_lease(settings, job_id) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_job_is_claimed_once_and_every_claim_bumps_attempt_and_fence(
    worker_settings, queued
):
    url, job_id = worker_settings.sqlalchemy_url, queued()

    first = claims.claim(url, job_id, 30)
    second = claims.claim(url, job_id, 30)

    assert first is not None and second is None
    assert (first.attempt, first.fence) == (1, 1)
    job = row(worker_settings, job_id)
    assert job.status == "running" and job.started_at is not None
    assert job.lease_expires_at > utcnow() + timedelta(seconds=25)


def test_a_stale_fence_cannot_write(worker_settings, queued):
    url, job_id = worker_settings.sqlalchemy_url, queued()
    old = claims.claim(url, job_id, 30)
    expire_lease(worker_settings, job_id)
    reaper.reap(worker_settings, send=lambda *args: None)
    new = claims.claim(url, job_id, 30)

    assert new.fence == old.fence + 1
    with pytest.raises(claims.LeaseLost):
        claims.renew(url, old, 30, stage="training", fraction=0.5)
    with pytest.raises(claims.LeaseLost):
        claims.finish(url, old, "succeeded", result={"x": 1})
    assert row(worker_settings, job_id).status == "running"
    assert row(worker_settings, job_id).result is None


def test_the_runner_writes_result_curve_and_progress(worker_settings, queued):
    job_id = queued()

    assert runner.execute(worker_settings, job_id) == "succeeded"

    job = row(worker_settings, job_id)
    assert job.status == "succeeded" and job.finished_at is not None
    assert job.result["projected_size"] == 400
    assert (job.progress_stage, job.progress_fraction) == ("verdict", 1.0)
    assert job.lease_expires_at is None
    assert curve_rows(worker_settings, job_id) == 5
    checkpoint = fakes.calls[-1]["checkpoint"]
    assert checkpoint == worker_settings.checkpoint_dir / f"{job_id}.pt"


def test_a_progress_write_that_fails_does_not_cost_the_attempt(
    worker_settings, queued, monkeypatch
):
    job_id = queued()
    real_renew, failures = claims.renew, []

    def flaky_renew(*args, **kwargs):
        if kwargs.get("stage") == "loading" and not failures:
            failures.append(1)
            raise sa.exc.OperationalError("UPDATE jobs", {}, Exception("gone"))
        return real_renew(*args, **kwargs)

    monkeypatch.setattr(claims, "renew", flaky_renew)

    assert runner.execute(worker_settings, job_id) == "succeeded"
    assert failures == [1]
    job = row(worker_settings, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)


def test_a_replayed_finish_adds_no_curve_rows(worker_settings, queued):
    url, job_id = worker_settings.sqlalchemy_url, queued()
    claim = claims.claim(url, job_id, 30)
    points = [{"k": k, "delta": 1.0, "smoothed": 1.0} for k in (1, 2, 3)]
    with session_scope(url) as session:  # rows of an earlier, lost attempt
        session.add_all(CurvePointRow(job_id=job_id, **p) for p in points[:2])

    claims.finish(url, claim, "succeeded", result={"x": 1}, curve=points)

    assert curve_rows(worker_settings, job_id) == 3


def test_engine_errors_and_crashes_fail_the_job_with_a_reason(worker_settings, queued):
    job_id = queued(DIGITS | {"dataset": {"uri": "fake:boom"}})

    assert runner.execute(worker_settings, job_id) == "failed"

    job = row(worker_settings, job_id)
    assert (job.status, job.error_code) == ("failed", "internal_error")
    assert "boom" in job.error_message


def test_a_cancel_request_stops_a_running_job_between_steps(worker_settings, queued):
    long_job = DIGITS | {"training": {"epochs": 30}}
    job_id = queued(long_job)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(runner.execute(worker_settings, job_id))
    )
    thread.start()
    deadline = time.monotonic() + 20
    while row(worker_settings, job_id).progress_stage != "training":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    with session_scope(worker_settings.sqlalchemy_url) as session:
        jobs.request_cancel(session, session.get_one(Job, job_id))
    thread.join(timeout=20)

    assert outcome == ["cancelled"]
    job = row(worker_settings, job_id)
    assert (job.status, job.error_code) == ("cancelled", "cancelled")
    assert job.progress_fraction < 0.5


def test_the_reaper_requeues_an_expired_lease_then_fails_it_as_worker_lost(
    worker_settings, queued
):
    url, job_id = worker_settings.sqlalchemy_url, queued()
    sent: list[str] = []

    def send(_settings, job, _queue):
        sent.append(job)

    for attempt in range(1, worker_settings.max_attempts + 1):
        claim = claims.claim(url, job_id, 30)
        assert claim is not None and claim.attempt == attempt
        expire_lease(worker_settings, job_id)
        done = reaper.reap(worker_settings, send=send)
        if attempt < worker_settings.max_attempts:
            assert (
                done.requeued == [job_id]
                and row(worker_settings, job_id).status == "queued"
            )
            assert row(worker_settings, job_id).enqueued_at is not None

    job = row(worker_settings, job_id)
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert job.attempt == worker_settings.max_attempts
    assert sent == [str(job_id)] * (worker_settings.max_attempts - 1)


def test_the_reaper_enqueues_a_job_committed_but_never_enqueued(
    make_settings, database_url, queued
):
    settings = make_settings(database_url=database_url, enqueue_grace_seconds=0.01)
    job_id = queued()
    time.sleep(0.05)
    sent: list[str] = []

    done = reaper.reap(settings, send=lambda _s, job, _q: sent.append(job))

    assert sent == [str(job_id)] and done.enqueued == [job_id]
    assert row(settings, job_id).enqueued_at is not None
    assert (
        reaper.reap(settings, send=lambda _s, job, _q: sent.append(job)).enqueued == []
    )


def test_a_job_cancelled_while_its_worker_was_lost_ends_cancelled(
    worker_settings, queued
):
    url, job_id = worker_settings.sqlalchemy_url, queued()
    claims.claim(url, job_id, 30)
    with session_scope(url) as session:
        jobs.request_cancel(session, session.get_one(Job, job_id))
    expire_lease(worker_settings, job_id)

    assert reaper.reap(worker_settings, send=lambda *a: None).cancelled == [job_id]
    assert row(worker_settings, job_id).status == "cancelled"


def test_every_log_line_of_a_job_carries_its_id(worker_settings, queued, caplog):
    from app.core.logging import JobIdFilter

    job_id = queued()
    caplog.handler.addFilter(JobIdFilter())
    with caplog.at_level(logging.INFO):
        runner.execute(worker_settings, job_id)

    lines = [r for r in caplog.records if r.name.startswith("workers")]
    assert lines and all(r.job_id == str(job_id) for r in lines)
