"""Bad requests are 422 naming the field, before anything is queued; never 500."""

from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa
from conftest import DIGITS

from app.db.models import Job
from app.db.session import session_scope


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    # validation happens before the database is touched: one database is enough
    return sqlite_url


def with_change(path: str, value: object) -> dict:
    body = copy.deepcopy(DIGITS)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


BAD_BODIES = [
    # the data set reference, checked by the engine before queueing
    ("dataset.uri", with_change("dataset.uri", "nope:thing")),
    ("dataset.uri", with_change("dataset.uri", "sklearn:nothing")),
    ("dataset.uri", with_change("dataset.uri", "file:../../etc/passwd")),
    ("dataset.uri", with_change("dataset.uri", "file:/etc/passwd")),
    ("dataset.uri", with_change("dataset.uri", "file:missing.npz")),
    ("dataset.uri", with_change("dataset.uri", "file:a\x00b.npz")),
    ("dataset.uri", with_change("dataset.uri", "")),
    ("dataset.limit", with_change("dataset.limit", 1)),
    # architecture sizes: zero, negative, absurd
    ("architecture.hidden_size", with_change("architecture.hidden_size", 0)),
    ("architecture.hidden_size", with_change("architecture.hidden_size", -5)),
    ("architecture.num_layers", with_change("architecture.num_layers", 10**9)),
    ("architecture.kind", with_change("architecture.kind", "transformer")),
    (
        "architecture",
        with_change("architecture", {"hidden_size": 60000, "num_layers": 60}),
    ),
    # training and analysis numbers out of range or of the wrong type
    ("training.epochs", with_change("training.epochs", 0)),
    ("training.lr", with_change("training.lr", 0)),
    ("training.lr", with_change("training.lr", "fast")),
    ("training.batch_size", with_change("training.batch_size", 10**12)),
    ("analysis.tolerance", with_change("analysis.tolerance", -1)),
    ("analysis.permutations", with_change("analysis.permutations", 10**7)),
    ("analysis.method", with_change("analysis.method", "magic")),
    ("budget", with_change("budget", 0)),
    # unknown fields and webhooks
    ("training.momentum", with_change("training.momentum", 0.9)),
    ("webhook.url", with_change("webhook", {"url": "ftp://example.org/x"})),
    ("webhook.secret", with_change("webhook", {"url": "https://e.org", "secret": "x"})),
    ("dataset", {"architecture": {"kind": "linear"}}),
]


@pytest.mark.parametrize(("field", "body"), BAD_BODIES, ids=[f for f, _ in BAD_BODIES])
def test_a_bad_body_is_422_naming_the_field_and_nothing_is_queued(
    client, auth, settings, field, body
):
    response = client.post("/v1/jobs", json=body, headers=auth)

    assert response.status_code == 422, response.text
    locations = [".".join(map(str, e["loc"][1:])) for e in response.json()["detail"]]
    assert any(loc.startswith(field) for loc in locations), locations
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b'{"dataset": {"uri": 5}}'],
)
def test_malformed_json_is_422(client, auth, raw):
    response = client.post(
        "/v1/jobs", content=raw, headers={**auth, "Content-Type": "application/json"}
    )

    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/not-a-uuid"),
        ("GET", "/v1/jobs/not-a-uuid/curve"),
        ("GET", "/v1/jobs?status=done"),
        ("GET", "/v1/jobs?limit=0"),
        ("GET", "/v1/jobs?limit=1000"),
        ("GET", "/v1/jobs?cursor=garbage"),
        ("GET", "/v1/jobs?cursor=W10"),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000/curve?format=xml"),
    ],
)
def test_bad_parameters_are_422(client, auth, method, path):
    assert client.request(method, path, headers=auth).status_code == 422


def test_a_bad_idempotency_key_header_is_422(client, auth):
    headers = {**auth, "Idempotency-Key": "x" * 300}

    assert client.post("/v1/jobs", json=DIGITS, headers=headers).status_code == 422


def test_an_unknown_job_is_404(client, auth):
    missing = "00000000-0000-0000-0000-000000000000"

    assert client.get(f"/v1/jobs/{missing}", headers=auth).status_code == 404
