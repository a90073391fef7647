"""Webhook events without the network: the outbox, the bodies, the schedule.

When a job ends, the same transaction that writes its final state adds one
``webhook_events`` row per event it owes (unique per job and type), so a
crash after the commit loses nothing: the sweeper (``workers/deliver.py``)
finds the row and delivers it. This module decides which events a job owes,
what they say, how they are signed, and what an attempt's outcome does to
its event; ``workers/deliver.py`` makes the attempts.

``data_budget.exceeded`` follows the Result's ``budget.status``, which
compares the point projection with the budget, rather than the lower end of
the projection's interval: the event then says what ``GET /v1/jobs/{id}``
says (one word for one thing), and the interval travels in the body, so a
cautious receiver can act only when ``projected_interval[0] > budget``. The
lower-end rule would send a subset of these events, and a receiver that
wanted the point rule could not get it back.
"""

from __future__ import annotations

import json
import logging
import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from app.core.config import Settings, get_settings
from app.db.models import Job, WebhookAttempt, WebhookEvent, utcnow, webhook_id
from app.db.session import insert_for
from app.schemas import DeliveryPublic

logger = logging.getLogger(__name__)

JOB_EVENTS = {
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
BUDGET_REACHED = "data_budget.reached"
BUDGET_EXCEEDED = "data_budget.exceeded"

USER_AGENT = "Plateau-Webhooks/0.1"


# -- the outbox ----------------------------------------------------------------------


def event_types(job: Job) -> list[str]:
    """The events a job that has ended owes, in the order they are sent."""
    types = [JOB_EVENTS[job.status]]
    result = job.result or {}
    if job.status == "succeeded" and result.get("sufficient"):
        types.append(BUDGET_REACHED)
    elif (result.get("budget") or {}).get("status") == "exceeded":
        types.append(BUDGET_EXCEEDED)
    return types


def record_final_events(
    session: Session, job_ids: Iterable[uuid.UUID], base_url: str | None = None
) -> int:
    """Add the outbox rows of jobs that just ended, in the caller's transaction.

    Call it in the transaction that wrote the final state. Jobs without a
    webhook owe nothing; a row that exists already is kept (unique per job
    and type), so calling it twice adds nothing. Returns the rows added.
    ``base_url`` is the jobs' link prefix (the process's settings when None).
    """
    ids = list(job_ids)
    if not ids:
        return 0
    base_url = base_url or get_settings().job_url_base
    jobs = session.scalars(
        sa.select(Job)
        .where(Job.id.in_(ids), Job.webhook_url.is_not(None))
        .execution_options(populate_existing=True)
    ).all()
    rows = []
    now = utcnow()
    for job in jobs:
        if job.status not in JOB_EVENTS:
            continue
        for order, kind in enumerate(event_types(job)):
            # a microsecond apart, so that job.* goes out before data_budget.*
            made = now + timedelta(microseconds=order)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "job_id": job.id,
                    "tenant_id": job.tenant_id,
                    "type": kind,
                    "url": job.webhook_url,
                    "body": event_body(job, kind, base_url),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": made,
                    "created_at": made,
                }
            )
    if not rows:
        return 0
    statement = insert_for(session, WebhookEvent).values(rows)
    result = session.execute(
        statement.on_conflict_do_nothing(index_elements=["job_id", "type"])
    )
    return max(result.rowcount or 0, 0)


def event_body(job: Job, kind: str, base_url: str) -> str:
    """The JSON an event carries: enough to act on without calling back."""
    result = job.result or {}
    request = job.request or {}
    budget = result.get("budget")
    if budget is None and request.get("budget") is not None:
        budget = {"limit": request["budget"], "status": None}
    finished = job.finished_at or utcnow()
    data: dict[str, Any] = {
        "job_id": str(job.id),
        "job_url": f"{base_url}/{job.id}",
        "status": job.status,
        "dataset": request.get("dataset"),
        "method": (request.get("analysis") or {}).get("method"),
        "tolerance": (request.get("analysis") or {}).get("tolerance"),
        "sample_size": result.get("sample_size"),
        "sufficient": result.get("sufficient"),
        "sufficient_size": result.get("sufficient_size"),
        "projected_size": result.get("projected_size"),
        "projected_interval": result.get("projected_interval"),
        "additional_samples_needed": result.get("additional_samples_needed"),
        "budget": budget,
        "final_delta": result.get("final_delta"),
        "error": (
            {"code": job.error_code, "message": job.error_message or ""}
            if job.error_code
            else None
        ),
        "finished_at": _iso(finished),
    }
    body = {"type": kind, "timestamp": _iso(finished), "data": data}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- one attempt ---------------------------------------------------------------------


@dataclass(frozen=True)
class DueEvent:
    """An event claimed for one attempt, with what that attempt needs."""

    id: uuid.UUID
    job_id: uuid.UUID
    tenant_id: int
    type: str
    url: str
    body: str
    #: this attempt's number (1 for the first)
    attempt: int
    secret: str | None

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.id)


