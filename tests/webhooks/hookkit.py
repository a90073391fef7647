"""A webhook receiver on loopback that checks every delivery, and a trap port.

The receiver is a threaded ``http.server`` on 127.0.0.1 (port from the OS).
Each POST is recorded with its arrival time and checked with the
``standardwebhooks`` library; what it answers comes from a script of
behaviours, one per request, then ``default``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

#: the secret the tests give their jobs
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

#: the fake engine, whose verdict follows ``analysis.tolerance`` (``hookfakes``)
FAKE = {
    "analyze_function": "hookfakes:analyze",
    "validate_function": "hookfakes:validate",
}
#: a small request: not sufficient under the fake engine, no budget
REQUEST = {
    "dataset": {"uri": "sklearn:digits"},
    "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 3},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.001, "seed": 0},
    "analysis": {"method": "point", "tolerance": 0.001, "permutations": 10},
}
#: the same request with a tolerance the fake engine calls sufficient
SUFFICIENT = {**REQUEST, "analysis": {**REQUEST["analysis"], "tolerance": 0.05}}

Behaviour = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Delivery:
    """One POST the receiver got."""

    received_at: float  # time.time()
    headers: dict[str, str]
    body: bytes
    #: the verified payload; None when verification failed
    payload: dict[str, Any] | None
    error: str | None

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str | None:
        return self.payload["type"] if self.payload else None


def status(code: int, **headers: str) -> Behaviour:
    """Answer ``code`` with an empty body and ``headers``."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


@dataclass
class Receiver:
    """The receiving end of a webhook; ``url`` is where it listens."""

    secret: str = SECRET
    #: serve HTTPS with this context (the URL then names ``host``)
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    script: list[Behaviour] = field(default_factory=list)
    default: Behaviour = field(default_factory=lambda: status(204))
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver._record(dict(self.headers.items()), body)
                with receiver._lock:
                    behaviour = (
                        receiver.script.pop(0) if receiver.script else receiver.default
                    )
                # the client may hang up first: the point of some behaviours
                with contextlib.suppress(OSError):
                    behaviour(self)
                self.close_connection = True

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._lock = threading.Lock()
        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        scheme = "http"
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(
                self._server.socket, server_side=True
            )
            scheme = "https"
        self.url = f"{scheme}://{self.host}:{self.port}/hooks/plateau"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self._thread.start()

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        headers = {key.lower(): value for key, value in headers.items()}
        try:
            payload = Webhook(self.secret).verify(body, headers)
            error = None
        except WebhookVerificationError as exc:
            payload, error = None, str(exc)
        with self._lock:
            self.deliveries.append(Delivery(time.time(), headers, body, payload, error))

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """Wait until ``count`` deliveries arrived; all of them so far."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.deliveries)} of {count} deliveries after {timeout} s"
                )
            time.sleep(0.02)
        return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Trap:
    """A port that only counts the connections made to it (there should be none)."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.05)
        self.port = self._socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


def payloads(deliveries: list[Delivery]) -> dict[str, dict[str, Any]]:
    """Verified payloads by event type; fails on any delivery that did not verify."""
    bad = [d.error for d in deliveries if d.payload is None]
    assert not bad, bad
    return {d.type: d.payload for d in deliveries}  # type: ignore[misc]


def body_of(delivery: Delivery) -> dict[str, Any]:
    return json.loads(delivery.body)
