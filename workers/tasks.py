"""Celery tasks. Their names are verbs; their only argument is a job id."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from celery.signals import worker_process_init

from app.core.config import get_settings
from app.db.session import dispose_all
from app.services.hooks import resolve
from workers import runner
from workers.celery_app import RUN_JOB

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _prepare_child(**_kwargs: object) -> None:
    # a forked child must not share the parent's database connections
    dispose_all()
    # import the engine (and torch) in the child before the first job arrives;
    # importing does not initialise CUDA, and the parent never does this
    try:
        resolve(get_settings().analyze_function)
    except ImportError:
        logger.exception("cannot import the engine; jobs will fail")


@shared_task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    """Run one attempt at the job; the job row records the outcome."""
    try:
        parsed = uuid.UUID(job_id)
    except (ValueError, TypeError):
        logger.error("dropping a message with a malformed job id %r", job_id)
        return "malformed"
    return runner.execute(get_settings(), parsed)
