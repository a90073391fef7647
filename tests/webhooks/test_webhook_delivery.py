"""The outbox and the sweeper, in-process: a job ends, its receiver hears of it.

The engine is the fake in ``hookfakes``; the receiver is a real HTTP server
on loopback that verifies every delivery with the ``standardwebhooks``
library.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hookkit import REQUEST, SUFFICIENT, payloads, status

from app.db.models import Job, WebhookEvent, utcnow
from app.db.session import session_scope
from app.services import jobs, webhooks
from workers import claims, deliver, reaper, runner


def outbox(settings, job_id: uuid.UUID) -> list[WebhookEvent]:
    with session_scope(settings.sqlalchemy_url) as session:
        return webhooks.events(session, [job_id])


def attempts(settings, job_id: uuid.UUID) -> list:
    with session_scope(settings.sqlalchemy_url) as session:
        return webhooks.deliveries(session, job_id)


@contextmanager
def sweeper(settings, interval: float = 0.02) -> Iterator[None]:
    """The sweeper's loop in a thread, for the length of the block."""
    stop = threading.Event()
    thread = threading.Thread(
        target=deliver.run_forever,
        args=(
            settings.model_copy(update={"webhook_sweep_interval_seconds": interval}),
            stop,
        ),
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


# -- which events, and what they say ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (SUFFICIENT, ["job.succeeded", "data_budget.reached"]),
        ({**SUFFICIENT, "budget": 50}, ["job.succeeded", "data_budget.reached"]),
        ({**REQUEST, "budget": 350}, ["job.succeeded", "data_budget.exceeded"]),
        ({**REQUEST, "budget": 1000}, ["job.succeeded"]),
        (REQUEST, ["job.succeeded"]),
        ({**REQUEST, "dataset": {"uri": "fake:boom"}}, ["job.failed"]),
    ],
    ids=["sufficient", "sufficient-budget", "exceeded", "within", "no-budget", "fails"],
)
def test_a_finished_job_sends_its_events_once_signed_right_after_its_commit(
    hook_settings, receiver, submit, body, expected
):
    job_id = submit(body)

    runner.execute(hook_settings, job_id)

    # the worker made the first attempts itself: no sweeper ran
    got = receiver.wait_for(len(expected), timeout=10)
    assert [d.type for d in got] == expected
    assert len({d.webhook_id for d in got}) == len(expected)
    events = outbox(hook_settings, job_id)
    assert {e.type: e.status for e in events} == dict.fromkeys(expected, "delivered")
    assert {e.webhook_id for e in events} == {d.webhook_id for d in got}
    for delivery in got:
        assert delivery.headers["webhook-signature"].startswith("v1,")
        assert delivery.payload["data"]["job_id"] == str(job_id)


def test_an_event_body_carries_what_a_pipeline_needs_to_act(
    hook_settings, receiver, submit
):
    job_id = submit({**REQUEST, "budget": 350, "dataset": {"uri": "sklearn:digits"}})
    runner.execute(hook_settings, job_id)

    event = payloads(receiver.wait_for(2))["data_budget.exceeded"]

    with session_scope(hook_settings.sqlalchemy_url) as session:
        finished_at = session.get_one(Job, job_id).finished_at
    assert event["type"] == "data_budget.exceeded"
    assert event["timestamp"] == finished_at.isoformat().replace("+00:00", "Z")
    data = event["data"]
    assert data["job_id"] == str(job_id)
    assert data["job_url"] == f"https://plateau.example.org/v1/jobs/{job_id}"
    assert data["dataset"]["uri"] == "sklearn:digits"
    assert data["status"] == "succeeded"
    assert (data["sample_size"], data["sufficient"]) == (100, False)
    assert (data["projected_size"], data["projected_interval"]) == (400, [300, 600])
    assert data["additional_samples_needed"] == 300
    assert data["budget"] == {"limit": 350, "status": "exceeded"}
    assert data["error"] is None


