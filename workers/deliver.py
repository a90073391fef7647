"""Deliver webhook events: one signed POST per attempt, to a checked address.

Events wait in the outbox (``app/services/webhooks.py``). The worker tries
a job's events once right after the job's final commit; the sweeper
(``run_forever``, run by ``plateau reaper`` and ``plateau up``) delivers
whatever is due: first attempts the worker never made (it crashed), and
the retries.

An attempt checks the URL again (its text, then every address its host
resolves to, looked up once), then connects to a checked address itself:
httpcore is given a network backend that dials the pinned addresses in place
of the name, while the request keeps the name for its Host header and TLS
server name. httpcore follows no redirects and reads no
proxy settings. Every read, write, connect and TLS handshake waits at most
for what is left of one deadline per attempt, and the bytes read from the
receiver are capped.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import certifi
import httpcore
import sqlalchemy as sa

from app.core import ssrf
from app.core.config import Settings
from app.core.logging import job_context
from app.db.models import WebhookEvent, utcnow
from app.db.session import session_scope
from app.services import webhooks
from app.services.webhooks import DueEvent, Outcome

logger = logging.getLogger(__name__)

#: a request is written in pieces this large, each within the time left
_CHUNK = 16 * 1024


class TooLarge(Exception):
    """The receiver sent more bytes than an attempt reads."""


class _Budget:
    """What is left of one attempt: time until the deadline, and bytes."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.max_bytes = max_bytes
        self.bytes_read = 0

    def left(self, timeout: float | None, late: type[Exception]) -> float:
        """The wait allowed now: ``timeout`` cut to the deadline; raise once past it."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise late(f"the attempt's {self.seconds:g} s are up")
        return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    """A connection whose every wait is cut to the attempt's deadline and bytes."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self.inner = inner
        self.budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wait = self.budget.left(timeout, httpcore.ReadTimeout)
        allowed = self.budget.max_bytes - self.budget.bytes_read
        if allowed <= 0:
            raise TooLarge(f"the response exceeds {self.budget.max_bytes} bytes")
        data = self.inner.read(min(max_bytes, allowed), timeout=wait)
        self.budget.bytes_read += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _CHUNK):
            wait = self.budget.left(timeout, httpcore.WriteTimeout)
            self.inner.write(buffer[start : start + _CHUNK], timeout=wait)

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wait = self.budget.left(timeout, httpcore.ConnectTimeout)
        return _Stream(
            self.inner.start_tls(ssl_context, server_hostname, timeout=wait),
            self.budget,
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Dials the checked addresses of one host, whatever name httpcore asks for."""

    def __init__(self, pinned: ssrf.Pinned, budget: _Budget) -> None:
        self.pinned = pinned
        self.budget = budget
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        target = self.pinned.target
        if (host, port) != (target.host, target.port):
            # a redirect or a proxy would get here; neither is ever followed
            raise httpcore.ConnectError(f"{host}:{port} was not checked")
        error: Exception | None = None
        for address in self.pinned.addresses:
            wait = self.budget.left(timeout, httpcore.ConnectTimeout)
            try:
                stream = self.inner.connect_tcp(
                    address, port, timeout=wait, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _Stream(stream, self.budget)
        assert error is not None
        raise error


def ssl_context() -> ssl.SSLContext:
    """Certificates verified against certifi's roots (tests swap in their own CA)."""
    return ssl.create_default_context(cafile=certifi.where())


# -- one attempt ----------------------------------------------------------------------


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow: frozenset[tuple[str, int]] = frozenset(),
    timeout: float = 10.0,
    max_bytes: int = 64 * 1024,
) -> Outcome:
    """POST ``body`` to ``url`` once, through the SSRF guard; never raises."""
    budget = _Budget(timeout, max_bytes)
    try:
        target = ssrf.parse_url(url)
        pinned = ssrf.resolve(target, allow, timeout=budget.left(None, TimeoutError))
    except ssrf.ForbiddenUrl as exc:
        return Outcome(error=f"refused: {exc}", permanent=exc.permanent)
    except (ssrf.Unresolvable, TimeoutError) as exc:
        return Outcome(error=str(exc))

    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != ssrf.SCHEMES[target.scheme]:
        host += f":{target.port}"
    request_url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode(),
        port=target.port,
        target=target.path.encode(),
    )
    outcome = Outcome()
    limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    try:
        with (
            httpcore.ConnectionPool(
                ssl_context=ssl_context() if target.scheme == "https" else None,
                network_backend=PinnedBackend(pinned, budget),
                max_connections=1,
                retries=0,
            ) as pool,
            pool.stream(
                "POST",
                request_url,
                headers={"host": host, **headers},
                content=body,
                extensions={"timeout": limits},
            ) as response,
        ):
            outcome.status_code = response.status
            outcome.error = _explain(response)
            outcome.retry_after = _retry_after(response)
            _drain(response)
    except TooLarge as exc:
        failure = str(exc)
    except httpcore.TimeoutException:
        failure = f"timed out: no complete response within {timeout:g} s"
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        failure = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
    else:
        failure = None
    if outcome.status_code is None:
        outcome.error = failure
    outcome.bytes_read = budget.bytes_read
    return outcome


