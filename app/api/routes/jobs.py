"""``/v1/jobs``: submit, list, read and cancel jobs."""

from __future__ import annotations

import os
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Query, status

from app.api.deps import SessionDep, SettingsDep, TenantDep
from app.api.errors import KEYED_RESPONSES, field_error
from app.core import metrics, ssrf
from app.core.config import Settings
from app.core.ratelimit import RateLimited
from app.db.models import FINAL_STATUSES, Job
from app.schemas import DeliveryPublic, JobCreate, JobList, JobPublic, JobStatus
from app.services import jobs, webhooks
from app.services.validation import check_request
from workers.celery_app import queue_for
from workers.enqueue import enqueue

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses=KEYED_RESPONSES,
    dependencies=[RateLimited],
)

NOT_FOUND = "job not found"


def owned_job(session: SessionDep, tenant: TenantDep, job_id: uuid.UUID) -> Job:
    """The caller's job, or 404 (also for another tenant's job)."""
    job = jobs.get(session, tenant.id, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return job


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit_job(
    body: JobCreate,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> JobPublic:
    """Queue an analysis; a repeated Idempotency-Key returns the job it made."""
    request = body.analysis_request()
    check_request(settings, request)
    if body.webhook is not None:
        check_webhook_url(settings, str(body.webhook.url))
    queue = queue_for(settings, request.model_dump())
    try:
        submitted = jobs.submit(
            session, tenant.id, body, queue=queue, idempotency_key=idempotency_key
        )
    except jobs.IdempotencyConflict:
        session.rollback()
        message = "this Idempotency-Key was used with a different request body"
        raise HTTPException(
            422,
            [
                {
                    "loc": ["header", "Idempotency-Key"],
                    "msg": message,
                    "type": "conflict",
                }
            ],
        ) from None
    session.commit()
    if settings.test_crash_after_commit:
        os._exit(70)  # tests only: die between the commit and the enqueue
    if submitted.created:
        metrics.JOBS_SUBMITTED.inc()
        # after the commit; if this never runs, the reaper sends it
        background.add_task(enqueue, settings, submitted.job.id, queue)
    return jobs.to_public(submitted.job, generated_secret=submitted.generated_secret)


@router.get("", response_model=JobList)
def list_jobs(
    tenant: TenantDep,
    session: SessionDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """The caller's jobs, newest first, optionally of one status."""
    try:
        items, next_cursor = jobs.page(
            session, tenant.id, status=status_, limit=limit, cursor=cursor
        )
    except jobs.InvalidCursor as exc:
        raise HTTPException(
            422,
            [{"loc": ["query", "cursor"], "msg": str(exc), "type": "cursor"}],
        ) from None
    return JobList(
        items=[jobs.to_public(job) for job in items], next_cursor=next_cursor
    )


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: uuid.UUID, tenant: TenantDep, session: SessionDep) -> JobPublic:
    """One job: status, progress, result or error."""
    return jobs.to_public(owned_job(session, tenant, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={409: {"description": "The job has already ended"}},
)
def cancel_job(
    job_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Cancel a queued job, or ask a running one to stop between steps."""
    job = owned_job(session, tenant, job_id)
    if job.status in FINAL_STATUSES:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the job has already ended ({job.status})"
        )
    job = jobs.request_cancel(session, job, base_url=settings.job_url_base)
    session.commit()
    return jobs.to_public(job)


@router.get("/{job_id}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(
    job_id: uuid.UUID, tenant: TenantDep, session: SessionDep
) -> list[DeliveryPublic]:
    """The job's webhook delivery attempts, oldest first."""
    owned_job(session, tenant, job_id)
    return webhooks.deliveries(session, job_id)


def check_webhook_url(settings: Settings, url: str) -> None:
    """422 naming ``webhook.url`` when the URL may not be called (the SSRF guard)."""
    try:
        ssrf.check(
            url,
            settings.webhook_allowed,
            timeout=min(settings.webhook_timeout_seconds, 5.0),
        )
    except ssrf.ForbiddenUrl as exc:
        raise HTTPException(
            422, [field_error("webhook.url", str(exc), "forbidden_url")]
        ) from None
