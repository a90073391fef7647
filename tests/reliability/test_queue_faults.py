"""Queue faults (RELIABILITY.md tests 1-8) with real workers, Redis and PostgreSQL.

Workers are ``python -m workers`` subprocesses running the fake engine of
``slow_engine``, which logs every step it takes; the reaper is ``plateau
reaper``. Leases are 3 s and the reaper runs every 0.5 s (settings, not code).
The figures each test measured go to the figures file (``harness.FIGURES``).
Test 7 is ``tests/service/test_idempotency.py`` and ``test_api_pressure.py``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from harness import RedisServer, events, of_job, record, unavailable, wait_until
from slow_engine import CURVE_POINTS

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}


def running_step(service, job_id: str, kind: str = "train", at_least: int = 3):
    """Wait until the job's engine has taken ``at_least`` steps of ``kind``."""
    return wait_until(
        lambda: len(of_job(events(service.events), job_id, kind)) >= at_least,
        60,
        f"job {job_id} to take {at_least} {kind} steps",
    )


def pid_running(service, job_id: str) -> int:
    return of_job(events(service.events), job_id, "start")[-1]["pid"]


def owner(workers, pid: int):
    return next(w for w in workers if pid in w.children())


def test_1_a_killed_worker_child_is_requeued_and_the_job_finishes_once(service):
    worker = service.worker()
    service.reaper()
    job_id = service.submit("fake:train=40,measure=10,step=0.05")
    running_step(service, job_id)

    killed, killed_at = time.monotonic(), time.time()
    for child in worker.children():
        os.kill(child, signal.SIGKILL)
    row = service.wait_status(job_id, FINAL, timeout=90)
    recovery = time.monotonic() - killed
    restarted = of_job(events(service.events), job_id, "start")[-1]["t"] - killed_at

    assert row.status == "succeeded", row.error_message
    assert row.attempt >= 2
    done = of_job(events(service.events), job_id, "done")
    assert len(done) == 1, "the job finished more than once"
    rows = service.curve_rows(job_id)
    assert rows == CURVE_POINTS
    record(
        "1",
        recovery_seconds=round(recovery, 2),
        seconds_to_second_attempt=round(restarted, 2),
        duplicate_curve_rows=rows - CURVE_POINTS,
        times_finished=len(done),
        attempts=row.attempt,
    )


def test_2_a_killed_worker_is_replaced_and_the_reaper_requeues_its_job(service):
    first = service.worker()
    service.reaper()
    job_id = service.submit("fake:train=40,measure=10,step=0.05")
    running_step(service, job_id)

    killed, killed_at = time.monotonic(), time.time()
    first.kill_group()
    replacement = service.worker()
    started = time.monotonic() - killed
    row = service.wait_status(job_id, FINAL, timeout=90)
    recovery = time.monotonic() - killed
    restarted = of_job(events(service.events), job_id, "start")[-1]["t"] - killed_at

    assert row.status == "succeeded", row.error_message
    assert row.attempt >= 2
    assert pid_running(service, job_id) in replacement.children()
    assert len(of_job(events(service.events), job_id, "done")) == 1
    assert service.curve_rows(job_id) == CURVE_POINTS
    record(
        "2",
        recovery_seconds=round(recovery, 2),
        seconds_to_second_attempt=round(restarted, 2),
        new_worker_start_seconds=round(started, 2),
        attempts=row.attempt,
    )


def test_3_a_redelivered_message_is_refused_by_the_claim(service):
    import redis

    first = service.worker()
    job_id = service.submit("fake:train=30,measure=30,step=0.05")
    running_step(service, job_id)

    # The job has now run "longer than the visibility timeout": age the
    # delivery in Redis's unacked index, as the passing of that timeout would.
    # A worker sweeps the index when it starts, so the second one redelivers it.
    prefix = service.values["broker_key_prefix"]
    client = redis.Redis.from_url(service.values["broker_url"])
    try:
        tags = client.zrange(f"{prefix}unacked_index", 0, -1)
        assert len(tags) == 1, tags
        client.zadd(f"{prefix}unacked_index", {tags[0]: 1.0})
        second = service.worker()
        redelivered = wait_until(
            lambda: "not claimable" in second.text(), 60, "the redelivered message"
        )
    finally:
        client.close()
    row = service.wait_status(job_id, FINAL, timeout=60)

    assert redelivered
    assert row.status == "succeeded" and row.attempt == 1
    started = of_job(events(service.events), job_id, "start")
    assert len(started) == 1
    assert started[0]["pid"] in first.children()
    record(
        "3",
        deliveries=2,
        executions=len(started),
        refused_claims=second.text().count("not claimable"),
    )


def test_4_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    service,
):
    worker = service.worker()
    service.reaper()
    job_id = service.submit("fake:crash")

    row = service.wait_status(job_id, FINAL, timeout=120)

    assert row.status == "failed"
    assert row.error_code == "worker_lost"
    assert row.attempt == service.settings.max_attempts == 3
    crashes = of_job(events(service.events), job_id, "crash")
    assert len(crashes) == 3
    assert worker.alive(), "the worker itself must survive its children"
    record(
        "4",
        attempts=row.attempt,
        crashes=len(crashes),
        final_status=row.status,
        error_code=row.error_code,
        deliveries="covered by tests/webhooks (in progress)",
    )