def _drain(response: httpcore.Response) -> None:
    """Read the body within the byte cap and the deadline; the status stands anyway.

    The body says nothing we act on, but reading it lets a receiver finish
    writing; a body that never ends stops at the cap or the deadline.
    """
    # a body cut off by the cap, the deadline, or the receiver (a broken chunk)
    with contextlib.suppress(
        TooLarge,
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
    ):
        for _chunk in response.iter_stream():
            pass


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _explain(response: httpcore.Response) -> str | None:
    status = response.status
    if 300 <= status < 400:
        where = _header(response, b"location") or "nowhere"
        return f"redirects are not followed (Location: {where[:200]})"
    if status == 410:
        return "gone: no more attempts to this URL"
    if status == 429:
        return "rate limited"
    return None


def _retry_after(response: httpcore.Response) -> float | None:
    """Seconds from ``Retry-After`` (a number or an HTTP date) on a 429 or 503."""
    if response.status not in (429, 503):
        return None
    value = (_header(response, b"retry-after") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def attempt(settings: Settings, event: DueEvent) -> str:
    """Make one claimed attempt and record it; returns what became of the event."""
    with job_context(event.job_id):
        if not _still_pending(settings, event):
            # a 410 from this URL stopped it after it was claimed
            logger.info(
                "webhook %s %s stopped before it was sent", event.type, event.webhook_id
            )
            return "gone"
        started = utcnow()
        clock = time.monotonic()
        if event.secret is None:
            outcome = Outcome(error="the job has no webhook secret", permanent=True)
        else:
            headers = webhooks.signed_headers(
                event.secret, event.webhook_id, event.body, datetime.now(timezone.utc)
            )
            outcome = post(
                event.url,
                event.body.encode(),
                headers,
                allow=settings.webhook_allowed,
                timeout=settings.webhook_timeout_seconds,
                max_bytes=settings.webhook_max_response_bytes,
            )
        duration = time.monotonic() - clock
        with session_scope(settings.sqlalchemy_url) as session:
            word = webhooks.record_attempt(
                session, settings, event, outcome, started_at=started, duration=duration
            )
        logger.info(
            "webhook %s %s attempt %d: %s (%s, %.0f ms)",
            event.type,
            event.webhook_id,
            event.attempt,
            word,
            outcome.status_code or outcome.error,
            duration * 1000,
        )
        return word


def _still_pending(settings: Settings, event: DueEvent) -> bool:
    with session_scope(settings.sqlalchemy_url) as session:
        state = session.scalar(
            sa.select(WebhookEvent.status).where(WebhookEvent.id == event.id)
        )
    return state == "pending"


# -- the sweeper ----------------------------------------------------------------------


def sweep(
    settings: Settings, *, job_id: uuid.UUID | None = None, first_only: bool = False
) -> int:
    """Attempt every due event once (of one job, when given); returns the attempts."""
    total = 0
    while True:
        with session_scope(settings.sqlalchemy_url) as session:
            due = webhooks.claim_due(
                session,
                settings,
                job_id=job_id,
                limit=4 * settings.webhook_concurrency,
                first_only=first_only,
            )
        if not due:
            return total
        if len(due) == 1 or job_id is not None:
            for event in due:
                attempt(settings, event)
        else:
            workers = min(settings.webhook_concurrency, len(due))
            with ThreadPoolExecutor(workers, thread_name_prefix="deliver") as pool:
                list(pool.map(lambda event: attempt(settings, event), due))
        total += len(due)


def deliver_job(settings: Settings, job_id: uuid.UUID) -> int:
    """First attempts at a job's events, right after its final commit."""
    return sweep(settings, job_id=job_id, first_only=True)


def run_forever(settings: Settings, stop: threading.Event) -> None:
    """Sweep every ``webhook_sweep_interval_seconds`` until ``stop`` is set."""
    interval = settings.webhook_sweep_interval_seconds
    logger.info("webhook sweeper running every %.1f s", interval)
    while not stop.is_set():
        try:
            sweep(settings)
        except sa.exc.SQLAlchemyError:
            logger.warning("sweeper: the database is unreachable", exc_info=True)
        except Exception:  # one bad event must not stop the deliveries of others
            logger.exception("sweeper: a pass failed")
        stop.wait(interval)


def start_sweeper(settings: Settings, stop: threading.Event) -> threading.Thread:
    """``run_forever`` in a daemon thread (``plateau up`` and ``plateau reaper``)."""
    thread = threading.Thread(
        target=run_forever, args=(settings, stop), name="sweeper", daemon=True
    )
    thread.start()
    return thread
