"""Prometheus metrics: counters and histograms, plus job counts read from the database.

Workers record durations in their own (child) processes. With
``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client keeps those in files and
whoever serves ``/metrics`` on that machine adds them up: the API in
``plateau up``, the worker's own port (``PLATEAU_WORKER_METRICS_PORT``) in a
deployment where API and workers run on different machines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from app.db.models import JOB_STATUSES, Job

logger = logging.getLogger(__name__)

_DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

JOBS_SUBMITTED = Counter("plateau_jobs_submitted", "Jobs accepted by the API")
JOBS_FINISHED = Counter(
    "plateau_jobs_finished", "Attempts that ended, by final status", ["status"]
)
JOB_DURATION = Histogram(
    "plateau_job_duration_seconds",
    "Seconds from claim to the final write, per attempt",
    buckets=_DURATION_BUCKETS,
)
STAGE_DURATION = Histogram(
    "plateau_stage_duration_seconds",
    "Seconds per engine stage of succeeded jobs",
    ["stage"],
    buckets=_DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "plateau_job_queue_wait_seconds",
    "Seconds from submission to a worker's claim",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
)


class JobCountCollector(Collector):
    """Jobs by status and the queue depth, counted in the database at scrape time."""

    def __init__(self, connect: Callable[[], sa.Connection]) -> None:
        self.connect = connect

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("plateau_jobs", "Jobs by status", labels=["status"])
        depth = GaugeMetricFamily("plateau_queue_depth", "Jobs waiting for a worker")
        try:
            with self.connect() as connection:
                counts = dict(
                    connection.execute(
                        sa.select(Job.status, sa.func.count()).group_by(Job.status)
                    ).all()
                )
        except sa.exc.SQLAlchemyError:
            logger.warning("metrics: the database is unreachable", exc_info=True)
            return
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        depth.add_metric([], counts.get("queued", 0))
        yield jobs
        yield depth


def render(connect: Callable[[], sa.Connection]) -> bytes:
    """The text exposition of this process's (or this machine's) metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process = CollectorRegistry()
        multiprocess.MultiProcessCollector(process)
    else:
        process = REGISTRY
    database = CollectorRegistry()
    database.register(JobCountCollector(connect))
    return generate_latest(process) + generate_latest(database)
