"""Unreachable services: 503 with Retry-After from the API, failures under CI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import DIGITS, HERE, REPO

from app.main import create_app


def test_a_database_outage_is_503_with_retry_after_never_500(make_settings):
    from fastapi.testclient import TestClient

    settings = make_settings(
        database_url="postgresql://nobody@127.0.0.1:1/none", local_tenant="local"
    )
    client = TestClient(create_app(settings))  # no lifespan: it would refuse to start

    ready = client.get("/readyz")
    submitted = client.post("/v1/jobs", json=DIGITS)
    listed = client.get(
        "/v1/jobs", headers={"Authorization": "Bearer plt_000000000000_secret"}
    )

    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    for response in (submitted, listed):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("variable", "test"),
    [
        (
            "PLATEAU_TEST_POSTGRES_PORT",
            "test_migrations.py::test_models_and_migrations_agree_on_postgresql",
        ),
        ("PLATEAU_TEST_REDIS_PORT", "test_e2e_postgres_redis.py"),
    ],
)
def test_under_ci_an_unreachable_service_fails_the_tests_instead_of_skipping(
    variable, test
):
    env = {**os.environ, "CI": "true", variable: "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE / test),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 1, run.stdout[-2000:]
    assert "CI=true: services are required" in run.stdout
    assert " skipped" not in run.stdout.splitlines()[-1]
