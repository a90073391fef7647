"""The submit form goes through the API's own route, as `plateau up`'s tenant."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from web_helpers import csrf_of

from app.web import forms


@pytest.fixture
def local(make_settings) -> Iterator:
    """A client of the keyless local tenant, as under ``plateau up``."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(make_settings(local_tenant="local"))) as client:
        yield client


def post_form(client, values: dict[str, str], **extra: str):
    token = csrf_of(client.get("/jobs/new").text)
    return client.post(
        "/jobs/new",
        data={"csrf_token": token, **values, **extra},
        follow_redirects=False,
    )


def field_errors(html: str) -> dict[str, str]:
    """Field id → the message shown beside it."""
    found = re.findall(
        r'<p class="field-error" id="f-([\w-]+)-error">([^<]*)</p>', html
    )
    return {field: unescape(message) for field, message in found}


def api_messages(client, body: dict) -> dict[str, str]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    return {
        "-".join(str(p) for p in d["loc"][1:]).replace(".", "-"): d["msg"]
        for d in response.json()["detail"]
    }


def test_a_form_makes_the_same_job_as_the_same_request_to_the_api(local):
    body = {
        "dataset": {"uri": "sklearn:iris", "limit": 100},
        "architecture": {"kind": "mlp", "hidden_size": 8, "num_layers": 2},
        "training": {"epochs": 3, "lr": 0.01},
        "analysis": {"method": "hessian", "tolerance": 0.001, "permutations": 20},
        "budget": 5000,
    }
    values = {
        "dataset.uri": "sklearn:iris",
        "dataset.limit": "100",
        "architecture.kind": "mlp",
        "architecture.hidden_size": "8",
        "architecture.num_layers": "2",
        "architecture.channels": "not, numbers",  # a cnn's field: ignored for mlp
        "training.epochs": "3",
        "training.lr": "1e-2",
        "analysis.method": "hessian",
        "analysis.tolerance": "0.001",
        "analysis.permutations": "20",
        "budget": "5000",
    }
    via_api = local.post("/v1/jobs", json=body).json()

    response = post_form(local, values)

    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[1]
    via_form = local.get(f"/v1/jobs/{job_id}").json()
    assert via_form["request"] == via_api["request"]
    assert via_form["status"] == "queued"


@pytest.mark.parametrize(
    ("values", "body"),
    [
        (
            {"dataset.uri": "sklearn:digits", "analysis.tolerance": "-1"},
            {"dataset": {"uri": "sklearn:digits"}, "analysis": {"tolerance": -1}},
        ),
        (
            {"dataset.uri": "sklearn:digits", "budget": "0", "training.seed": "-3"},
            {
                "dataset": {"uri": "sklearn:digits"},
                "budget": 0,
                "training": {"seed": -3},
            },
        ),
        (
            {"dataset.uri": "file:../outside.npz"},
            {"dataset": {"uri": "file:../outside.npz"}},
        ),
    ],
)
def test_the_form_shows_the_apis_422_messages_beside_their_fields(local, values, body):
    expected = api_messages(local, body)

    response = post_form(local, values)

    assert response.status_code == 422
    assert field_errors(response.text) == expected
    for name, value in values.items():  # what was typed is kept
        assert f'name="{name}" value="{value}"' in response.text


def test_a_network_over_the_parameter_limit_is_refused_beside_the_architecture(local):
    body = {
        "dataset": {"uri": "sklearn:digits"},
        "architecture": {"hidden_size": 65536},
    }
    (message,) = api_messages(local, body).values()

    response = post_form(
        local, {"dataset.uri": "sklearn:digits", "architecture.hidden_size": "65536"}
    )

    assert field_errors(response.text) == {"architecture-kind": message}


def test_text_where_a_number_belongs_is_refused_not_defaulted(local):
    response = post_form(
        local, {"dataset.uri": "sklearn:digits", "training.epochs": "ten"}
    )

    assert response.status_code == 422
    assert "valid integer" in field_errors(response.text)["training-epochs"]
    assert 'id="error-summary"' in response.text


def test_a_form_sent_twice_makes_one_job(local):
    token = csrf_of(local.get("/jobs/new").text)
    data = {
        "csrf_token": token,
        "dataset.uri": "sklearn:digits",
        "idempotency_key": "k1",
    }

    first = local.post("/jobs/new", data=data, follow_redirects=False)
    second = local.post("/jobs/new", data=data, follow_redirects=False)

    assert first.headers["location"] == second.headers["location"]
    assert len(local.get("/v1/jobs").json()["items"]) == 1


def test_run_again_fills_the_form_from_a_job(local):
    made = local.post(
        "/v1/jobs",
        json={"dataset": {"uri": "sklearn:wine"}, "training": {"epochs": 4}},
    ).json()

    form = local.get(f"/jobs/new?from={made['id']}").text

    assert 'name="dataset.uri" value="sklearn:wine"' in form
    assert 'name="training.epochs" value="4"' in form


def test_the_local_tenant_needs_no_key_and_its_pages_show_the_job(local):
    job_id = local.post("/v1/jobs", json={"dataset": {"uri": "sklearn:digits"}}).json()[
        "id"
    ]

    listing = local.get("/")
    page = local.get(f"/jobs/{job_id}")
    fragment = local.get(f"/fragments/jobs/{job_id}")

    assert listing.status_code == page.status_code == fragment.status_code == 200
    assert "local workspace" in listing.text and job_id in listing.text
    assert (
        "Waiting for a worker" in fragment.text and 'hx-trigger="every' in fragment.text
    )
    assert "Authorization" not in page.text  # the curl needs no key here
    token = csrf_of(page.text)
    cancel = local.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 200 and 'data-status="cancelled"' in cancel.text
    ended = local.get(f"/fragments/jobs/{job_id}").text
    assert "hx-trigger" not in ended  # an ended job stops polling


def test_form_values_map_422_locations_to_fields():
    assert forms.field_for("architecture.channels.1") == "architecture.channels"
    assert forms.field_for("architecture") == "architecture.kind"
    assert forms.field_for("training") is None
    assert forms.to_body(
        {"architecture.kind": "linear", "architecture.hidden_size": "9"}
    ) == {"architecture": {"kind": "linear"}}
