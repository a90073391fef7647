"""``python -m workers [--gpu] [--concurrency N]``: one Celery worker."""

from __future__ import annotations

import argparse

from app.core.config import get_settings
from workers.main import run_worker

parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
parser.add_argument("--gpu", action="store_true", help="also take the gpu queue")
parser.add_argument("--concurrency", type=int, default=1)
parser.add_argument("--loglevel", default="INFO")
options = parser.parse_args()
run_worker(
    get_settings(),
    gpu=options.gpu,
    concurrency=options.concurrency,
    loglevel=options.loglevel,
)
