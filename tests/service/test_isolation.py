"""Another tenant's job is 404 on every route, and never listed."""

from __future__ import annotations

from conftest import DIGITS
from test_api_jobs import routes


def test_tenant_b_gets_404_for_tenant_a_jobs_on_every_route(client, new_key):
    alice, bob = new_key("alice"), new_key("bob")
    job_id = client.post("/v1/jobs", json=DIGITS, headers=alice).json()["id"]

    for method, path in routes(job_id):
        if path in ("/v1/jobs",):
            continue
        response = client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": "job not found"}

    assert client.get("/v1/jobs", headers=bob).json()["items"] == []
    # and bob's cancel did nothing to alice's job
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "queued"


def test_the_same_idempotency_key_in_two_tenants_makes_two_jobs(client, new_key):
    alice, bob = new_key("alice"), new_key("bob")
    key = {"Idempotency-Key": "shared-key"}

    a = client.post("/v1/jobs", json=DIGITS, headers={**alice, **key}).json()
    b = client.post("/v1/jobs", json=DIGITS, headers={**bob, **key}).json()

    assert a["id"] != b["id"]
