"""Every ``PLATEAU_*`` setting, in one pydantic-settings class.

With neither ``PLATEAU_DATABASE_URL`` nor ``PLATEAU_BROKER_URL`` the service
runs embedded: SQLite and a file-system broker, both under ``var_dir``.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.ssrf import parse_allow_list
from engine.specs import Limits


class Settings(BaseSettings):
    """Configuration of the API, the workers and the reaper."""

    model_config = SettingsConfigDict(env_prefix="PLATEAU_", extra="ignore")

    #: ``development`` allows embedded conveniences; ``production`` refuses them
    env: Literal["development", "production"] = "development"

    database_url: str | None = None
    broker_url: str | None = None
    data_dir: Path = Path("data")
    var_dir: Path = Path("var")
    allow_download: bool = False
    #: ``host:port`` pairs webhooks may reach although they are private
    webhook_allow_private: str = ""
    #: where clients reach the API; webhook events link to the job under it
    public_base_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://\S+$")

    # webhook delivery: one attempt's limits, the retries, the sweeper
    #: seconds one attempt may take in all: lookup, connect, TLS, send, response
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    #: bytes of a response read at most, status line and headers included
    webhook_max_response_bytes: int = Field(64 * 1024, ge=1024, le=16 * 2**20)
    #: seconds before each retry (a JSON list): 5 s, 1 min, 5 min, 30 min, 2 h,
    #: 5 h, 10 h; an event gets one attempt more than there are entries
    webhook_retry_schedule: tuple[Annotated[float, Field(ge=0)], ...] = (
        5,
        60,
        300,
        1800,
        7200,
        18000,
        36000,
    )
    #: each retry's delay is drawn from delay × [1 − jitter, 1 + jitter]
    webhook_retry_jitter: float = Field(0.2, ge=0, le=1)
    #: the longest ``Retry-After`` honoured (a 429 or 503 asking for more gets this)
    webhook_max_retry_after_seconds: float = Field(6 * 3600, ge=0)
    #: how often the sweeper looks for due events
    webhook_sweep_interval_seconds: float = Field(1.0, gt=0)
    #: attempts the sweeper makes at once
    webhook_concurrency: int = Field(8, ge=1, le=64)
    #: tests only: a worker dies right after a job's final commit, before it
    #: delivers the job's webhooks (the sweeper must then); refused in production
    test_crash_before_delivery: bool = False

    #: the tenant of requests without a key (``plateau up`` only); None: keys
    local_tenant: str | None = None

    #: signs the dashboard's session cookies; unset: a random one per process
    #: (sign-ins end when it restarts); required when ``env`` is ``production``
    session_secret: SecretStr | None = None
    #: how long a dashboard sign-in lasts
    session_max_age_seconds: int = Field(12 * 3600, ge=60, le=30 * 24 * 3600)

    # queues: CPU jobs on ``queue``, ``training.device == "cuda"`` on ``gpu_queue``
    queue: str = "plateau"
    gpu_queue: str = "gpu"
    #: prefix of every Redis key the broker writes (lets tests share a Redis)
    broker_key_prefix: str = ""

    # leases and the reaper, in seconds
    lease_seconds: float = Field(60.0, gt=0)
    progress_interval_seconds: float = Field(0.5, ge=0)
    max_attempts: int = Field(3, ge=1, le=100)
    reaper_interval_seconds: float = Field(10.0, gt=0)
    #: a job committed but not enqueued for this long is enqueued by the reaper
    enqueue_grace_seconds: float = Field(30.0, gt=0)
    #: an enqueued job never claimed for this long is enqueued again (lost message)
    requeue_after_seconds: float = Field(3600.0, gt=0)

    # Celery time limits: soft < hard < the broker's visibility timeout
    job_time_limit_seconds: int = Field(6 * 3600, ge=10)

    #: the engine's entry points, as ``module:function`` (tests swap in fakes)
    analyze_function: str = "engine.analyze:analyze"
    validate_function: str = "engine.analyze:validate_request"
    max_parameters: int = Field(Limits().max_parameters, ge=1)

    #: requests a minute per API key, in each API process (0: no limit)
    rate_limit_per_minute: int = Field(6000, ge=0)
    #: requests a key may make at once before the per-minute rate applies
    rate_limit_burst: int = Field(600, ge=1)

    #: tests only: the API process dies right after committing a new job, before
    #: enqueueing it (the reaper must then send it); refused in production
    test_crash_after_commit: bool = False

    #: the worker serves its Prometheus metrics on this port when set
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    log_level: str = "INFO"

    @field_validator("webhook_allow_private")
    @classmethod
    def _check_allow_list(cls, value: str) -> str:
        parse_allow_list(value)  # raises on anything but host:port pairs
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            if self.webhook_allow_private:
                raise ValueError(
                    "PLATEAU_WEBHOOK_ALLOW_PRIVATE is for tests; "
                    "it is refused when PLATEAU_ENV=production"
                )
            if self.local_tenant:
                raise ValueError(
                    "PLATEAU_LOCAL_TENANT serves requests without a key; "
                    "it is refused when PLATEAU_ENV=production"
                )
            if self.test_crash_after_commit:
                raise ValueError(
                    "PLATEAU_TEST_CRASH_AFTER_COMMIT is for tests; "
                    "it is refused when PLATEAU_ENV=production"
                )
            if self.test_crash_before_delivery:
                raise ValueError(
                    "PLATEAU_TEST_CRASH_BEFORE_DELIVERY is for tests; "
                    "it is refused when PLATEAU_ENV=production"
                )
            if self.session_secret is not None:
                _refuse_weak_session_secret(self.session_secret)
        return self

    # -- derived values -------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.broker_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return _normalise_db_url(self.database_url)
        return f"sqlite:///{(self.var_dir / 'plateau.sqlite').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost//"

    @property
    def broker_dir(self) -> Path:
        return (self.var_dir / "broker").resolve()

    @property
    def checkpoint_dir(self) -> Path:
        return (self.var_dir / "checkpoints").resolve()

    @property
    def soft_time_limit(self) -> int:
        return self.job_time_limit_seconds

    @property
    def hard_time_limit(self) -> int:
        return self.job_time_limit_seconds + 300

    @property
    def visibility_timeout(self) -> int:
        # longer than the longest job, so Redis does not hand a running job out
        return self.hard_time_limit + 3600

    @property
    def limits(self) -> Limits:
        return Limits(max_parameters=self.max_parameters)

    @property
    def webhook_allowed(self) -> frozenset[tuple[str, int]]:
        """``webhook_allow_private`` as (host, port) pairs."""
        return parse_allow_list(self.webhook_allow_private)

    @property
    def job_url_base(self) -> str:
        """Where a job's page in the API starts: ``{public_base_url}/v1/jobs``."""
        return self.public_base_url.rstrip("/") + "/v1/jobs"


#: values a session secret must not be: examples copied from documentation
PLACEHOLDER_SECRETS = ("changeme", "change-me", "secret", "placeholder")
MIN_SESSION_SECRET_LENGTH = 32


def _refuse_weak_session_secret(secret: SecretStr) -> None:
    value = secret.get_secret_value()
    lowered = value.lower()
    if len(value) < MIN_SESSION_SECRET_LENGTH or any(
        word in lowered for word in PLACEHOLDER_SECRETS
    ):
        raise ValueError(
            "PLATEAU_SESSION_SECRET looks like a placeholder; use at least "
            f"{MIN_SESSION_SECRET_LENGTH} random characters (`openssl rand -hex 32`)"
        )


def require_session_secret(settings: Settings) -> None:
    """Refuse to serve the dashboard in production without a session secret.

    Only the API signs sessions, so workers and the reaper start without one;
    the API calls this when it is created.
    """
    if settings.env == "production" and settings.session_secret is None:
        raise ValueError(
            "PLATEAU_SESSION_SECRET is required when PLATEAU_ENV=production; "
            "set it to a random value, e.g. `openssl rand -hex 32`"
        )


def _normalise_db_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy's default is psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``plateau up`` refuses others)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
