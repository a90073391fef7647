"""Request and response bodies of the REST API.

The analysis part of a job reuses the engine's models (``engine.specs``), so
every range is defined once; this module adds what only the service knows:
webhooks, job state, pages and curve rows.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
    field_validator,
)
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from app.core import ssrf
from engine.result import Result
from engine.specs import AnalysisRequest

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

WebhookUrl = Annotated[
    AnyHttpUrl, UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])
]
WebhookSecret = Annotated[
    str, Field(pattern=r"^whsec_[A-Za-z0-9+/=]{24,200}$", max_length=256)
]


class WebhookCreate(BaseModel):
    """Where to send a job's events, and the Standard Webhooks secret to sign them."""

    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    #: ``whsec_`` and base64; null: the service makes one and returns it once
    secret: WebhookSecret | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _refuse_unsafe_text(cls, value: Any) -> Any:
        # before the URL parser normalises ``0x7f.1`` into ``127.0.0.1``;
        # the addresses are checked by the route, which knows the allow-list
        if isinstance(value, str):
            ssrf.parse_url(value)
        return value

    @field_validator("secret")
    @classmethod
    def _secret_signs(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Webhook(value)
            except (ValueError, EmptyWebhookSecretError) as exc:
                raise ValueError(
                    "the secret is not valid base64 after 'whsec_'"
                ) from exc
        return value


class JobCreate(AnalysisRequest):
    """The body of ``POST /v1/jobs``: an analysis request and an optional webhook."""

    webhook: WebhookCreate | None = None

    def analysis_request(self) -> AnalysisRequest:
        return AnalysisRequest.model_validate(self.model_dump(exclude={"webhook"}))


class Progress(BaseModel):
    """The stage the engine reported last, and how far into it (0 to 1)."""

    stage: str | None
    fraction: float


class JobError(BaseModel):
    """Why a job failed or was cancelled."""

    code: str
    message: str


class WebhookPublic(BaseModel):
    """A job's webhook; ``secret`` only in the response that created the job."""

    url: str
    secret: str | None = None


class JobPublic(BaseModel):
    """A job as the API shows it."""

    id: uuid.UUID
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    request: AnalysisRequest
    result: Result | dict[str, Any] | None
    error: JobError | None
    attempt: int
    webhook: WebhookPublic | None = None


class JobList(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` back for the next."""

    items: list[JobPublic]
    next_cursor: str | None


class CurvePointPublic(BaseModel):
    """One point of the convergence curve (nulls where a value is not finite)."""

    k: int
    delta: float | None
    delta_low: float | None
    delta_high: float | None
    delta_expected: float | None
    smoothed: float | None


class Curve(BaseModel):
    """A job's convergence curve, ``k`` ascending; empty until the job succeeds."""

    points: list[CurvePointPublic]


class DeliveryPublic(BaseModel):
    """One attempt to deliver a webhook event."""

    id: str
    #: the event's ``webhook-id`` header, the same on every attempt
    webhook_id: str
    event_type: str
    url: str
    #: 1 for the first attempt at this event
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    #: what the attempt made of its event
    outcome: Literal["delivered", "retrying", "failed", "gone"]
    #: when the next attempt is due (``retrying`` only)
    next_attempt_at: datetime | None = None
    #: when the attempt started
    created_at: datetime


class Health(BaseModel):
    """Liveness or readiness, with the state of each dependency."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinity, at any depth, replaced by None.

    JSON has no NaN: PostgreSQL's json type refuses it and so does the
    response encoder, so non-finite numbers become nulls before either.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value
