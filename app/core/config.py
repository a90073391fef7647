"""Every ``PLATEAU_*`` setting, in one pydantic-settings class.

With neither ``PLATEAU_DATABASE_URL`` nor ``PLATEAU_BROKER_URL`` the service
runs embedded: SQLite and a file-system broker, both under ``var_dir``.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    #: the tenant of requests without a key (``plateau up`` only); None: keys
    local_tenant: str | None = None

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

    #: the worker serves its Prometheus metrics on this port when set
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    log_level: str = "INFO"

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
