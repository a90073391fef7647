"""The SSRF guard: every forbidden form, at submission and again at send time.

At submission ``POST /v1/jobs`` answers 422 naming ``webhook.url``. At send
time the same address hides behind a name that looks harmless and resolves
to it only now (DNS rebinding): the resolver is asked once per attempt, and
no connection is made, neither to a trap on loopback nor anywhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime, timezone

import httpcore
import pytest
from hookkit import FAKE, REQUEST

from app.core import ssrf
from app.core.config import Settings
from app.db import migrate
from app.db.session import dispose_all, session_scope
from app.services import webhooks
from workers import deliver, runner


def _teredo(client: str, server: str = "65.54.227.120") -> str:
    """A Teredo address naming ``client`` (stored inverted, as Teredo does)."""
    inverted = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | inverted
    return str(ipaddress.IPv6Address(value))


#: (form, the address as a URL writes it); at send time a name resolves to it
ADDRESSES = [
    ("loopback", "127.0.0.1"),
    ("loopback (elsewhere in 127/8)", "127.8.9.10"),
    ("loopback IPv6", "::1"),
    ("private 10/8", "10.0.0.1"),
    ("private 172.16/12", "172.16.5.4"),
    ("private 192.168/16", "192.168.1.1"),
    ("link-local (cloud metadata)", "169.254.169.254"),
    ("carrier-grade NAT 100.64/10", "100.64.0.1"),
    ("multicast", "224.0.0.1"),
    ("multicast IPv6", "ff02::1"),
    ("unspecified", "0.0.0.0"),
    ("unspecified IPv6", "::"),
    ("reserved 240/4", "240.0.0.1"),
    ("broadcast", "255.255.255.255"),
    ("unique local IPv6", "fd12:3456::1"),
    ("link-local IPv6", "fe80::1"),
    ("IPv4-mapped loopback", "::ffff:127.0.0.1"),
    ("IPv4-mapped private", "::ffff:10.0.0.1"),
    ("NAT64 loopback", "64:ff9b::7f00:1"),
    ("NAT64 metadata", "64:ff9b::a9fe:a9fe"),
    ("6to4 loopback", "2002:7f00:1::1"),
    ("6to4 private", "2002:c0a8:101::1"),
    ("Teredo loopback", _teredo("127.0.0.1")),
    ("Teredo private", _teredo("192.168.1.1")),
]
#: spellings of 127.0.0.1 that some parser reads as an address
NUMERIC = ["2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001", "0177.0.0.1"]
#: URLs refused for their text alone
TEXT = [
    ("scheme ftp", "ftp://hooks.example.com/plateau"),
    ("scheme file", "file:///etc/passwd"),
    ("scheme gopher", "gopher://hooks.example.com/"),
    ("userinfo", "http://user:secret@hooks.example.com/plateau"),
    ("userinfo hiding the host", "http://hooks.example.com@127.0.0.1/plateau"),
]
PUBLIC = "93.184.215.14"


def literal_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/plateau"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator:
    """An API on its own SQLite database, with a key, and no allow-list."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.services.keys import create_key

    var = tmp_path_factory.mktemp("ssrf") / "var"
    settings = Settings(
        database_url=f"sqlite:///{var / 'plateau.sqlite'}",
        var_dir=var,
        data_dir=var.parent / "data",
        local_tenant=None,
        **FAKE,
    )
    migrate.upgrade(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        key = create_key(session, "acme")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client
    dispose_all()


def submit(api, url: str):
    return api.post("/v1/jobs", json={**REQUEST, "webhook": {"url": url}})


def refused_for_webhook_url(response) -> str:
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "webhook", "url"], error
    return error["msg"]


class Seen(list):
    """The names the guard looked up; every name resolves to ``answer``."""

    answer: list[str]


@pytest.fixture
def resolver(monkeypatch) -> Seen:
    """Swap the guard's resolver for one the test controls."""
    seen = Seen()
    seen.answer = []

    def lookup(host: str, port: int) -> list[str]:
        seen.append(host)
        return list(seen.answer)

    monkeypatch.setattr(ssrf, "lookup", lookup)
    return seen


@pytest.fixture
def connects(monkeypatch) -> list[tuple[str, int]]:
    """Every TCP connection the delivery code tries to open."""
    made: list[tuple[str, int]] = []
    real = httpcore.SyncBackend.connect_tcp

    def spy(self, host, port, *args, **kwargs):
        made.append((host, port))
        return real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", spy)
    return made


def post(url: str) -> webhooks.Outcome:
    body = '{"type":"job.succeeded"}'
    headers = webhooks.signed_headers(
        "whsec_" + "A" * 32, "msg_1", body, datetime.now(timezone.utc)
    )
    return deliver.post(url, body.encode(), headers, timeout=2.0)


# -- at submission ---------------------------------------------------------------------


