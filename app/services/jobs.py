"""Jobs without HTTP: submit (idempotently), list, read, cancel.

Every query here is scoped to one tenant: another tenant's job does not
exist as far as these functions can tell.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.models import CurvePointRow, Job, utcnow
from app.db.session import insert_for
from app.schemas import (
    CurvePointPublic,
    JobCreate,
    JobError,
    JobPublic,
    Progress,
    WebhookPublic,
    finite_or_none,
)
from app.services import webhooks


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different body."""


class InvalidCursor(ValueError):
    """A pagination cursor this service did not make."""


@dataclass
class Submitted:
    job: Job
    #: False when an earlier request with the same Idempotency-Key made the job
    created: bool
    #: the webhook secret the service generated, shown once
    generated_secret: str | None = None


def request_hash(body: JobCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def submit(
    session: Session,
    tenant_id: int,
    body: JobCreate,
    *,
    queue: str,
    idempotency_key: str | None = None,
) -> Submitted:
    """Insert a queued job, or find the one an earlier identical request made.

    With an ``idempotency_key``, the insert is ``ON CONFLICT DO NOTHING`` on
    (tenant, key): of concurrent identical requests exactly one inserts, the
    others wait for its commit and then read its job.
    """
    digest = request_hash(body)
    secret = generated = None
    if body.webhook is not None:
        secret = body.webhook.secret
        if secret is None:
            secret = generated = new_webhook_secret()
    values = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "status": "queued",
        "request": body.analysis_request().model_dump(mode="json"),
        "request_hash": digest,
        "idempotency_key": idempotency_key,
        "queue": queue,
        "progress_fraction": 0.0,
        "attempt": 0,
        "fence": 0,
        "cancel_requested": False,
        "webhook_url": str(body.webhook.url) if body.webhook else None,
        "webhook_secret": secret,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    statement = insert_for(session, Job).values(**values)
    if idempotency_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["tenant_id", "idempotency_key"]
        )
    inserted = session.execute(statement.returning(Job.id)).scalar_one_or_none()
    if inserted is not None:
        return Submitted(session.get_one(Job, inserted), True, generated)

    existing = session.scalars(
        sa.select(Job).where(
            Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key
        )
    ).one()
    if existing.request_hash != digest:
        raise IdempotencyConflict(idempotency_key)
    return Submitted(existing, False)


def get(session: Session, tenant_id: int, job_id: uuid.UUID) -> Job | None:
    return session.scalar(
        sa.select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    )


def page(
    session: Session,
    tenant_id: int,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    """Up to ``limit`` jobs, newest first, after ``cursor``; and the next cursor."""
    query = sa.select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                Job.created_at < created_at,
                sa.and_(Job.created_at == created_at, Job.id < last_id),
            )
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = list(session.scalars(query))
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    return jobs, encode_cursor(jobs[-1])


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id.hex])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, job_id = json.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, uuid.UUID(hex=job_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not one this service returned") from exc


def request_cancel(session: Session, job: Job, *, base_url: str | None = None) -> Job:
    """Cancel a queued job now; flag a running one, which stops between steps.

    The flag is set first and claims require it unset, so a queued job that
    a worker is about to claim is either cancelled or never starts. A job
    cancelled here gets its ``job.cancelled`` webhook event in the caller's
    transaction (``base_url``: the prefix of the job link it carries).
    """
    now = utcnow()
    session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status.in_(("queued", "running")))
        .values(cancel_requested=True, updated_at=now)
    )
    cancelled = session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.status == "queued")
        .values(
            status="cancelled",
            finished_at=now,
            error_code="cancelled",
            error_message="cancelled by the client before it started",
            updated_at=now,
        )
    ).rowcount
    if cancelled:
        webhooks.record_final_events(session, [job.id], base_url)
    session.refresh(job)
    return job


def curve(session: Session, job_id: uuid.UUID) -> list[CurvePointPublic]:
    rows = session.scalars(
        sa.select(CurvePointRow)
        .where(CurvePointRow.job_id == job_id)
        .order_by(CurvePointRow.k)
    )
    return [
        CurvePointPublic(
            k=row.k,
            **finite_or_none(
                {
                    "delta": row.delta,
                    "delta_low": row.delta_low,
                    "delta_high": row.delta_high,
                    "delta_expected": row.delta_expected,
                    "smoothed": row.smoothed,
                }
            ),
        )
        for row in rows
    ]


def to_public(job: Job, *, generated_secret: str | None = None) -> JobPublic:
    error = None
    if job.error_code is not None:
        error = JobError(code=job.error_code, message=job.error_message or "")
    webhook = None
    if job.webhook_url is not None:
        webhook = WebhookPublic(url=job.webhook_url, secret=generated_secret)
    return JobPublic(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=Progress(stage=job.progress_stage, fraction=job.progress_fraction),
        request=job.request,  # type: ignore[arg-type]
        result=job.result,
        error=error,
        attempt=job.attempt,
        webhook=webhook,
    )