def test_the_deliveries_route_lists_every_attempt_and_hides_other_tenants_jobs(
    hook_settings, receiver, submit
):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.keys import create_key

    job_id = submit(SUFFICIENT, tenant="acme")
    runner.execute(hook_settings, job_id)
    receiver.wait_for(2)
    with session_scope(hook_settings.sqlalchemy_url) as session:
        mine, theirs = create_key(session, "acme"), create_key(session, "other")

    with TestClient(create_app(hook_settings)) as client:
        listed = client.get(
            f"/v1/jobs/{job_id}/deliveries", headers={"Authorization": f"Bearer {mine}"}
        )
        hidden = client.get(
            f"/v1/jobs/{job_id}/deliveries",
            headers={"Authorization": f"Bearer {theirs}"},
        )

    assert listed.status_code == 200 and hidden.status_code == 404
    rows = listed.json()
    assert [r["event_type"] for r in rows] == ["job.succeeded", "data_budget.reached"]
    for row in rows:
        assert (row["attempt"], row["status_code"], row["outcome"]) == (
            1,
            204,
            "delivered",
        )
        assert row["error"] is None and row["duration_ms"] > 0
        assert row["webhook_id"].startswith("msg_") and row["url"] == receiver.url


def test_cancelling_a_queued_job_owes_a_job_cancelled_event(
    hook_settings, receiver, submit
):
    job_id = submit()
    with session_scope(hook_settings.sqlalchemy_url) as session:
        jobs.request_cancel(
            session, session.get_one(Job, job_id), base_url=hook_settings.job_url_base
        )

    with sweeper(hook_settings):
        got = receiver.wait_for(1)

    assert [d.type for d in got] == ["job.cancelled"]
    assert got[0].payload["data"]["error"]["code"] == "cancelled"


def test_a_job_the_reaper_fails_owes_a_job_failed_event(
    hook_settings, receiver, submit
):
    settings = hook_settings.model_copy(update={"max_attempts": 1})
    job_id = submit()
    claims.claim(settings.sqlalchemy_url, job_id, 30)
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )

    assert reaper.reap(settings, send=lambda *a: None).failed == [job_id]
    with sweeper(settings):
        got = receiver.wait_for(1)

    assert got[0].payload["data"]["error"]["code"] == "worker_lost"


def test_a_job_without_a_webhook_owes_nothing(hook_settings, submit, receiver):
    with session_scope(hook_settings.sqlalchemy_url) as session:
        from app.schemas import JobCreate
        from app.services.keys import get_or_create_tenant

        tenant = get_or_create_tenant(session, "acme")
        job_id = jobs.submit(
            session, tenant.id, JobCreate.model_validate(REQUEST), queue="q"
        ).job.id

    runner.execute(hook_settings, job_id)

    assert outbox(hook_settings, job_id) == [] and receiver.deliveries == []


# -- crash between commit and delivery -----------------------------------------------


def test_events_committed_by_a_worker_that_died_are_delivered_once_by_the_sweeper(
    hook_settings, receiver, submit
):
    # what a worker that dies right after its final commit leaves behind:
    # the outcome and the outbox rows, and no attempt
    url, job_id = hook_settings.sqlalchemy_url, submit(SUFFICIENT)
    claim = claims.claim(url, job_id, 30)
    claims.finish(
        url,
        claim,
        "succeeded",
        result={"sufficient": True},
        base_url=hook_settings.job_url_base,
    )
    assert [e.attempts for e in outbox(hook_settings, job_id)] == [0, 0]

    with sweeper(hook_settings):
        got = receiver.wait_for(2)
        time.sleep(0.3)  # several more passes: nothing is sent twice

    assert len(receiver.deliveries) == 2
    assert sorted(d.type for d in got) == ["data_budget.reached", "job.succeeded"]
    assert deliver.sweep(hook_settings) == 0
    # the finish cannot be replayed into a second set of events
    assert len(outbox(hook_settings, job_id)) == 2