@dataclass
class Outcome:
    """What one attempt got back."""

    status_code: int | None = None
    error: str | None = None
    #: seconds the receiver asked us to wait (``Retry-After`` on 429 or 503)
    retry_after: float | None = None
    #: bytes read from the receiver, headers included
    bytes_read: int = 0
    #: no retry can help (the URL's text is refused, or there is no secret)
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict:
    """Standard Webhooks headers for one attempt: a fresh timestamp and signature."""
    signature = Webhook(secret).sign(message_id, now, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def claim_due(
    session: Session,
    settings: Settings,
    *,
    job_id: uuid.UUID | None = None,
    limit: int = 32,
    first_only: bool = False,
) -> list[DueEvent]:
    """Claim up to ``limit`` due events for one attempt each.

    A claim is one conditional UPDATE that counts the attempt and moves
    ``next_attempt_at`` past the attempt's deadline, so two sweepers never
    send the same event at once; an attempt whose sender died is due again
    once that time has passed.
    """
    now = utcnow()
    due = sa.and_(WebhookEvent.status == "pending", WebhookEvent.next_attempt_at <= now)
    candidates = sa.select(WebhookEvent.id).where(due)
    if job_id is not None:
        candidates = candidates.where(WebhookEvent.job_id == job_id)
    if first_only:
        candidates = candidates.where(WebhookEvent.attempts == 0)
    candidates = candidates.order_by(
        WebhookEvent.next_attempt_at, WebhookEvent.created_at
    ).limit(limit)
    lease = timedelta(seconds=2 * settings.webhook_timeout_seconds + 30)
    statement = (
        sa.update(WebhookEvent)
        .where(WebhookEvent.id.in_(candidates.scalar_subquery()), due)
        .values(attempts=WebhookEvent.attempts + 1, next_attempt_at=now + lease)
        .returning(
            WebhookEvent.id,
            WebhookEvent.job_id,
            WebhookEvent.tenant_id,
            WebhookEvent.type,
            WebhookEvent.url,
            WebhookEvent.body,
            WebhookEvent.attempts,
            WebhookEvent.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(statement).all()
    secrets = dict(
        session.execute(
            sa.select(Job.id, Job.webhook_secret).where(
                Job.id.in_({row.job_id for row in rows})
            )
        ).all()
    )
    rows = sorted(rows, key=lambda row: row.created_at)
    return [
        DueEvent(
            id=row.id,
            job_id=row.job_id,
            tenant_id=row.tenant_id,
            type=row.type,
            url=row.url,
            body=row.body,
            attempt=row.attempts,
            secret=secrets.get(row.job_id),
        )
        for row in rows
    ]


def retry_delay(settings: Settings, attempt: int, outcome: Outcome) -> float | None:
    """Seconds until the next attempt after failed attempt ``attempt``; None: stop."""
    schedule = settings.webhook_retry_schedule
    if outcome.permanent or attempt > len(schedule):
        return None
    if outcome.retry_after is not None:
        return min(outcome.retry_after, settings.webhook_max_retry_after_seconds)
    jitter = settings.webhook_retry_jitter
    return schedule[attempt - 1] * random.uniform(1 - jitter, 1 + jitter)


def record_attempt(
    session: Session,
    settings: Settings,
    event: DueEvent,
    outcome: Outcome,
    *,
    started_at: datetime,
    duration: float,
) -> str:
    """Write the attempt and move its event on; returns the attempt's outcome word.

    2xx: delivered. 410: gone, and so is every other pending event of this
    tenant to the same URL. Otherwise the event waits for the next step of
    the schedule (or for ``Retry-After``), until it runs out of attempts.
    """
    now = utcnow()
    next_at: datetime | None = None
    values: dict[str, Any]
    if outcome.delivered:
        word = "delivered"
        values = {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
    elif outcome.status_code == 410:
        word = "gone"
        values = {"status": "gone", "next_attempt_at": None}
        stopped = session.execute(
            sa.update(WebhookEvent)
            .where(
                WebhookEvent.tenant_id == event.tenant_id,
                WebhookEvent.url == event.url,
                WebhookEvent.status == "pending",
                WebhookEvent.id != event.id,
            )
            .values(status="gone", next_attempt_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if stopped:
            logger.info("410 from %s: %d more events stopped", event.url, stopped)
    else:
        delay = retry_delay(settings, event.attempt, outcome)
        if delay is None:
            word = "failed"
            values = {"status": "failed", "next_attempt_at": None}
        else:
            word = "retrying"
            next_at = now + timedelta(seconds=delay)
            values = {"next_attempt_at": next_at}

    update = sa.update(WebhookEvent).where(WebhookEvent.id == event.id)
    if not outcome.delivered:
        # a 410 to another event of this URL may have stopped this one meanwhile
        update = update.where(WebhookEvent.status == "pending")
    session.execute(
        update.values(**values).execution_options(synchronize_session=False)
    )
    session.add(
        WebhookAttempt(
            event_id=event.id,
            job_id=event.job_id,
            attempt=event.attempt,
            started_at=started_at,
            duration_ms=round(duration * 1000, 3),
            status_code=outcome.status_code,
            error=outcome.error[:2000] if outcome.error else None,
            outcome=word,
            next_attempt_at=next_at,
        )
    )
    return word


# -- reading -------------------------------------------------------------------------


def deliveries(session: Session, job_id: uuid.UUID) -> list[DeliveryPublic]:
    """A job's delivery attempts, oldest first."""
    rows = session.execute(
        sa.select(WebhookAttempt, WebhookEvent.type, WebhookEvent.url)
        .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.event_id)
        .where(WebhookAttempt.job_id == job_id)
        .order_by(WebhookAttempt.started_at, WebhookAttempt.id)
    ).all()
    return [
        DeliveryPublic(
            id=str(attempt.id),
            webhook_id=webhook_id(attempt.event_id),
            event_type=kind,
            url=url,
            attempt=attempt.attempt,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
            outcome=attempt.outcome,  # type: ignore[arg-type]
            next_attempt_at=attempt.next_attempt_at,
            created_at=attempt.started_at,
        )
        for attempt, kind, url in rows
    ]


def events(session: Session, job_ids: Sequence[uuid.UUID]) -> list[WebhookEvent]:
    """The outbox rows of some jobs (for tests and operators)."""
    return list(
        session.scalars(
            sa.select(WebhookEvent)
            .where(WebhookEvent.job_id.in_(job_ids))
            .order_by(WebhookEvent.created_at, WebhookEvent.type)
        )
    )
