"""Claims, leases and fenced writes: how one attempt owns a job.

A claim is one conditional ``UPDATE ... RETURNING`` that moves a queued job
to running, bumps its attempt and fence, and sets a lease. Every later write
of that attempt names the fence it got; once the reaper or another claim has
moved the fence on, those writes match no row and the attempt stops.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from app.db.models import CurvePointRow, Job, utcnow
from app.db.session import insert_for, session_scope
from app.schemas import finite_or_none
from app.services import webhooks


class LeaseLost(Exception):
    """This attempt's fence is stale: another attempt or the reaper owns the job."""


@dataclass(frozen=True)
class Claim:
    """What a successful claim returns: the attempt's fence and the request."""

    job_id: uuid.UUID
    fence: int
    attempt: int
    request: dict[str, Any]
    #: seconds the job waited between submission and this claim
    queued_seconds: float


def claim(url: str, job_id: uuid.UUID, lease_seconds: float) -> Claim | None:
    """Claim a queued, uncancelled job; None when it is not claimable now."""
    now = utcnow()
    statement = (
        sa.update(Job)
        .where(
            Job.id == job_id,
            Job.status == "queued",
            Job.cancel_requested.is_(False),
        )
        .values(
            status="running",
            attempt=Job.attempt + 1,
            fence=Job.fence + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=sa.func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .returning(Job.fence, Job.attempt, Job.request, Job.created_at)
        .execution_options(synchronize_session=False)
    )
    with session_scope(url) as session:
        row = session.execute(statement).one_or_none()
    if row is None:
        return None
    fence, attempt, request, created_at = row
    waited = (now - created_at).total_seconds()
    return Claim(job_id, fence, attempt, request, waited)


def renew(
    url: str,
    job: Claim,
    lease_seconds: float,
    *,
    stage: str | None = None,
    fraction: float | None = None,
) -> bool:
    """Extend the lease (and record progress); True when a cancel was requested.

    Raises LeaseLost when the fence has moved on.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "updated_at": now,
    }
    if stage is not None:
        values["progress_stage"] = stage[:64]
    if fraction is not None:
        values["progress_fraction"] = min(max(float(fraction), 0.0), 1.0)
    statement = (
        sa.update(Job)
        .where(Job.id == job.job_id, Job.fence == job.fence, Job.status == "running")
        .values(**values)
        .returning(Job.cancel_requested)
        .execution_options(synchronize_session=False)
    )
    with session_scope(url) as session:
        cancel = session.execute(statement).scalar_one_or_none()
    if cancel is None:
        raise LeaseLost(f"job {job.job_id}: fence {job.fence} is stale")
    return bool(cancel)


def finish(
    url: str,
    job: Claim,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
    curve: Sequence[dict[str, Any]] = (),
    base_url: str | None = None,
) -> None:
    """Write the attempt's outcome, its curve and its webhook events, fenced.

    One transaction: the events are in the outbox exactly when the outcome
    is written (``base_url``: the prefix of the job link they carry).
    """
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "lease_expires_at": None,
    }
    if result is not None:
        values["result"] = finite_or_none(result)
        values["progress_fraction"] = 1.0
    if error is not None:
        values["error_code"], values["error_message"] = error[0], error[1][:4000]
    statement = (
        sa.update(Job)
        .where(Job.id == job.job_id, Job.fence == job.fence, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    with session_scope(url) as session:
        if session.execute(statement).rowcount != 1:
            raise LeaseLost(f"job {job.job_id}: fence {job.fence} is stale")
        rows = [{"job_id": job.job_id, **finite_or_none(point)} for point in curve]
        # keyed by (job_id, k): a replayed attempt adds no rows
        for start in range(0, len(rows), 500):
            insert = insert_for(session, CurvePointRow).values(
                rows[start : start + 500]
            )
            session.execute(insert.on_conflict_do_nothing())
        webhooks.record_final_events(session, [job.job_id], base_url)
