"""Concurrent and bursty clients (RELIABILITY.md tests 7 and 26) over HTTP.

Test 7 in-process is tests/service/test_idempotency.py; here the 20 requests
race across two uvicorn processes on PostgreSQL. Test 26 fires twice a key's
per-minute allowance at once and counts the 429s.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from harness import record
from plateau_service import seed_jobs

from app.core.ratelimit import RateLimiter
from app.db.models import Job
from app.db.session import session_scope
from app.services.keys import create_key

BODY = {"dataset": {"uri": "fake:train=1,measure=1"}}


@pytest.mark.slow
def test_7_twenty_concurrent_posts_with_one_key_across_two_processes_make_one_job(
    service,
):
    key = service.key()
    api = service.api(processes=2)
    start = threading.Barrier(20)

    def post(_n: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            start.wait(timeout=30)
            return http.post(
                "/v1/jobs",
                json=BODY,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "same"},
            )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))

    with session_scope(service.url) as session:
        created = session.scalar(sa.select(sa.func.count()).select_from(Job))
    assert [r.status_code for r in responses] == [202] * 20
    assert len({r.json()["id"] for r in responses}) == 1
    assert created == 1
    record("7", requests=20, api_processes=2, jobs_created=created)


@pytest.mark.slow
def test_26_a_burst_at_twice_the_limit_gets_429s_with_retry_after_and_no_5xx(
    service,
):
    limit = 60  # a minute, and as a burst: twice the limit is 120 at once
    with session_scope(service.url) as session:
        key, other = create_key(session, "acme"), create_key(session, "other")
    job_id = seed_jobs(service.url, "acme")["succeeded"]
    api = service.api(rate_limit_per_minute=limit, rate_limit_burst=limit)

    def get(_n: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            return http.get(
                f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
            )

    began = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(get, range(2 * limit)))
    # the bucket refills while the burst goes on: one a second at this limit
    refilled = (time.monotonic() - began) * limit / 60
    with httpx.Client(base_url=api.url, timeout=60) as http:
        neighbour = http.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"})

    counts = Counter(r.status_code for r in responses)
    limited = [r for r in responses if r.status_code == 429]
    waits = [int(r.headers["retry-after"]) for r in limited]
    assert set(counts) <= {200, 429}, counts
    assert limit <= counts[200] <= limit + math.ceil(refilled) + 1, counts
    assert limited and all(1 <= w <= 60 for w in waits), waits
    assert neighbour.status_code == 200, "one key's burst limited another key"
    record(
        "26",
        limit_per_minute=limit,
        burst=limit,
        requests=len(responses),
        share_429=round(counts[429] / len(responses), 3),
        answers={str(s): n for s, n in sorted(counts.items())},
        server_errors_5xx=sum(n for s, n in counts.items() if s >= 500),
        retry_after_seconds=sorted(set(waits)),
    )


def test_a_bucket_refills_at_the_rate_and_says_how_long_to_wait():
    limiter = RateLimiter(per_minute=60, burst=3)

    taken = [limiter.acquire("k", now=100.0) for _ in range(3)]
    refused = limiter.acquire("k", now=100.0)
    later = limiter.acquire("k", now=101.0)

    assert taken == [0, 0, 0]
    assert math.isclose(refused, 1.0)
    assert later == 0
    assert limiter.acquire("other", now=101.0) == 0


def test_the_buckets_of_one_process_are_bounded():
    limiter = RateLimiter(per_minute=60, burst=1, max_keys=100)

    for n in range(1000):
        limiter.acquire(f"key-{n}", now=0.0)

    assert len(limiter._buckets) == 100
