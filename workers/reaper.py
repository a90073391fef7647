"""The reaper: re-queue jobs whose worker vanished, enqueue jobs never enqueued.

It runs every ``reaper_interval_seconds`` (``plateau up`` runs it in a thread,
a deployment runs ``plateau reaper``). Every step is a conditional update, so
two reapers at once do no harm. A job whose lease expired ``max_attempts``
times fails as ``worker_lost`` instead of looping forever.

Jobs it ends (worker lost too often, or cancelled while their worker was
gone) get their webhook events in the same transaction; the webhook sweeper
(``workers/deliver.py``) runs beside it and delivers them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from app.core.config import Settings
from app.db.models import Job, utcnow
from app.db.session import session_scope
from app.services import webhooks
from workers.celery_app import send_run_job
from workers.enqueue import Send, enqueue

logger = logging.getLogger(__name__)


@dataclass
class Reaped:
    """What one pass did, by job id."""

    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    enqueued: list[uuid.UUID] = field(default_factory=list)


def reap(settings: Settings, send: Send = send_run_job) -> Reaped:
    """One pass over expired leases and unsent jobs."""
    now = utcnow()
    expired = sa.and_(Job.status == "running", Job.lease_expires_at < now)
    done = Reaped()
    with session_scope(settings.sqlalchemy_url) as session:

        def update(where: sa.ColumnElement[bool], **values: object) -> list[uuid.UUID]:
            statement = (
                sa.update(Job)
                .where(where)
                .values(updated_at=now, **values)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
            return list(session.scalars(statement))

        done.cancelled = update(
            sa.and_(expired, Job.cancel_requested.is_(True)),
            status="cancelled",
            finished_at=now,
            lease_expires_at=None,
            error_code="cancelled",
            error_message="cancelled by the client; its worker was lost",
        )
        done.failed = update(
            sa.and_(expired, Job.attempt >= settings.max_attempts),
            status="failed",
            finished_at=now,
            lease_expires_at=None,
            error_code="worker_lost",
            error_message=(
                f"the worker running this job was lost {settings.max_attempts} "
                "times; it is not retried again"
            ),
        )
        # the jobs that ended here owe their webhooks, in this same transaction
        webhooks.record_final_events(
            session, [*done.cancelled, *done.failed], settings.job_url_base
        )
        done.requeued = update(
            expired, status="queued", lease_expires_at=None, enqueued_at=None
        )
        # committed but never enqueued, or enqueued so long ago that the
        # message was probably lost (a flushed broker)
        unsent = sa.and_(
            Job.status == "queued",
            Job.cancel_requested.is_(False),
            sa.or_(
                sa.and_(
                    Job.enqueued_at.is_(None),
                    Job.updated_at
                    < now - timedelta(seconds=settings.enqueue_grace_seconds),
                ),
                Job.enqueued_at
                < now - timedelta(seconds=settings.requeue_after_seconds),
            ),
        )
        stale = session.execute(sa.select(Job.id, Job.queue).where(unsent)).all()
        queues = dict(
            session.execute(
                sa.select(Job.id, Job.queue).where(Job.id.in_(done.requeued))
            ).all()
        )

    for job_id in done.failed:
        logger.warning("job %s failed: worker lost too often", job_id)
    to_send = [*queues.items(), *((row.id, row.queue) for row in stale)]
    for job_id, queue in to_send:
        if enqueue(settings, job_id, queue, send):
            done.enqueued.append(job_id)
    if done.requeued or done.failed or done.cancelled or stale:
        logger.info(
            "reaper: %d re-queued, %d failed, %d cancelled, %d enqueued",
            len(done.requeued),
            len(done.failed),
            len(done.cancelled),
            len(done.enqueued),
        )
    return done


def run_forever(settings: Settings, stop: threading.Event) -> None:
    """Reap every ``reaper_interval_seconds`` until ``stop`` is set."""
    logger.info("reaper running every %.1f s", settings.reaper_interval_seconds)
    alive = settings.var_dir / "reaper.alive"  # its age is the health check
    while not stop.is_set():
        try:
            reap(settings)
            alive.parent.mkdir(parents=True, exist_ok=True)
            alive.touch()
        except sa.exc.SQLAlchemyError:
            logger.warning("reaper: the database is unreachable", exc_info=True)
        stop.wait(settings.reaper_interval_seconds)