# -- retries ---------------------------------------------------------------------------


def test_500_500_200_is_retried_on_schedule_with_one_id_and_fresh_signatures(
    hook_settings, receiver, submit
):
    settings = hook_settings.model_copy(update={"webhook_retry_schedule": (1.1, 1.1)})
    receiver.script = [status(500), status(500), status(200)]
    job_id = submit()

    runner.execute(settings, job_id)  # the first attempt: 500
    with sweeper(settings):
        got = receiver.wait_for(3, timeout=20)

    assert all(d.payload is not None for d in got), [d.error for d in got]
    assert len({d.webhook_id for d in got}) == 1
    assert len({d.headers["webhook-timestamp"] for d in got}) == 3
    assert len({d.headers["webhook-signature"] for d in got}) == 3
    assert len({d.body for d in got}) == 1
    gaps = [b.received_at - a.received_at for a, b in zip(got, got[1:], strict=False)]
    assert all(1.1 <= gap < 1.1 + 2.0 for gap in gaps), gaps
    rows = attempts(settings, job_id)
    assert [(r.attempt, r.status_code, r.outcome) for r in rows] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "delivered"),
    ]
    assert rows[0].next_attempt_at is not None and rows[2].next_attempt_at is None


def test_an_event_that_never_gets_a_2xx_fails_after_the_last_retry(
    hook_settings, receiver, submit
):
    receiver.default = status(503)
    job_id = submit()

    runner.execute(hook_settings, job_id)
    with sweeper(hook_settings):
        receiver.wait_for(3)
        time.sleep(0.4)

    assert len(receiver.deliveries) == 3  # the schedule has two retries
    assert [r.outcome for r in attempts(hook_settings, job_id)] == [
        "retrying",
        "retrying",
        "failed",
    ]
    assert outbox(hook_settings, job_id)[0].status == "failed"


def test_a_429_waits_for_its_retry_after(hook_settings, receiver, submit):
    receiver.script = [status(429, Retry_After="2")]
    job_id = submit()

    runner.execute(hook_settings, job_id)
    with sweeper(hook_settings):
        got = receiver.wait_for(2, timeout=15)

    gap = got[1].received_at - got[0].received_at
    assert 2.0 <= gap < 2.0 + 2.0, gap  # the schedule alone would wait 0.1 s
    first = attempts(hook_settings, job_id)[0]
    assert (first.status_code, first.outcome) == (429, "retrying")
    waited = (first.next_attempt_at - first.created_at).total_seconds()
    assert 1.9 <= waited <= 2.5


def test_a_410_stops_every_pending_event_for_that_url(hook_settings, receiver, submit):
    # job one's event fails once and waits; job two's event gets a 410
    receiver.script = [status(500), status(410)]
    settings = hook_settings.model_copy(update={"webhook_retry_schedule": (1.0, 1.0)})
    first, second = submit(), submit(SUFFICIENT)

    runner.execute(settings, first)
    runner.execute(settings, second)
    with sweeper(settings):
        time.sleep(1.6)  # past the moment job one's retry was due

    assert len(receiver.deliveries) == 2
    assert [e.status for e in outbox(settings, first)] == ["gone"]
    assert [e.status for e in outbox(settings, second)] == ["gone", "gone"]
    assert [r.outcome for r in attempts(settings, second)] == ["gone"]


def test_a_redirect_is_not_followed_even_to_a_forbidden_address(
    hook_settings, receiver, trap, submit
):
    receiver.script = [status(302, Location=f"http://127.0.0.1:{trap.port}/steal")]
    job_id = submit()

    runner.execute(hook_settings, job_id)

    row = attempts(hook_settings, job_id)[0]
    assert (row.status_code, row.outcome) == (302, "retrying")
    assert "redirects are not followed" in row.error
    time.sleep(0.2)
    assert trap.connections == 0 and len(receiver.deliveries) == 1
