"""Enqueue after commit: send a job's message, then note that it was sent.

A job whose message was never sent keeps ``enqueued_at`` null, and the reaper
sends it after a grace period; sending twice is harmless (the second claim
is refused).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import sqlalchemy as sa

from app.core.config import Settings
from app.db.models import Job, utcnow
from app.db.session import session_scope
from workers.celery_app import send_run_job

logger = logging.getLogger(__name__)

Send = Callable[[Settings, str, str], None]


def enqueue(
    settings: Settings, job_id: uuid.UUID, queue: str, send: Send = send_run_job
) -> bool:
    """Send the message for a committed job; False when the broker refused it."""
    try:
        send(settings, str(job_id), queue)
    except Exception:  # any broker error: the reaper tries again later
        logger.warning("could not enqueue job %s", job_id, exc_info=True)
        return False
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(enqueued_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    except sa.exc.SQLAlchemyError:
        # sent but not noted: the reaper may send it again, which is harmless
        logger.warning("enqueued job %s but could not note it", job_id, exc_info=True)
    return True
