"""Per-key rate limits: a token bucket per API key, kept in the API process.

A key may make ``rate_limit_per_minute`` requests a minute on average and up
to ``rate_limit_burst`` in a burst; past that the API answers ``429`` with
``Retry-After`` (whole seconds until the next request would be allowed).
Only requests that authenticated are counted, under the key's prefix (or the
local tenant's name under ``plateau up``), so a caller cannot drain someone
else's bucket by presenting a made-up key with their prefix.

The buckets live in memory, one set per API process: with N processes
behind a load balancer a key gets up to N times the limit, so divide the
setting by N. They are not kept in Redis on purpose: the request path then
needs no broker round trip, and a Redis outage cannot turn into an outage
(or an open door) of the API, whose reads need only the database.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from app.api.deps import SettingsDep, TenantDep, bearer
from app.core.security import key_prefix

#: the most buckets one process keeps; the least recently used go first
MAX_BUCKETS = 10_000


class RateLimiter:
    """Token buckets by key: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(self, per_minute: int, burst: int, max_keys: int = MAX_BUCKETS):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens, monotonic time they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0 when allowed, else seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            # an evicted bucket comes back full: at worst one extra burst
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


_limiters_lock = threading.Lock()


def limiter_for(request: Request, per_minute: int, burst: int) -> RateLimiter:
    """The application's limiter, made on first use."""
    state = request.app.state
    with _limiters_lock:
        limiter = getattr(state, "rate_limiter", None)
        if limiter is None:
            limiter = state.rate_limiter = RateLimiter(per_minute, burst)
    return limiter


def rate_limited(
    request: Request,
    settings: SettingsDep,
    tenant: TenantDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Count the request against its key; 429 with Retry-After past the limit."""
    if settings.rate_limit_per_minute <= 0:
        return
    prefix = key_prefix(credentials.credentials) if credentials else None
    key = f"key:{prefix}" if prefix else f"tenant:{tenant.name}"
    limiter = limiter_for(
        request, settings.rate_limit_per_minute, settings.rate_limit_burst
    )
    wait = limiter.acquire(key)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"this key is limited to {settings.rate_limit_per_minute} requests "
            "a minute; retry after the time in Retry-After",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


RateLimited = Depends(rate_limited)
