"""The /v1/jobs routes against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from conftest import DIGITS

from app.db.models import Job
from app.db.session import session_scope


def submit(client, auth, body=None, **headers):
    return client.post("/v1/jobs", json=body or DIGITS, headers={**auth, **headers})


def test_submit_answers_202_with_a_queued_job(client, auth, settings):
    response = submit(client, auth)

    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert job["progress"] == {"stage": None, "fraction": 0.0}
    assert job["request"]["dataset"]["uri"] == "sklearn:digits"
    assert job["request"]["training"]["epochs"] == 2
    assert job["result"] is None and job["error"] is None
    # enqueued after the commit (a background task of the response)
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(Job, uuid.UUID(job["id"]))
        assert row.enqueued_at is not None
        assert row.queue == settings.queue


def test_a_cuda_job_goes_to_the_gpu_queue(client, auth, settings):
    body = {**DIGITS, "training": {**DIGITS["training"], "device": "cuda"}}
    job = submit(client, auth, body).json()

    with session_scope(settings.sqlalchemy_url) as session:
        assert session.get(Job, uuid.UUID(job["id"])).queue == settings.gpu_queue


def test_get_returns_the_job(client, auth):
    job = submit(client, auth).json()

    response = client.get(f"/v1/jobs/{job['id']}", headers=auth)

    assert response.status_code == 200
    assert response.json()["id"] == job["id"]


def test_list_is_newest_first_with_a_cursor_and_a_status_filter(client, auth):
    ids = [submit(client, auth).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth)

    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=auth).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == ids[::-1]
    cancelled = client.get("/v1/jobs?status=cancelled", headers=auth).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    queued = client.get("/v1/jobs?status=queued", headers=auth).json()
    assert len(queued["items"]) == 4


def test_cancel_of_a_queued_job_is_final_and_it_never_starts(client, auth, settings):
    from workers import claims

    job = submit(client, auth).json()

    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"
    assert claims.claim(settings.sqlalchemy_url, uuid.UUID(job["id"]), 30) is None
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 409


def test_cancel_of_a_running_job_sets_the_flag(client, auth, settings):
    from workers import claims

    job = submit(client, auth).json()
    claim = claims.claim(settings.sqlalchemy_url, uuid.UUID(job["id"]), 30)
    assert claim is not None

    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert claims.renew(settings.sqlalchemy_url, claim, 30) is True


def test_curve_is_empty_until_the_job_succeeds(client, auth):
    job = submit(client, auth).json()

    assert client.get(f"/v1/jobs/{job['id']}/curve", headers=auth).json() == {
        "points": []
    }
    csv = client.get(f"/v1/jobs/{job['id']}/curve?format=csv", headers=auth)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == [
        "k,delta,delta_low,delta_high,delta_expected,smoothed"
    ]
    png = client.get(f"/v1/jobs/{job['id']}/curve.png", headers=auth)
    assert png.status_code == 409


def test_curve_of_a_finished_job_as_json_csv_and_png(client, auth, settings):
    from workers import claims

    job = submit(client, auth).json()
    claim = claims.claim(settings.sqlalchemy_url, uuid.UUID(job["id"]), 30)
    result = {
        "method": "point",
        "sample_size": 100,
        "tolerance": 1e-4,
        "final_delta": 0.01,
        "sufficient": False,
        "projected_size": 500,
        "train": {"loss": 0.1, "accuracy": 0.9, "epochs": 2, "seconds": 1.0},
        "parameters": 10,
        "device": "cpu",
        "timings": {},
        "details": {},
    }
    points = [
        {"k": k, "delta": 1 / k, "smoothed": 1 / k, "delta_low": float("nan")}
        for k in (1, 2, 3)
    ]
    claims.finish(
        settings.sqlalchemy_url, claim, "succeeded", result=result, curve=points
    )

    curve = client.get(f"/v1/jobs/{job['id']}/curve", headers=auth).json()["points"]
    assert [p["k"] for p in curve] == [1, 2, 3]
    assert curve[1]["delta"] == 0.5 and curve[1]["delta_low"] is None
    csv = client.get(f"/v1/jobs/{job['id']}/curve?format=csv", headers=auth).text
    assert csv.splitlines()[2] == "2,0.5,,,,0.5"
    png = client.get(f"/v1/jobs/{job['id']}/curve.png", headers=auth)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


def test_deliveries_are_an_empty_list_for_now(client, auth):
    job = submit(client, auth).json()

    response = client.get(f"/v1/jobs/{job['id']}/deliveries", headers=auth)

    assert response.status_code == 200
    assert response.json() == []


def test_without_a_valid_key_every_route_is_401(client, auth):
    job_id = submit(client, auth).json()["id"]
    bad_keys = [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Bearer plt_000000000000_" + "x" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ]
    for headers in bad_keys:
        for method, path in routes(job_id):
            response = client.request(method, path, headers=headers, json=DIGITS)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_401(client, auth, settings):
    from app.db.models import ApiKey, utcnow

    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(sa.update(ApiKey).values(revoked_at=utcnow()))

    assert client.get("/v1/jobs", headers=auth).status_code == 401


def test_the_local_tenant_needs_no_key(make_settings, sqlite_url):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(database_url=sqlite_url, local_tenant="local")
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", json=DIGITS)
        assert job.status_code == 202
        assert client.get("/v1/jobs").json()["items"][0]["id"] == job.json()["id"]


def test_every_route_has_a_one_line_docstring_in_openapi(client):
    schema = client.get("/openapi.json").json()

    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert len(operations) >= 8
    for operation in operations:
        assert operation.get("description"), operation["operationId"]
        assert "\n" not in operation["description"].strip()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_is_503_when_the_broker_is_unreachable(make_settings, sqlite_url):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(
        database_url=sqlite_url, broker_url="redis://127.0.0.1:1/0"
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["checks"]["broker"].startswith("unreachable")


def routes(job_id: str) -> list[tuple[str, str]]:
    """Every route of the contract that takes a key."""
    return [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/curve"),
        ("GET", f"/v1/jobs/{job_id}/curve?format=csv"),
        ("GET", f"/v1/jobs/{job_id}/curve.png"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/deliveries"),
    ]
