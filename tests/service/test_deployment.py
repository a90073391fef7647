"""docker-compose.yml and the Dockerfile, checked by parsing (no Docker here)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_services_of_a_deployment(compose):
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "scheduler",
    }


def test_each_role_runs_its_plateau_command_from_one_image(compose):
    services = compose["services"]
    commands = {
        name: services[name]["command"]
        for name in ("migrate", "api", "worker", "scheduler")
    }

    assert commands["migrate"] == ["plateau", "db", "upgrade"]
    assert commands["api"][:2] == ["plateau", "serve"]
    assert commands["worker"] == ["plateau", "worker", "--gpu"]
    assert commands["scheduler"] == ["plateau", "reaper"]
    images = {services[name]["image"] for name in commands}
    assert images == {"plateau:latest"}


def test_services_start_in_order(compose):
    services = compose["services"]

    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}
    }
    for name in ("api", "worker", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_long_running_services_have_health_checks(compose):
    for name in ("postgres", "redis", "api", "worker", "scheduler"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["interval"] and check["retries"] >= 3
    assert "/readyz" in " ".join(compose["services"]["api"]["healthcheck"]["test"])


def test_the_worker_reserves_a_gpu_and_points_at_postgres_and_redis(compose):
    worker = compose["services"]["worker"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]

    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = worker["environment"]
    assert env["PLATEAU_DATABASE_URL"].startswith("postgresql://")
    assert env["PLATEAU_BROKER_URL"].startswith("redis://redis:6379")
    assert env["PLATEAU_ENV"] == "production"


def test_the_dockerfile_builds_one_image_that_serves_the_api():
    lines = (REPO / "Dockerfile").read_text().splitlines()
    instructions = [line.split()[0] for line in lines if line and line[0].isupper()]

    assert instructions[0] == "FROM"
    assert "USER" in instructions and "HEALTHCHECK" in instructions
    cmd = next(line for line in lines if line.startswith("CMD"))
    assert json.loads(cmd.removeprefix("CMD "))[:2] == ["plateau", "serve"]
    assert ".venv" in (REPO / ".dockerignore").read_text()