def test_5_restarting_and_flushing_redis_loses_no_job_and_runs_none_twice(
    make_service, db, tmp_path
):
    import redis

    server = RedisServer(tmp_path)
    try:
        server.start()
    except RuntimeError as exc:  # no redis-server on this machine
        unavailable("a private redis-server", exc)
    try:
        service = make_service(
            database_url=db,
            broker_url=server.url,
            broker_key_prefix="",
            # a queued job not claimed after this is sent again (lost message)
            requeue_after_seconds=4,
        )
        service.worker()
        service.reaper()

        # restart Redis (no persistence: its queues are gone) mid-job
        long = service.submit("fake:train=20,measure=60,step=0.05")
        running_step(service, long, "measure")
        waiting = [service.submit("fake:train=2,measure=2,step=0.05") for _ in range(3)]
        server.stop()
        time.sleep(1.0)
        server.start()

        # flush Redis with jobs queued behind a busy worker
        busy = service.submit("fake:train=20,measure=40,step=0.05")
        running_step(service, busy, "train", at_least=1)
        queued = [service.submit("fake:train=2,measure=2,step=0.05") for _ in range(4)]
        client = redis.Redis.from_url(server.url)
        try:
            client.flushdb()
        finally:
            client.close()

        jobs = [long, *waiting, busy, *queued]
        rows = [service.wait_status(job, FINAL, timeout=150) for job in jobs]
    finally:
        server.stop()

    found = events(service.events)
    finished = [row for row in rows if row.status == "succeeded"]
    runs = {job: of_job(found, job, "done") for job in jobs}
    assert len(finished) == len(jobs), [(r.status, r.error_message) for r in rows]
    assert all(len(done) == 1 for done in runs.values()), runs
    overlapping = [job for job in jobs if _ran_in_parallel(found, job)]
    assert overlapping == []
    record(
        "5",
        jobs_recovered=len(finished),
        jobs_queued=len(jobs),
        jobs_run_twice_in_parallel=len(overlapping),
        longest_wait_seconds=round(
            max((r.started_at - r.created_at).total_seconds() for r in rows), 2
        ),
    )


def _ran_in_parallel(found: list[dict], job: str) -> bool:
    """Whether two attempts at ``job`` were taking steps at the same time."""
    spans: dict[int, list[float]] = {}
    for event in found:
        if event["job"] == job:
            spans.setdefault(event["pid"], []).append(event["t"])
    ordered = sorted((min(t), max(t)) for t in spans.values())
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:], strict=False))


def test_6_a_worker_stopped_with_sigterm_hands_its_job_on_with_the_checkpoint(
    service,
):
    # the worker gets SIGTERM (warm shutdown), and is killed after a grace
    # period, as Docker or Kubernetes do; the job outlives the grace period
    grace = 1.0
    workers = [service.worker(), service.worker()]
    service.reaper()
    job_id = service.submit("fake:train=30,measure=80,step=0.05")
    running_step(service, job_id, "measure", at_least=5)
    stopped = owner(workers, pid_running(service, job_id))
    other = next(w for w in workers if w is not stopped)

    stopped.signal(signal.SIGTERM)
    time.sleep(grace)
    stopped.kill_group()
    row = service.wait_status(job_id, FINAL, timeout=90)

    assert row.status == "succeeded", row.error_message
    assert row.attempt >= 2
    found = events(service.events)
    starts = of_job(found, job_id, "start")
    assert [s["restored"] for s in starts] == [False] + [True] * (len(starts) - 1)
    assert starts[-1]["pid"] in other.children()
    later = {s["pid"] for s in starts[1:]}
    trained_again = sum(
        e["event"] == "train" and e["pid"] in later for e in found if e["job"] == job_id
    )
    measured_first = sum(
        e["event"] == "measure" and e["pid"] == starts[0]["pid"]
        for e in found
        if e["job"] == job_id
    )
    assert trained_again == 0
    record(
        "6",
        training_steps_redone=trained_again,
        training_steps=30,
        measuring_steps_redone=measured_first,
        seconds_redone=round(measured_first * 0.05, 2),
        grace_seconds=grace,
    )


def test_8_a_frozen_worker_that_lost_its_lease_writes_nothing_when_thawed(service):
    workers = [service.worker(), service.worker()]
    service.reaper()
    job_id = service.submit("fake:train=40,measure=10,step=0.05")
    running_step(service, job_id)
    frozen_pid = pid_running(service, job_id)
    frozen = owner(workers, frozen_pid)

    os.kill(frozen_pid, signal.SIGSTOP)
    try:
        row = service.wait_status(job_id, FINAL, timeout=90)
        before = _snapshot(service, job_id)
    finally:
        os.kill(frozen_pid, signal.SIGCONT)
    stopped = wait_until(
        lambda: [
            e
            for e in of_job(events(service.events), job_id, "stopped")
            if e["pid"] == frozen_pid
        ],
        30,
        "the thawed attempt to stop",
    )
    time.sleep(1.0)  # let anything it might still write land
    after = _snapshot(service, job_id)

    assert row.status == "succeeded" and row.attempt >= 2
    assert stopped[0]["reason"] == "LeaseLost"
    assert before == after, "a stale attempt changed the job"
    assert "nothing written" in frozen.text()
    done = of_job(events(service.events), job_id, "done")
    assert [e["pid"] for e in done] != [frozen_pid]
    record("8", stale_writes_accepted=0, attempts=row.attempt)


def _snapshot(service, job_id: str) -> tuple:
    row = service.row(job_id)
    return (
        row.status,
        row.attempt,
        row.fence,
        row.progress_stage,
        row.progress_fraction,
        row.updated_at,
        row.finished_at,
        row.result,
        service.curve_rows(job_id),
    )
