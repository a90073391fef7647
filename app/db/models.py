"""The tables: tenants and their API keys, jobs, their curve points and webhooks.

The job row is the truth about a job; a queue message only carries its id.
Timestamps are timezone-aware and stored in UTC on every database.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
#: pending: due at ``next_attempt_at``; delivered: a 2xx came back; failed: out
#: of attempts (or a URL that can never pass the guard); gone: the URL said 410
EVENT_STATUSES = ("pending", "delivered", "failed", "gone")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp: UTC in, aware UTC out (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        value = value.astimezone(timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class Tenant(Base):
    """A customer: owns API keys and jobs."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """An API key, stored as a SHA-256 hash and found by its public prefix."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(sa.String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    tenant: Mapped[Tenant] = relationship(back_populates="keys")


class Job(Base):
    """One analysis: its request, where it stands, and what it found."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="status",
        ),
        sa.CheckConstraint("attempt >= 0 AND fence >= 0", name="counters"),
        sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        sa.Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    #: the AnalysisRequest as JSON (without the webhook)
    request: Mapped[dict[str, Any]]
    #: SHA-256 of the submitted body, to tell a replay from a different request
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    #: the Celery queue the job goes to
    queue: Mapped[str] = mapped_column(sa.String(128))

    progress_stage: Mapped[str | None] = mapped_column(sa.String(64))
    progress_fraction: Mapped[float] = mapped_column(sa.Double, default=0.0)
    result: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    error_message: Mapped[str | None] = mapped_column(sa.Text)

    # claims: each claim bumps both; every write of an attempt checks its fence
    attempt: Mapped[int] = mapped_column(default=0)
    fence: Mapped[int] = mapped_column(default=0)
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    #: set once the queue message was sent; null: committed but not enqueued
    enqueued_at: Mapped[datetime | None]

    # webhooks: where the job's events go and the secret that signs them.
    # TODO: the secret is stored as given (deliveries must sign with it); it
    # is not encrypted at rest, so a database dump lets its reader forge events
    webhook_url: Mapped[str | None] = mapped_column(sa.String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(sa.String(256))

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class CurvePointRow(Base):
    """One point of a job's convergence curve; a replayed step adds no row."""

    __tablename__ = "curve_points"

    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    k: Mapped[int] = mapped_column(primary_key=True)
    delta: Mapped[float | None] = mapped_column(sa.Double)
    delta_low: Mapped[float | None] = mapped_column(sa.Double)
    delta_high: Mapped[float | None] = mapped_column(sa.Double)
    delta_expected: Mapped[float | None] = mapped_column(sa.Double)
    smoothed: Mapped[float | None] = mapped_column(sa.Double)


class WebhookEvent(Base):
    """The outbox: one event a job owes its webhook, written with its final state.

    ``body`` is the exact JSON sent on every attempt; the ``webhook-id`` header
    is derived from ``id``, so retries of an event carry the same id.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "type"),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed', 'gone')", name="status"
        ),
        sa.Index("ix_webhook_events_due", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE")
    )
    #: ``job.succeeded``, ``data_budget.reached``, ...
    type: Mapped[str] = mapped_column(sa.String(32))
    #: the job's webhook URL when the event was made (a 410 stops it per URL)
    url: Mapped[str] = mapped_column(sa.String(2048))
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    #: attempts claimed so far (a claim counts even if its sender died)
    attempts: Mapped[int] = mapped_column(default=0)
    #: not before this; null once the event is settled
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.id)


def webhook_id(event_id: uuid.UUID) -> str:
    """The ``webhook-id`` header of an event: the same on every attempt."""
    return f"msg_{event_id.hex}"


class WebhookAttempt(Base):
    """One attempt to deliver an event: when, how long, and what came back."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE")
    )
    attempt: Mapped[int]
    started_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(sa.Double)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    #: delivered, retrying, failed or gone: what this attempt made of the event
    outcome: Mapped[str] = mapped_column(sa.String(16))
    #: when the next attempt is due, if one is
    next_attempt_at: Mapped[datetime | None]
