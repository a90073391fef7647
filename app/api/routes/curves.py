"""A job's convergence curve: JSON, CSV and a PNG plot."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from app.api.deps import SessionDep, TenantDep
from app.api.errors import KEYED_RESPONSES
from app.api.routes.jobs import owned_job
from app.core.ratelimit import RateLimited
from app.schemas import Curve, CurvePointPublic
from app.services import jobs

router = APIRouter(
    prefix="/v1/jobs",
    tags=["curves"],
    responses=KEYED_RESPONSES,
    dependencies=[RateLimited],
)

CSV_COLUMNS = ("k", "delta", "delta_low", "delta_high", "delta_expected", "smoothed")


@router.get(
    "/{job_id}/curve",
    response_model=Curve,
    responses={200: {"content": {"text/csv": {}}}},
)
def get_curve(
    job_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Curve | Response:
    """The convergence curve as JSON, or as CSV with ``?format=csv``."""
    owned_job(session, tenant, job_id)
    points = jobs.curve(session, job_id)
    if format == "csv":
        return Response(to_csv(points), media_type="text/csv; charset=utf-8")
    return Curve(points=points)


@router.get(
    "/{job_id}/curve.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 409: {"description": "no curve"}},
)
def get_curve_png(
    job_id: uuid.UUID, tenant: TenantDep, session: SessionDep
) -> Response:
    """The convergence plot as a PNG (once the job has succeeded)."""
    from engine.plot import plot_curve
    from engine.result import CurvePoint, Result

    job = owned_job(session, tenant, job_id)
    points = jobs.curve(session, job_id)
    if job.status != "succeeded" or job.result is None or not points:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the job has no curve yet ({job.status})"
        )
    result = Result.model_validate(job.result)
    curve = [
        CurvePoint(
            k=p.k,
            delta=_number(p.delta),
            delta_low=p.delta_low,
            delta_high=p.delta_high,
            delta_expected=p.delta_expected,
            smoothed=_number(p.smoothed),
        )
        for p in points
    ]
    image = io.BytesIO()
    plot_curve(result, curve, image)
    return Response(image.getvalue(), media_type="image/png")


def to_csv(points: list[CurvePointPublic]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for point in points:
        row = point.model_dump()
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def _number(value: float | None) -> float:
    return float("nan") if value is None else value
