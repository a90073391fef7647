"""Start a Celery worker with the options long jobs need.

``python -m workers [--gpu]`` and ``plateau worker`` both land here. A GPU
worker runs one job per child process (``--max-tasks-per-child 1``, prefork,
concurrency 1): CUDA is initialised in the child that runs the job and dies
with it, never in the parent that forks the children.
"""

from __future__ import annotations

import logging
import os
import socket

from app.core.config import Settings
from app.core.logging import configure_logging
from app.db import migrate
from app.db.session import make_engine
from workers.celery_app import celery_for

logger = logging.getLogger(__name__)


def worker_argv(
    settings: Settings,
    *,
    gpu: bool = False,
    concurrency: int = 1,
    loglevel: str = "INFO",
) -> list[str]:
    """The ``celery worker`` arguments for a CPU or a GPU worker."""
    queues = [settings.queue, settings.gpu_queue] if gpu else [settings.queue]
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--queues={','.join(queues)}",
        "--pool=prefork",
        f"--concurrency={1 if gpu else concurrency}",
        f"--hostname=plateau-{os.getpid()}@{socket.gethostname()}",
        # no broadcast chatter at start-up: workers coordinate through the database
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if gpu:
        argv.append("--max-tasks-per-child=1")
    return argv


def run_worker(
    settings: Settings,
    *,
    gpu: bool = False,
    concurrency: int = 1,
    loglevel: str = "INFO",
) -> None:
    """Run a worker in this process until it is told to stop."""
    configure_logging(loglevel)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        migrate.require_current(engine)
    finally:
        engine.dispose()  # no connection crosses the fork into the children
    if settings.worker_metrics_port:
        _serve_metrics(settings.worker_metrics_port)
    argv = worker_argv(settings, gpu=gpu, concurrency=concurrency, loglevel=loglevel)
    logger.info("starting celery %s", " ".join(argv))
    celery_for(settings).worker_main(argv)


def _serve_metrics(port: int) -> None:
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        multiprocess,
        start_http_server,
    )

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
    logger.info("worker metrics on port %d", port)
