"""Isolation (RELIABILITY.md tests 24 and 25): ids, dumps and revoked keys.

Test 24 takes every route and method from the OpenAPI document itself, so a
route added later is covered without touching this file, and tries each
with another tenant's job in every status. The contract's version of it is
tests/service/test_isolation.py (404 on the contract's routes, same
Idempotency-Key in two tenants).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from harness import REPO, record
from plateau_service import seed_jobs

from app.db.session import session_scope
from app.services.keys import create_key

pytestmark = pytest.mark.slow


@pytest.fixture
def tenants(service):
    """Keys of two tenants and a job of the first in every status; an API."""
    with session_scope(service.url) as session:
        alice, bob = create_key(session, "alice"), create_key(session, "bob")
    return {
        "alice": alice,
        "bob": bob,
        "jobs": seed_jobs(service.url, "alice"),
        "api": service.api(),
    }


def operations(schema: dict) -> list[tuple[str, str]]:
    """(method, path template) of every operation that takes a job id."""
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if "{job_id}" in path
    ]


def test_24_tenant_b_gets_nothing_of_tenant_a_on_any_route(tenants):
    api, jobs = tenants["api"], tenants["jobs"]
    as_alice = {"Authorization": f"Bearer {tenants['alice']}"}
    as_bob = {"Authorization": f"Bearer {tenants['bob']}"}
    leaks: list[tuple] = []
    tried = 0
    with httpx.Client(base_url=api.url, timeout=30) as http:
        schema = http.get("/openapi.json").json()
        before = {
            j: http.get(f"/v1/jobs/{j}", headers=as_alice).json() for j in jobs.values()
        }
        for method, template in operations(schema):
            for status, job_id in jobs.items():
                for suffix in ("", "?format=csv"):
                    path = template.replace("{job_id}", job_id) + suffix
                    response = http.request(method, path, headers=as_bob)
                    tried += 1
                    if response.status_code != 404 or _mentions(response, jobs):
                        leaks.append((method, path, status, response.status_code))
        # listings: every status filter, and a cursor taken from alice's pages
        cursor = http.get("/v1/jobs?limit=1", headers=as_alice).json()["next_cursor"]
        for query in ["", "?limit=100", f"?cursor={cursor}"] + [
            f"?status={s}" for s in jobs
        ]:
            response = http.get(f"/v1/jobs{query}", headers=as_bob)
            tried += 1
            if response.status_code != 200 or response.json()["items"]:
                leaks.append(("GET", f"/v1/jobs{query}", "list", response.status_code))
        after = {
            j: http.get(f"/v1/jobs/{j}", headers=as_alice).json() for j in jobs.values()
        }

    assert operations(schema), "the schema lists no route with a job id"
    assert leaks == []
    assert after == before, "bob's requests changed alice's jobs"
    record(
        "24",
        requests=tried,
        routes=len(operations(schema)) + 1,
        statuses=sorted(jobs),
        leaks=len(leaks),
    )


def _mentions(response: httpx.Response, jobs: dict[str, str]) -> bool:
    return any(job_id in response.text for job_id in jobs.values())


def test_25_a_database_dump_holds_no_key_and_a_revoked_key_gets_401(
    service, tenants, tmp_path
):
    api = tenants["api"]
    env = {**os.environ, "PLATEAU_DATABASE_URL": service.url}
    env = {k: v for k, v in env.items() if k != "PLATEAU_LOCAL_TENANT"}
    created = _cli(["keys", "create", "--tenant", "carol"], env)
    carol = created.stdout.strip().splitlines()[-1]
    keys = [tenants["alice"], tenants["bob"], carol]
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for key in keys:  # used once each, so a key logged or stored would show
            ok = http.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200

        dump = _dump(service.url, tmp_path / "dump.sql")
        found = [key for key in keys if _secret(key) in dump or key in dump]

        prefix = carol.split("_")[1]
        revoked = _cli(["keys", "revoke", prefix], env)
        again = _cli(["keys", "revoke", prefix], env, check=False)
        as_carol = http.get("/v1/jobs", headers={"Authorization": f"Bearer {carol}"})
        as_alice = http.get(
            "/v1/jobs", headers={"Authorization": f"Bearer {tenants['alice']}"}
        )

    logs = "".join(p.read_text(errors="replace") for p in service.folder.glob("*.log"))
    assert found == []
    assert not any(_secret(key) in logs for key in keys), "a key is in a log"
    assert prefix in revoked.stdout and carol not in revoked.stdout
    assert again.returncode == 2
    assert as_carol.status_code == 401
    assert as_carol.headers["www-authenticate"] == "Bearer"
    assert as_alice.status_code == 200
    with session_scope(service.url) as session:
        hashes = session.scalars(sa.text("SELECT key_hash FROM api_keys")).all()
    assert len(hashes) == 3 and all(len(h) == 64 for h in hashes)
    record(
        "25",
        dump_bytes=len(dump),
        keys_searched=len(keys),
        plaintext_keys_in_dump=len(found),
        revoked_key_status=as_carol.status_code,
        other_key_status=as_alice.status_code,
    )


def _cli(argv: list[str], env: dict, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert run.returncode == 0, run.stderr
    return run


def _secret(key: str) -> str:
    """The part of a key after its public prefix."""
    return key.split("_", 2)[2]


def _dump(url: str, path: Path) -> str:
    """``pg_dump`` of the database as SQL text (or every text column, without it)."""
    parsed = sa.make_url(url)
    pg_dump = _pg_dump()
    if pg_dump is not None:
        subprocess.run(
            [
                pg_dump,
                "-h",
                parsed.host or "127.0.0.1",
                "-p",
                str(parsed.port or 5432),
                "-U",
                parsed.username or "postgres",
                "-f",
                str(path),
                parsed.database or "",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return path.read_text(errors="replace")
    with session_scope(url) as session:
        tables = (
            session.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public'"
                )
            )
            .scalars()
            .all()
        )
        rows = [
            json.dumps(
                [
                    list(map(str, r))
                    for r in session.execute(sa.text(f'SELECT * FROM "{table}"')).all()
                ]
            )
            for table in tables
        ]
    return "\n".join(rows)


def _pg_dump() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    return str(found[-1]) if found else shutil.which("pg_dump")
