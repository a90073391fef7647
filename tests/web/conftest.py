"""Fixtures of the dashboard tests: an in-process app, real servers, a real browser.

The browser is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright
for Python; it is installed with apt-get when missing. Where it cannot be had
the browser tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from app.core.config import Settings
from app.db import migrate
from app.db.session import dispose_all, session_scope
from app.services.keys import create_key
from tests.support.services import free_port, unavailable  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
PLATEAU = Path(sys.executable).parent / "plateau"
#: flags that let Chromium run headless on these machines (closed network)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# -- in-process app (fast tests of routes, sessions and forms) --------------------


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    dispose_all()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a migrated SQLite file and the embedded broker under tmp_path."""
    url = f"sqlite:///{tmp_path / 'var' / 'plateau.sqlite'}"
    migrate.upgrade(url)
    (tmp_path / "data").mkdir(exist_ok=True)

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": url,
            "var_dir": tmp_path / "var",
            "data_dir": tmp_path / "data",
            "local_tenant": None,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Keys required, as under ``plateau serve``."""
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def new_key(settings: Settings) -> Callable[[str], str]:
    def make(tenant: str) -> str:
        with session_scope(settings.sqlalchemy_url) as session:
            return create_key(session, tenant)

    return make


# -- real servers and a real browser ----------------------------------------------


@dataclass
class Server:
    """A ``plateau`` process on a loopback port, in its own working directory."""

    url: str
    cwd: Path
    process: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update(extra)
    return env


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> Server:
    port = free_port()
    log = cwd / f"{args[0]}.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [str(PLATEAU), *args, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=err,
            stderr=err,
            text=True,
        )
    server = Server(f"http://127.0.0.1:{port}", cwd, process, log)
    _wait_for(server)
    return server


def _wait_for(server: Server, timeout: float = 120) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"plateau exited early:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"plateau did not answer in {timeout} s:\n{server.logs()}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver on loopback: its URL and the events it got."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/hook", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def plateau_up(
    tmp_path_factory: pytest.TempPathFactory,
    webhook_receiver: tuple[str, list[dict]],
) -> Iterator[Server]:
    """``plateau up`` with a real worker and engine; its data folder holds a
    file that passes the checks at submission but fails in the worker, and
    webhooks may reach the test's receiver."""
    cwd = tmp_path_factory.mktemp("up")
    data = cwd / "data"
    data.mkdir()
    x = np.random.default_rng(0).random((60, 4), dtype=np.float32)
    x[3, 1] = np.nan
    np.savez(data / "nan.npz", x=x, y=np.arange(60) % 3)
    receiver = webhook_receiver[0].split("/")[2]
    env = _clean_env(PLATEAU_WEBHOOK_ALLOW_PRIVATE=receiver)
    server = _start(["up"], cwd, env)
    try:
        yield server
    finally:
        _stop(server)


@dataclass
class KeyedServer(Server):
    keys: dict[str, str] | None = None


@pytest.fixture(scope="module")
def plateau_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """``plateau serve`` (keys required, no worker) with keys for two tenants."""
    cwd = tmp_path_factory.mktemp("serve")
    env = _clean_env(PLATEAU_SESSION_SECRET="test-" + "k" * 40)
    subprocess.run([str(PLATEAU), "db", "upgrade"], cwd=cwd, env=env, check=True)
    keys = {}
    for tenant in ("acme", "globex"):
        made = subprocess.run(
            [str(PLATEAU), "keys", "create", "--tenant", tenant],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        keys[tenant] = made.stdout.strip().splitlines()[-1]
    server = _start(["serve"], cwd, env)
    try:
        yield KeyedServer(server.url, cwd, server.process, server.log, keys)
    finally:
        _stop(server)


def _ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable("Chromium", f"{CHROMIUM} is missing and apt-get cannot run")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            unavailable("Chromium", f"{' '.join(command)}: {done.stderr[-500:]}")
    if not CHROMIUM.exists():
        unavailable("Chromium", f"apt-get installed chromium but {CHROMIUM} is missing")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium (Debian's), driven by Playwright.

    Module-scoped: Playwright's sync API keeps an asyncio loop running in the
    main thread while it is open, which later tests' ``asyncio.run`` refuses.
    """
    _ensure_chromium()
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable("Playwright for Python", exc)
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            unavailable("Chromium", exc)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: ``PLATEAU_WEB_SCREENSHOTS``, else the test's tmp dir."""
    folder = Path(os.environ.get("PLATEAU_WEB_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
