"""Idempotency-Key: one job per key and body, even under concurrent requests."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa
from conftest import DIGITS

from app.db.models import Job
from app.db.session import session_scope
from app.main import create_app


def test_a_repeated_key_returns_the_same_job(client, auth):
    headers = {**auth, "Idempotency-Key": "order-42"}

    first = client.post("/v1/jobs", json=DIGITS, headers=headers)
    second = client.post("/v1/jobs", json=DIGITS, headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]


def test_the_same_key_with_another_body_is_422(client, auth):
    headers = {**auth, "Idempotency-Key": "order-43"}
    client.post("/v1/jobs", json=DIGITS, headers=headers)

    other = {**DIGITS, "budget": 5000}
    response = client.post("/v1/jobs", json=other, headers=headers)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_the_generated_webhook_secret_is_shown_once(client, auth):
    body = {**DIGITS, "webhook": {"url": "https://example.org/hook"}}
    headers = {**auth, "Idempotency-Key": "hooked"}

    first = client.post("/v1/jobs", json=body, headers=headers).json()
    replay = client.post("/v1/jobs", json=body, headers=headers).json()
    read = client.get(f"/v1/jobs/{first['id']}", headers=auth).json()

    assert first["webhook"]["secret"].startswith("whsec_")
    assert replay["webhook"]["secret"] is None
    assert read["webhook"] == {"url": "https://example.org/hook", "secret": None}


def test_twenty_concurrent_submissions_with_one_key_make_one_job(settings, auth):
    app = create_app(settings)
    headers = {**auth, "Idempotency-Key": "burst-1"}

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            posts = [
                http.post("/v1/jobs", json=DIGITS, headers=headers) for _ in range(20)
            ]
            return await asyncio.gather(*posts)

    responses = asyncio.run(burst())

    assert [r.status_code for r in responses] == [202] * 20
    assert len({r.json()["id"] for r in responses}) == 1
    with session_scope(settings.sqlalchemy_url) as session:
        count = session.scalar(sa.select(sa.func.count()).select_from(Job))
    assert count == 1
