"""Processes the reliability tests start, fault, and stop: by pid, never by name.

Workers are real ``python -m workers`` processes, the API a real uvicorn, Redis
and PostgreSQL either the machine's (shared: a scratch database, a key
prefix) or private instances on free loopback ports that a test may stop,
flush or restart. Every wait here has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: where each test writes the figures it produced, for docs/reliability.md
FIGURES = Path(os.environ.get("RELIABILITY_FIGURES", "/tmp/plateau-reliability.json"))

from tests.support.services import (  # noqa: E402, F401 - shared with the tests
    free_port,
    pg_admin_url,
    unavailable,
)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def record(test: str, **figures: Any) -> None:
    """Merge ``figures`` under ``test`` into the figures file (and print them)."""
    try:
        data = json.loads(FIGURES.read_text())
    except (OSError, ValueError):  # none yet, or another run's half-written one
        data = {}
    data.setdefault(test, {}).update(figures)
    partial = FIGURES.with_name(f"{FIGURES.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    partial.replace(FIGURES)  # atomic: readers see the old file or the new one
    print(f"[figures] {test}: {figures}")  # noqa: T201 - shown with pytest -s


def service_env(values: dict[str, Any], **extra: str) -> dict[str, str]:
    """This process's environment without PLATEAU_*, plus ``values`` as settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update({f"PLATEAU_{k.upper()}": str(v) for k, v in values.items()})
    # the fake engine lives next to this file
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
    env.update(extra)
    return env


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the process and everything in its session (its children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (Celery: warm shutdown), SIGKILL the group after ``grace``."""
        if self.alive():
            # a frozen child would never finish its warm shutdown
            for pid in [self.pid, *self.children()]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # children left behind (a killed parent's pool) go with the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)
        self._out.close()


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """``VmHWM`` (peak resident) or ``VmRSS`` of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


# -- the service's own processes ---------------------------------------------------


def start_worker(env: dict[str, str], log: Path, concurrency: int = 1) -> Process:
    """A ``celery worker`` (what ``plateau worker`` runs); ready once it has a child."""
    argv = [sys.executable, "-m", "workers", "--loglevel", "INFO"]
    argv += ["--concurrency", str(concurrency)]
    worker = Process(argv, env, log)
    wait_until(
        lambda: " ready." in worker.text() or not worker.alive(),
        90,
        "the worker to start",
    )
    assert worker.alive(), worker.text()[-3000:]
    wait_until(lambda: len(worker.children()) >= concurrency, 30, "the pool")
    return worker


def start_api(env: dict[str, str], log: Path, processes: int = 1) -> Process:
    """``uvicorn app.main:create_app`` on loopback; ready once /healthz answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if processes > 1:
        argv += ["--workers", str(processes)]
    api = Process(argv, env, log)
    api.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    wait_until(
        lambda: http_ok(f"{api.url}/healthz") or not api.alive(),  # type: ignore[attr-defined]
        90,
        "the API to start",
    )
    assert api.alive(), api.text()[-3000:]
    return api


def start_reaper(env: dict[str, str], log: Path) -> Process:
    """``plateau reaper``: the periodic re-queue and enqueue pass."""
    argv = [sys.executable, "-m", "cli.main", "reaper"]
    return Process(argv, env, log)


# -- private Redis and PostgreSQL ----------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = Process(argv, dict(os.environ), self.folder / "redis.log")
        wait_until(self.ping, 20, "redis-server to answer")

    def ping(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)
            self.process = None


class PostgresInstance:
    """A throwaway PostgreSQL cluster in a temporary folder on a free port.

    ``initdb`` refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user and its commands run through ``runuser``.
    """

    def __init__(self) -> None:
        # its own folder under /tmp: the postgres user cannot enter pytest's
        self.folder = Path(tempfile.mkdtemp(prefix="plateau-pg-"))
        self.data = self.folder / "pgdata"
        self.port = free_port()
        self.bin = _postgres_bin()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        run = subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )
        if run.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {run.stderr[-2000:]}")

    def create(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "postgres.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("initdb is not installed")
    return Path(initdb).parent


# -- the fake engine's event log ---------------------------------------------------


def events(folder: Path) -> list[dict[str, Any]]:
    """Every event the fake engine wrote, in order of time."""
    found: list[dict[str, Any]] = []
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:  # empty, or being written right now
                continue
    return sorted(found, key=lambda event: event["t"])


def of_job(found: Iterable[dict[str, Any]], job_id: str, kind: str) -> list[dict]:
    return [e for e in found if e["job"] == job_id and e["event"] == kind]


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(share * len(ordered))))
    return ordered[rank - 1]
