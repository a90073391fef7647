"""``plateau up | serve | worker | reaper | db | keys``: run the service.

$ plateau up                         # API + worker + reaper, embedded, keyless
$ plateau reaper                     # re-queues lost jobs, delivers webhooks
$ plateau db upgrade                 # apply migrations (PLATEAU_DATABASE_URL)
$ plateau keys create --tenant acme  # prints a new key on the last line
$ plateau keys revoke 3f9c0a1b2c4d   # the key with that prefix gets 401 from now on
$ plateau serve & plateau worker     # the two halves of a deployment
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Annotated

import typer

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)

HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]


def register(app: typer.Typer) -> None:
    """Add the service's commands to the ``plateau`` command line."""
    app.command()(up)
    app.command()(serve)
    app.command()(worker)
    app.command()(reaper)
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")


def _fail(message: str) -> None:
    typer.echo(f"plateau: error: {message}", err=True)
    raise typer.Exit(2)


def _settings():  # noqa: ANN202 - lazy import keeps `plateau --help` fast
    from pydantic import ValidationError

    from app.core.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        _fail(f"bad settings: {exc.errors()[0]['msg']}")


def up(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """API, one worker and the reaper on embedded defaults; Ctrl-C stops all."""
    from app.core.config import get_settings, is_loopback

    if not is_loopback(host):
        _fail(
            "`plateau up` serves without keys, so it listens on loopback only; "
            "use `plateau serve` to listen elsewhere"
        )
    os.environ.setdefault("PLATEAU_LOCAL_TENANT", "local")
    get_settings.cache_clear()
    settings = _settings()

    from app.core.logging import configure_logging
    from app.db import migrate
    from workers import deliver
    from workers.reaper import run_forever

    configure_logging(settings.log_level)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.sqlalchemy_url)

    # the worker's children write metrics to files the API adds up
    metrics_dir = (settings.var_dir / "metrics").resolve()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    api = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    api += ["--host", host, "--port", str(port), "--log-level", "warning"]
    # the children log to stderr; stdout carries only the address
    spawn = {"env": env, "start_new_session": True, "stdout": sys.stderr}
    children = {
        "api": subprocess.Popen(api, **spawn),
        "worker": subprocess.Popen([sys.executable, "-m", "workers"], **spawn),
    }
    stop = threading.Event()
    reaper_thread = threading.Thread(
        target=run_forever, args=(settings, stop), name="reaper", daemon=True
    )
    reaper_thread.start()
    sweeper_thread = deliver.start_sweeper(settings, stop)
    # SIGINT too: a shell starts background jobs with SIGINT ignored
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)

    address = f"http://{host}:{port}"
    try:
        if _wait_ready(f"{address}/healthz", children):
            typer.echo(f"Plateau is running: dashboard and API at {address}")
            typer.echo("Press Ctrl-C to stop.")
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        dead = [name for name, child in children.items() if child.poll() is not None]
        typer.echo(f"plateau: {', '.join(dead)} stopped; shutting down", err=True)
        code = 1
    except KeyboardInterrupt:
        typer.echo("Stopping...", err=True)
        code = 0
    finally:
        stop.set()
        _stop_children(list(children.values()))
        reaper_thread.join(timeout=5)
        sweeper_thread.join(timeout=settings.webhook_timeout_seconds + 5)
    raise typer.Exit(code)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_ready(url: str, children: dict[str, subprocess.Popen]) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children.values()):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _stop_children(children: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every child (Celery: warm shutdown); SIGKILL its group after grace."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """The API and dashboard only; every request needs a key."""
    os.environ.pop("PLATEAU_LOCAL_TENANT", None)
    from app.core.config import get_settings

    get_settings.cache_clear()
    _settings()
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


def worker(
    gpu: Annotated[
        bool, typer.Option(help="Take the gpu queue too; one job per child process.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs at once.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """One Celery worker."""
    from app.db.migrate import SchemaNotCurrent
    from workers.main import run_worker

    try:
        run_worker(_settings(), gpu=gpu, concurrency=concurrency, loglevel=loglevel)
    except SchemaNotCurrent as exc:
        _fail(str(exc))


def reaper() -> None:
    """Re-queue jobs of lost workers, enqueue unsent jobs, deliver webhooks."""
    from app.core.logging import configure_logging
    from workers import deliver
    from workers.reaper import run_forever

    settings = _settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sweeper = deliver.start_sweeper(settings, stop)
    try:
        run_forever(settings, stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        stop.set()
        sweeper.join(timeout=settings.webhook_timeout_seconds + 5)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to the newest (or the given) revision."""
    _migrate("upgrade", revision)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; base: empty.")],
) -> None:
    """Revert migrations down to the given revision."""
    _migrate("downgrade", revision)


def _migrate(direction: str, revision: str) -> None:
    from app.core.logging import configure_logging
    from app.db import migrate

    settings = _settings()
    configure_logging(settings.log_level)
    getattr(migrate, direction)(settings.sqlalchemy_url, revision)
    typer.echo(f"Database is at {revision}.")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new).")],
) -> None:
    """Make a new API key; it is printed once, alone on the last line."""
    from app.db import migrate
    from app.db.session import engine_for, session_scope
    from app.services.keys import create_key

    name = tenant.strip()
    if not 1 <= len(name) <= 128:
        _fail("--tenant must be 1 to 128 characters")
    settings = _settings()
    try:
        migrate.require_current(engine_for(settings.sqlalchemy_url))
    except migrate.SchemaNotCurrent as exc:
        _fail(str(exc))
    with session_scope(settings.sqlalchemy_url) as session:
        key = create_key(session, name)
    typer.echo(f"New API key for tenant {name!r}; it is not shown again:")
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[
        str, typer.Argument(help="The key's prefix (plt_PREFIX_...), or the key.")
    ],
) -> None:
    """Revoke a key: every request made with it gets 401 from now on."""
    from app.core.security import key_prefix
    from app.db import migrate
    from app.db.session import engine_for, session_scope
    from app.services.keys import revoke_key

    # never echo a whole key back: show its prefix only
    shown = key_prefix(prefix.strip()) or prefix.strip()
    settings = _settings()
    try:
        migrate.require_current(engine_for(settings.sqlalchemy_url))
    except migrate.SchemaNotCurrent as exc:
        _fail(str(exc))
    with session_scope(settings.sqlalchemy_url) as session:
        revoked = revoke_key(session, shown)
    if not revoked:
        _fail(f"no live key has the prefix {shown!r}")
    typer.echo(f"Revoked the key with prefix {shown!r}.")
