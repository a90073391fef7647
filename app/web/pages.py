"""The dashboard's pages and the fragments htmx polls: jobs, one job, submit.

Every query goes through ``app.services.jobs`` with the viewer's tenant, so a
page or fragment of another tenant's job is a 404 like the API's.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import SessionDep, SettingsDep
from app.api.routes import jobs as jobs_routes
from app.db.models import JOB_STATUSES, Job
from app.services import jobs
from app.web import forms, views
from app.web.context import ViewerDep, redirect, render, require_csrf
from app.web.sessions import CSRF_FIELD
from engine.specs import AnalysisRequest

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
FILTERS = ("all", *JOB_STATUSES)
#: how often the list polls: quickly while something runs, slowly otherwise
POLL_ACTIVE, POLL_IDLE = "2s", "10s"
#: how often a queued or running job's page polls
POLL_JOB = "1s"

StatusQuery = Annotated[str | None, Query(max_length=16)]
CursorQuery = Annotated[str | None, Query(max_length=512)]


def _list_context(
    db: SessionDep, tenant_id: int, status: str | None, cursor: str | None
) -> dict[str, Any]:
    chosen = status if status in JOB_STATUSES else None
    try:
        items, next_cursor = jobs.page(
            db, tenant_id, status=chosen, limit=PAGE_SIZE, cursor=cursor
        )
    except jobs.InvalidCursor:
        cursor = None
        items, next_cursor = jobs.page(
            db, tenant_id, status=chosen, limit=PAGE_SIZE, cursor=None
        )
    rows = [views.summary(job) for job in items]
    query = urlencode({k: v for k, v in (("status", chosen), ("cursor", cursor)) if v})
    return {
        "rows": rows,
        "status": chosen or "all",
        "filters": FILTERS,
        "cursor": cursor,
        "next_cursor": next_cursor,
        "poll_url": "/fragments/jobs" + (f"?{query}" if query else ""),
        "poll_every": POLL_ACTIVE if any(not r.final for r in rows) else POLL_IDLE,
    }


@router.get("/", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    status: StatusQuery = None,
    cursor: CursorQuery = None,
) -> Response:
    """The job list, newest first, with status filters."""
    context = _list_context(db, viewer.tenant.id, status, cursor)
    return render(request, viewer, "jobs.html", context)


@router.get("/fragments/jobs", response_class=HTMLResponse)
def job_rows(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    status: StatusQuery = None,
    cursor: CursorQuery = None,
) -> Response:
    """The rows of the job list (polled)."""
    context = _list_context(db, viewer.tenant.id, status, cursor)
    return render(request, viewer, "_job_rows.html", context)


@router.get("/jobs/new", response_class=HTMLResponse)
def new_job_page(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
) -> Response:
    """The submit form, blank or filled in from one of the viewer's jobs."""
    values = forms.defaults()
    source = _owned(db, viewer.tenant.id, from_) if from_ else None
    if source is not None:
        values = forms.values_of_job(source)
    return _form(request, viewer, forms.SubmitForm(values))


@router.post("/jobs/new", response_class=HTMLResponse)
def submit_job_form(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    settings: SettingsDep,
    posted: forms.PostedDep,
) -> Response:
    """Submit the form through the API's own route; its 422s beside the fields."""
    require_csrf(request, settings, viewer.session, posted.other.get(CSRF_FIELD))
    form = forms.SubmitForm(posted.fields)
    if posted.other.get("idempotency_key"):
        form.idempotency_key = posted.other["idempotency_key"]
    background = BackgroundTasks()
    job_id = forms.submit(
        form, tenant=viewer.tenant, db=db, settings=settings, background=background
    )
    if job_id is None:
        return _form(request, viewer, form, status_code=422)
    response = redirect(request, f"/jobs/{job_id}", viewer)
    response.background = background  # enqueue after the response, as the API does
    return response


def _form(
    request: Request,
    viewer: ViewerDep,
    form: forms.SubmitForm,
    status_code: int = 200,
) -> Response:
    context = {
        "form": form,
        "datasets": forms.DATASET_CHOICES,
        "methods": forms.METHOD_CHOICES,
        "labels": forms.LABELS,
    }
    return render(request, viewer, "new_job.html", context, status_code=status_code)


def _owned(db: SessionDep, tenant_id: int, job_id: str | None) -> Job | None:
    try:
        parsed = uuid.UUID(job_id or "")
    except ValueError:
        return None
    return jobs.get(db, tenant_id, parsed)


def _live_context(db: SessionDep, job: Job) -> dict[str, Any]:
    summary = views.summary(job)
    result = views.result_of(job)
    chart = None
    if result is not None:
        chart = views.chart_data(result, jobs.curve(db, job.id))
    return {
        "job": summary,
        "result": result,
        "chart": chart,
        "attempt": job.attempt,
        "cancelling": job.cancel_requested and not summary.final,
        "hint": views.ERROR_HINTS.get(job.error_code or ""),
        "poll_every": POLL_JOB,
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request, viewer: ViewerDep, db: SessionDep, job_id: str
) -> Response:
    """One job: verdict, curve, training, error, deliveries, the curl to repeat it."""
    job = _owned(db, viewer.tenant.id, job_id)
    if job is None:
        return render(request, viewer, "not_found.html", {}, status_code=404)
    request_body = AnalysisRequest.model_validate(job.request)
    context = _live_context(db, job) | {
        "request_body": request_body,
        "request_json": json.dumps(job.request, indent=2, sort_keys=True),
        "webhook_url": job.webhook_url,
        "curl": views.curl_command(
            str(request.base_url), job, needs_key=not viewer.keyless
        ),
    }
    return render(request, viewer, "job.html", context)


@router.get("/fragments/jobs/{job_id}", response_class=HTMLResponse)
def job_live(
    request: Request, viewer: ViewerDep, db: SessionDep, job_id: str
) -> Response:
    """The part of a job's page that changes while it runs (polled)."""
    job = _owned(db, viewer.tenant.id, job_id)
    if job is None:
        raise HTTPException(404, jobs_routes.NOT_FOUND)
    return render(request, viewer, "_job_live.html", _live_context(db, job))


@router.post("/jobs/{job_id}/cancel")
def cancel_job_form(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    settings: SettingsDep,
    posted: forms.PostedDep,
    job_id: str,
) -> Response:
    """Cancel through the API's own route, then show the job again."""
    require_csrf(request, settings, viewer.session, posted.other.get(CSRF_FIELD))
    job = _owned(db, viewer.tenant.id, job_id)
    if job is None:
        return render(request, viewer, "not_found.html", {}, status_code=404)
    try:
        jobs_routes.cancel_job(
            job_id=job.id, tenant=viewer.tenant, session=db, settings=settings
        )
    except HTTPException as exc:
        if exc.status_code != 409:  # 409: it ended meanwhile; the page says how
            raise
    return redirect(request, f"/jobs/{job.id}", viewer)