@pytest.mark.parametrize(("form", "address"), ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_a_forbidden_address_is_refused_at_submission(api, trap, form, address):
    message = refused_for_webhook_url(submit(api, literal_url(address, trap.port)))

    assert "public addresses" in message
    assert trap.connections == 0


@pytest.mark.parametrize("spelling", NUMERIC)
def test_a_numeric_spelling_is_refused_at_submission(api, spelling):
    message = refused_for_webhook_url(submit(api, f"http://{spelling}:8080/plateau"))

    assert "numeric spelling" in message


@pytest.mark.parametrize(("form", "url"), TEXT, ids=[t[0] for t in TEXT])
def test_a_scheme_or_userinfo_is_refused_at_submission(api, form, url):
    refused_for_webhook_url(submit(api, url))


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_at_submission(
    api, resolver
):
    resolver.answer[:] = [PUBLIC, "10.1.2.3"]  # every address is checked

    message = refused_for_webhook_url(submit(api, "https://hooks.example.com/p"))

    assert "resolves to 10.1.2.3, private" in message
    assert resolver == ["hooks.example.com"]


def test_localhost_is_refused_at_submission(api):
    message = refused_for_webhook_url(submit(api, "http://localhost:9/plateau"))

    assert "loopback" in message


def test_public_addresses_and_names_that_do_not_resolve_yet_are_accepted(api):
    # no connection is made at submission: the address is only checked
    for url in (f"https://{PUBLIC}/plateau", "https://hooks.invalid/plateau"):
        response = submit(api, url)
        assert response.status_code == 202, response.text
        assert response.json()["webhook"]["secret"].startswith("whsec_")


# -- at send time ---------------------------------------------------------------------


@pytest.mark.parametrize(("form", "address"), ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_a_name_rebound_to_a_forbidden_address_is_refused_at_send_time(
    trap, resolver, connects, form, address
):
    resolver.answer[:] = [address]

    outcome = post(f"http://hooks.example.com:{trap.port}/plateau")

    assert outcome.status_code is None and outcome.error.startswith("refused:")
    assert f"resolves to {ipaddress.ip_address(address)}" in outcome.error
    assert not outcome.permanent  # the name may resolve elsewhere later
    assert resolver == ["hooks.example.com"]  # one lookup per attempt
    assert connects == [] and trap.connections == 0


@pytest.mark.parametrize(("form", "address"), ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_a_stored_forbidden_address_is_refused_at_send_time(
    trap, resolver, connects, form, address
):
    outcome = post(literal_url(address, trap.port))

    assert outcome.error.startswith("refused:") and "public addresses" in outcome.error
    assert resolver == [] and connects == [] and trap.connections == 0


@pytest.mark.parametrize("spelling", NUMERIC)
def test_a_numeric_spelling_is_refused_at_send_time(trap, resolver, connects, spelling):
    outcome = post(f"http://{spelling}:{trap.port}/plateau")

    assert "numeric spelling" in outcome.error and outcome.permanent
    assert resolver == [] and connects == [] and trap.connections == 0


@pytest.mark.parametrize(("form", "url"), TEXT, ids=[t[0] for t in TEXT])
def test_a_scheme_or_userinfo_is_refused_at_send_time(resolver, connects, form, url):
    outcome = post(url)

    assert outcome.error.startswith("refused:") and outcome.permanent
    assert resolver == [] and connects == []


def test_only_the_listed_host_and_port_is_allowed_on_loopback(receiver, resolver):
    allowed = frozenset({("127.0.0.1", receiver.port)})
    body, headers = b"{}", {"webhook-id": "msg_1"}

    listed = deliver.post(receiver.url, body, headers, allow=allowed, timeout=2)
    other = deliver.post(
        f"http://127.0.0.1:{receiver.port + 1}/", body, headers, allow=allowed
    )

    assert listed.status_code == 204
    assert other.error.startswith("refused:") and "loopback" in other.error


def test_a_rebinding_name_is_refused_through_the_outbox_and_the_attempt_recorded(
    hook_settings, submit, trap, resolver, connects
):
    # accepted when it pointed at a public address, then rebound to loopback
    resolver.answer[:] = [PUBLIC]
    ssrf.check(
        f"http://rebind.example.com:{trap.port}/p", hook_settings.webhook_allowed
    )
    job_id = submit(url=f"http://rebind.example.com:{trap.port}/p")
    resolver.answer[:] = ["127.0.0.1"]
    resolver.clear()
    runner.execute(hook_settings, job_id)

    with session_scope(hook_settings.sqlalchemy_url) as session:
        (row,) = webhooks.deliveries(session, job_id)
    assert row.outcome == "retrying" and row.status_code is None
    assert row.error.startswith("refused: rebind.example.com resolves to 127.0.0.1")
    assert resolver == ["rebind.example.com"]
    assert connects == [] and trap.connections == 0


def test_production_refuses_the_allow_list_and_the_crash_hook():
    with pytest.raises(ValueError, match="WEBHOOK_ALLOW_PRIVATE"):
        Settings(env="production", webhook_allow_private="127.0.0.1:9000")
    with pytest.raises(ValueError, match="CRASH_BEFORE_DELIVERY"):
        Settings(env="production", test_crash_before_delivery=True)
