"""One attempt on the wire: deadlines, byte caps, signatures, TLS to a pinned address.

``deliver.post`` is what every attempt goes through; these tests call it
against receivers on loopback that misbehave on purpose.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler

import pytest
from hookkit import SECRET, Receiver
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.core import ssrf
from app.services import webhooks
from workers import deliver

DEADLINE = 1.0
CAP = 8 * 1024
#: the slack a shared two-core machine needs on top of the deadline
SLACK = 1.5


@pytest.fixture
def misbehaving():
    servers: list[Receiver] = []

    def make(behaviour) -> Receiver:
        server = Receiver(default=behaviour)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def send(receiver: Receiver, **options) -> tuple[webhooks.Outcome, float]:
    body = b'{"type":"job.succeeded"}'
    headers = webhooks.signed_headers(
        SECRET, "msg_1", body.decode(), datetime.now(timezone.utc)
    )
    started = time.monotonic()
    outcome = deliver.post(
        receiver.url,
        body,
        headers,
        allow=frozenset({("127.0.0.1", receiver.port)}),
        timeout=options.get("timeout", DEADLINE),
        max_bytes=options.get("max_bytes", CAP),
    )
    return outcome, time.monotonic() - started


def _slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(DEADLINE + 3)
    handler.send_response(200)
    handler.end_headers()


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    # a byte every 0.1 s: no single read ever waits long, only the total does
    stop = time.monotonic() + 20
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 1000:
        if time.monotonic() > stop:
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.1)


def _endless_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    stop = time.monotonic() + 20
    while time.monotonic() < stop:
        handler.wfile.write(chunk)


def _endless_headers(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    stop = time.monotonic() + 20
    line = 0
    while time.monotonic() < stop:
        line += 1
        handler.wfile.write(b"X-Pad-%d: %s\r\n" % (line, b"y" * 200))


def test_a_slow_receiver_is_cut_off_at_the_deadline(misbehaving):
    outcome, took = send(misbehaving(_slow))

    assert outcome.status_code is None
    assert outcome.error.startswith("timed out")
    assert DEADLINE - 0.05 <= took < DEADLINE + SLACK


def test_a_trickling_receiver_is_cut_off_by_the_total_deadline_not_per_read(
    misbehaving,
):
    outcome, took = send(misbehaving(_trickle))

    assert outcome.status_code is None and outcome.error.startswith("timed out")
    assert DEADLINE - 0.05 <= took < DEADLINE + SLACK
    assert 0 < outcome.bytes_read < 40  # about ten bytes a second


def test_a_body_that_never_ends_is_read_up_to_the_cap(misbehaving):
    outcome, took = send(misbehaving(_endless_body))

    # the status came first, so the receiver did answer 200
    assert outcome.status_code == 200 and outcome.delivered
    assert outcome.bytes_read == CAP
    assert took < DEADLINE + SLACK


def test_headers_that_never_end_fail_at_the_cap(misbehaving):
    outcome, took = send(misbehaving(_endless_headers))

    assert outcome.status_code is None
    assert f"exceeds {CAP} bytes" in outcome.error
    assert outcome.bytes_read == CAP
    assert took < DEADLINE + SLACK


def test_nothing_listening_is_an_error_not_an_exception(misbehaving):
    receiver = misbehaving(lambda handler: None)
    receiver.close()

    outcome, _ = send(receiver)

    assert outcome.status_code is None and outcome.error


# -- signatures (the receiver's side of Standard Webhooks) ----------------------------


@pytest.mark.parametrize(
    ("case", "accepted"),
    [("valid", True), ("tampered", False), ("stale", False), ("rotated", False)],
)
def test_signatures_verify_with_the_standardwebhooks_library(case, accepted):
    body = '{"type":"job.succeeded","data":{"job_id":"j"}}'
    now = datetime.now(timezone.utc)
    when = now - timedelta(minutes=10) if case == "stale" else now
    headers = webhooks.signed_headers(SECRET, "msg_abc", body, when)
    if case == "tampered":
        body = body.replace('"j"', '"k"')
    secret = "whsec_" + "A" * 32 if case == "rotated" else SECRET

    try:
        Webhook(secret).verify(body, headers)
        verified = True
    except WebhookVerificationError:
        verified = False

    assert verified is accepted
    assert headers["webhook-signature"].startswith("v1,")


# -- TLS: the name on the wire, the checked address on the socket ----------------------


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


def test_https_connects_to_the_checked_address_with_the_original_name_for_sni(
    certificate, monkeypatch
):
    key, cert = certificate
    names: list[str] = []
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server_side.sni_callback = lambda _sock, name, _ctx: names.append(name)
    receiver = Receiver(tls=server_side, host="hooks.test")
    lookups: list[str] = []

    def lookup(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(ssrf, "lookup", lookup)
    monkeypatch.setattr(
        deliver, "ssl_context", lambda: ssl.create_default_context(cafile=cert)
    )
    try:
        outcome, _ = send(receiver, timeout=5)
    finally:
        receiver.close()

    assert outcome.status_code == 204, outcome.error
    assert lookups == ["hooks.test"] and names == ["hooks.test"]
    (delivery,) = receiver.deliveries
    assert delivery.headers["host"] == f"hooks.test:{receiver.port}"
    assert delivery.payload == {"type": "job.succeeded"}
