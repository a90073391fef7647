"""Settings and the Celery configuration they make."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import Settings, is_loopback
from workers.celery_app import make_celery, queue_for
from workers.main import worker_argv


def test_embedded_defaults_live_under_var(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", database_url=None, broker_url=None)

    assert settings.embedded
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'var' / 'plateau.sqlite'}"
    assert settings.celery_broker_url.startswith("filesystem://")
    assert str(settings.data_dir) == "data" and settings.allow_download is False


def test_postgres_urls_use_psycopg_3():
    settings = Settings(database_url="postgresql://u@db:5432/plateau")

    assert settings.sqlalchemy_url == "postgresql+psycopg://u@db:5432/plateau"


@pytest.mark.parametrize(
    "unsafe", [{"webhook_allow_private": "127.0.0.1:9000"}, {"local_tenant": "local"}]
)
def test_production_refuses_test_conveniences(unsafe):
    with pytest.raises(ValidationError):
        Settings(env="production", **unsafe)


def test_time_limits_are_ordered_below_the_visibility_timeout(tmp_path):
    settings = Settings(var_dir=tmp_path, broker_url="redis://127.0.0.1:6379/5")
    conf = make_celery(settings).conf

    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    assert conf.result_backend_transport_options["visibility_timeout"] == (
        settings.visibility_timeout
    )
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1


def test_gpu_workers_run_one_job_per_child_process():
    settings = Settings()

    gpu = worker_argv(settings, gpu=True, concurrency=4)
    cpu = worker_argv(settings)

    assert "--max-tasks-per-child=1" in gpu and "--concurrency=1" in gpu
    assert "--pool=prefork" in gpu
    assert f"--queues={settings.queue},{settings.gpu_queue}" in gpu
    assert f"--queues={settings.queue}" in cpu
    assert queue_for(settings, {"training": {"device": "cuda"}}) == settings.gpu_queue
    assert queue_for(settings, {"training": {"device": "auto"}}) == settings.queue


def test_only_loopback_hosts_count_as_local():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
