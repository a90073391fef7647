"""One attempt at a job: claim it, run the engine, write the outcome, fenced.

The engine reports progress through a callback; that callback writes the
stage to the job row (at most every ``progress_interval_seconds``), renews
the lease, and raises AnalysisCancelled once a cancel was requested. A
heartbeat thread renews the lease too, for steps that report nothing for a
while. Imports of the engine (and so of torch) happen here, in the worker's
child process, never in its parent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.core import metrics
from app.core.config import Settings
from app.core.logging import job_context
from app.services.hooks import resolve
from workers import claims, deliver
from workers.claims import Claim, LeaseLost

logger = logging.getLogger(__name__)


class JobRun:
    """The progress callback and heartbeat of one claimed attempt."""

    def __init__(self, settings: Settings, job: Claim) -> None:
        self.settings = settings
        self.url = settings.sqlalchemy_url
        self.job = job
        self.stage: str | None = None
        self.last_write = 0.0
        self.cancel_seen = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"lease-{job.job_id}", daemon=True
        )

    def __enter__(self) -> JobRun:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def progress(self, stage: str, fraction: float) -> None:
        """The engine's callback: record progress, renew the lease, stop if asked."""
        from engine.errors import AnalysisCancelled

        if self.lost:
            raise LeaseLost(f"job {self.job.job_id}: lease lost")
        now = time.monotonic()
        due = now - self.last_write >= self.settings.progress_interval_seconds
        if stage != self.stage or due:
            if stage != self.stage:
                logger.info("stage %s", stage)
            self.stage, self.last_write = stage, now
            try:
                self.cancel_seen |= claims.renew(
                    self.url,
                    self.job,
                    self.settings.lease_seconds,
                    stage=stage,
                    fraction=fraction,
                )
            except sa.exc.SQLAlchemyError:
                # A database blip must not cost the attempt: progress is best
                # effort, the heartbeat keeps renewing, and if the lease does
                # lapse the fence refuses this attempt's writes.
                logger.warning("could not record progress", exc_info=True)
        if self.cancel_seen:
            raise AnalysisCancelled("cancelled by the client while it ran")

    def _heartbeat(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self.cancel_seen |= claims.renew(
                    self.url, self.job, self.settings.lease_seconds
                )
            except LeaseLost:
                logger.warning("lease lost: another attempt owns the job now")
                self.lost = True
                return
            except sa.exc.SQLAlchemyError:
                # the lease may lapse; the reaper then re-queues the job and
                # this attempt's fenced writes are refused
                logger.warning("could not renew the lease", exc_info=True)


def execute(settings: Settings, job_id: uuid.UUID) -> str:
    """Run one attempt at ``job_id``; returns what happened, for the task's log."""
    with job_context(job_id):
        job = claims.claim(settings.sqlalchemy_url, job_id, settings.lease_seconds)
        if job is None:
            logger.info("not claimable (finished, cancelled or claimed elsewhere)")
            return "skipped"
        logger.info("claimed: attempt %d, fence %d", job.attempt, job.fence)
        metrics.QUEUE_WAIT.observe(job.queued_seconds)
        started = time.monotonic()
        try:
            outcome = _run(settings, job)
        except LeaseLost:
            logger.warning("stopped: the job was taken over, nothing written")
            return "lost"
        metrics.JOB_DURATION.observe(time.monotonic() - started)
        metrics.JOBS_FINISHED.labels(outcome).inc()
        logger.info("finished: %s in %.1f s", outcome, time.monotonic() - started)
        _deliver_after_commit(settings, job_id)
        return outcome


def _deliver_after_commit(settings: Settings, job_id: uuid.UUID) -> None:
    """First attempts at the job's webhook events; the sweeper does the rest.

    The events were committed with the outcome, so a crash here (or a
    database that is gone) only delays them until the next sweep.
    """
    if settings.test_crash_before_delivery:
        logger.warning("test hook: dying between the final commit and delivery")
        os._exit(70)
    try:
        deliver.deliver_job(settings, job_id)
    except Exception:  # the job is done whatever happens to its webhooks
        logger.warning("webhooks not attempted now; the sweeper will", exc_info=True)


def _run(settings: Settings, job: Claim) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    from engine.errors import AnalysisCancelled, EngineError
    from engine.specs import AnalysisRequest

    url = settings.sqlalchemy_url
    checkpoint = settings.checkpoint_dir / f"{job.job_id}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint.exists():
        logger.info("resuming from checkpoint %s", checkpoint)

    error: tuple[str, str] | None = None
    with JobRun(settings, job) as run:
        try:
            request = AnalysisRequest.model_validate(job.request)
            analysis = resolve(settings.analyze_function)(
                request,
                data_dir=settings.data_dir,
                allow_download=settings.allow_download,
                limits=settings.limits,
                progress=run.progress,
                checkpoint=checkpoint,
            )
        except AnalysisCancelled as exc:
            error = (exc.code, exc.message)
        except EngineError as exc:
            logger.info("failed: %s: %s", exc.code, exc.message)
            error = (exc.code, exc.message)
        except SoftTimeLimitExceeded:
            error = ("time_limit", f"the job ran past {settings.soft_time_limit} s")
        except (LeaseLost, sa.exc.SQLAlchemyError):
            # the database is the truth: without it, leave the job to the reaper
            raise
        except Exception as exc:
            logger.exception("the engine raised an unexpected error")
            error = ("internal_error", f"{type(exc).__name__}: {exc}")

    # the heartbeat has stopped: the final write is the attempt's last
    if error is not None:
        status = "cancelled" if error[0] == AnalysisCancelled.code else "failed"
        claims.finish(url, job, status, error=error, base_url=settings.job_url_base)
        _discard(checkpoint)
        return status
    result = analysis.result.model_dump(mode="json")
    curve = [point.model_dump() for point in analysis.curve]
    claims.finish(
        url,
        job,
        "succeeded",
        result=result,
        curve=curve,
        base_url=settings.job_url_base,
    )
    _observe_stages(result)
    _discard(checkpoint)
    return "succeeded"


def _observe_stages(result: dict[str, Any]) -> None:
    for stage, seconds in (result.get("timings") or {}).items():
        if isinstance(seconds, int | float):
            metrics.STAGE_DURATION.labels(stage).observe(seconds)


def _discard(checkpoint: Path) -> None:
    checkpoint.unlink(missing_ok=True)
