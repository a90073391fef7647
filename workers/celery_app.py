"""The Celery app: Redis in production, a folder of files when embedded.

Start a worker with ``plateau worker`` (or ``celery -A workers.celery_app
worker``). Messages carry only a job id; the database row is the truth, so
a lost or repeated message costs at most a refused claim or a reaper pass.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.core.config import Settings, get_settings

RUN_JOB = "plateau.run_job"

_apps: dict[tuple[str, str, str], Celery] = {}


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker options: a visibility timeout longer than the longest job."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    url = settings.celery_broker_url
    if url.startswith("filesystem"):
        messages = settings.broker_dir / "messages"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"  # else kombu writes ./control
        for folder in (messages, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        options.update(
            data_folder_in=str(messages),
            data_folder_out=str(messages),
            processed_folder=str(processed),
            control_folder=str(control),
            store_processed=False,
            polling_interval=0.2,
        )
    elif url.startswith(("redis", "rediss")):
        options.update(socket_timeout=10, socket_connect_timeout=5)
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
    return options


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for long jobs, one at a time per worker process."""
    app = Celery("plateau", broker=settings.celery_broker_url)
    options = transport_options(settings)
    app.conf.update(
        broker_transport_options=options,
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout
        },
        broker_connection_retry_on_startup=True,
        # the job row holds the outcome; Celery's result backend is not used
        task_ignore_result=True,
        # ack after the task returns, take one message at a time
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # soft < hard < visibility timeout (asserted by the tests)
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.hard_time_limit,
        task_default_queue=settings.queue,
        # a broker blip must not abort a running job: its lease lives in the
        # database, and a redelivered message finds the job claimed
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_send_sent_event=False,
        worker_send_task_events=False,
        include=["workers.tasks"],
    )
    return app


def celery_for(settings: Settings) -> Celery:
    """One app per broker and queue set, for senders (the API, the reaper)."""
    key = (
        settings.celery_broker_url,
        settings.broker_key_prefix,
        str(settings.var_dir),
    )
    if key not in _apps:
        _apps[key] = make_celery(settings)
    return _apps[key]


def queue_for(settings: Settings, request: dict[str, Any]) -> str:
    """The queue of a job: ``gpu_queue`` when it asks for CUDA, else ``queue``."""
    device = (request.get("training") or {}).get("device")
    return settings.gpu_queue if device == "cuda" else settings.queue


def send_run_job(settings: Settings, job_id: str, queue: str) -> None:
    """Put one message for ``job_id`` on ``queue``; raises when the broker is down."""
    celery_for(settings).send_task(
        RUN_JOB, args=[job_id], queue=queue, retry=False, ignore_result=True
    )


def __getattr__(name: str) -> Celery:
    # ``celery -A workers.celery_app:celery_app`` gets the app of the process's
    # settings, made on first use so that importing this module creates nothing
    if name == "celery_app":
        return celery_for(get_settings())
    raise AttributeError(name)
