"""Load on loopback (RELIABILITY.md tests 27 and 28): how much the API takes.

    python bench/load.py                   # every figure, about two minutes
    python bench/load.py --seconds 10      # longer steps, steadier figures
    python bench/load.py --json out.json   # the figures as JSON too

Starts the service on a scratch PostgreSQL database and a Redis key prefix
(``bench/reliability_stack.py``) with the no-op engine, then measures:

1. ``GET /v1/jobs/{id}``: throughput and p99 latency at 1, 2, 4, ... open
   connections; the figure is the highest rate whose p99 stays under 100 ms.
2. ``POST /v1/jobs``: the same for accepted (202) submissions, p99 < 250 ms.
3. Submit-to-start: submissions paced at ``--rate`` a second for
   ``--pace-seconds``, with two workers; p50/p99 of ``started_at - created_at``.

wrk (``apt-get install wrk``) generates the load when it is installed,
otherwise an asyncio/httpx client does (which costs more CPU). Either runs
on the same machine as the service, so the two share its cores; and both
are closed-loop (a connection waits for its answer before sending the next),
so a latency figure is for that many clients, not for a fixed arrival rate.
Every step is bounded by time; the whole run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from reliability_stack import NO_OP, Stack

CONNECTIONS = (1, 2, 4, 8, 16, 32)


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict:
    """One wrk run: requests a second, accepted a second, p50/p99 in ms."""
    run = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = run.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    failed = int(bad.group(1)) if bad else 0
    return {
        "connections": connections,
        "requests": total,
        "per_second": round(rate, 1),
        "ok_per_second": round(rate * (total - failed) / max(total, 1), 1),
        "not_2xx": failed,
        "socket_errors": errors.group(1).strip() if errors else "",
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit], 2)


def wrk_script(folder: Path, method: str, body: dict | None, headers: dict) -> Path:
    lines = [f'wrk.method = "{method}"']
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = '{json.dumps(body)}'")
    path = folder / f"{method.lower()}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def python_load(
    url: str, connections: int, seconds: float, method: str, body, headers
) -> dict:
    """The same measurement without wrk: ``connections`` asyncio clients."""
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []

    async def client(http: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            began = time.monotonic()
            response = await http.request(method, url, json=body)
            latencies.append((time.monotonic() - began) * 1000)
            statuses.append(response.status_code)

    async def main() -> float:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(headers=headers, timeout=10, limits=limits) as h:
            began = time.monotonic()
            deadline = began + seconds
            await asyncio.gather(*(client(h, deadline) for _ in range(connections)))
            return time.monotonic() - began

    elapsed = asyncio.run(main())
    ok = sum(200 <= s < 300 for s in statuses)
    return {
        "connections": connections,
        "requests": len(statuses),
        "per_second": round(len(statuses) / elapsed, 1),
        "ok_per_second": round(ok / elapsed, 1),
        "not_2xx": len(statuses) - ok,
        "socket_errors": "",
        "p50_ms": round(_quantile(latencies, 0.5), 2),
        "p99_ms": round(_quantile(latencies, 0.99), 2),
    }


def _quantile(values: list[float], share: float) -> float:
    from harness import percentile

    return percentile(values, share)


def sweep(stack: Stack, method: str, path: str, body, seconds: float, folder) -> list:
    url = f"{stack.api.url}{path}"
    steps = []
    for connections in CONNECTIONS:
        if shutil.which("wrk"):
            script = wrk_script(folder, method, body, stack.headers)
            step = wrk(url, connections, seconds, script)
        else:
            step = python_load(url, connections, seconds, method, body, stack.headers)
        print(f"  {method} {path.split('/')[-1] or path}: {step}", flush=True)
        steps.append(step)
    return steps


def best(steps: list[dict], p99_under_ms: float) -> dict | None:
    """The step with the most successful requests a second under the p99 bound."""
    fitting = [s for s in steps if s["p99_ms"] < p99_under_ms and s["not_2xx"] == 0]
    return max(fitting, key=lambda s: s["ok_per_second"], default=None)


def submit_to_start(stack: Stack, rate: float, seconds: float) -> dict:
    """Paced submissions; how long each waited between commit and claim."""
    import httpx

    ids: list[str] = []
    with httpx.Client(base_url=stack.api.url, headers=stack.headers, timeout=30) as h:
        began = time.monotonic()
        for n in range(int(rate * seconds)):
            time.sleep(max(0.0, began + n / rate - time.monotonic()))
            response = h.post("/v1/jobs", json=NO_OP)
            if response.status_code == 202:
                ids.append(response.json()["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = stack.query(
            "SELECT EXTRACT(EPOCH FROM started_at - created_at) FROM jobs "
            "WHERE started_at IS NOT NULL"
        )
        if len(rows) >= len(ids):
            break
        time.sleep(1)
    waits = sorted(float(r[0]) * 1000 for r in rows)
    return {
        "submitted": len(ids),
        "started": len(waits),
        "rate_per_second": rate,
        "p50_ms": round(_quantile(waits, 0.5), 1),
        "p99_ms": round(_quantile(waits, 0.99), 1),
        "max_ms": round(max(waits, default=float("nan")), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per load step")
    parser.add_argument("--rate", type=float, default=10, help="paced submissions/s")
    parser.add_argument("--pace-seconds", type=float, default=30)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()

    figures: dict = {"generator": "wrk" if shutil.which("wrk") else "python"}
    folder = Path(tempfile.mkdtemp(prefix="plateau-load-"))
    with Stack(workers=0, api_processes=options.api_processes) as stack:
        job = _submit_one(stack)
        print("GET /v1/jobs/{id}", flush=True)
        gets = sweep(stack, "GET", f"/v1/jobs/{job}", None, options.seconds, folder)
        print("POST /v1/jobs (no worker: the queue only grows)", flush=True)
        posts = sweep(stack, "POST", "/v1/jobs", NO_OP, options.seconds, folder)
        figures["get_steps"], figures["post_steps"] = gets, posts
        figures["get_best_under_100ms"] = best(gets, 100)
        figures["post_best_under_250ms"] = best(posts, 250)
        figures["api_peak_rss_mib"] = round(_peak_kib(stack.api.pid) / 1024, 1)
    shutil.rmtree(folder, ignore_errors=True)

    print(f"submit-to-start at {options.rate:g}/s with two workers", flush=True)
    with Stack(workers=2, reaper=True, api_processes=options.api_processes) as stack:
        figures["submit_to_start"] = submit_to_start(
            stack, options.rate, options.pace_seconds
        )

    get_best, post_best = (
        figures["get_best_under_100ms"],
        figures["post_best_under_250ms"],
    )
    print()
    print(f"generator                          {figures['generator']}")
    if get_best:
        print(
            f"GET /v1/jobs/{{id}}, p99 < 100 ms    {get_best['ok_per_second']:,.0f}/s "
            f"at {get_best['connections']} connections (p99 {get_best['p99_ms']} ms)"
        )
    if post_best:
        print(
            f"POST /v1/jobs accepted, p99 < 250  {post_best['ok_per_second']:,.0f}/s "
            f"at {post_best['connections']} connections (p99 {post_best['p99_ms']} ms)"
        )
    start = figures["submit_to_start"]
    print(
        f"submit-to-start at {start['rate_per_second']:g}/s       "
        f"p50 {start['p50_ms']} ms, p99 {start['p99_ms']} ms, max {start['max_ms']} ms "
        f"({start['started']}/{start['submitted']} started)"
    )
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))


def _submit_one(stack: Stack) -> str:
    import httpx

    with httpx.Client(base_url=stack.api.url, headers=stack.headers) as http:
        response = http.post("/v1/jobs", json=NO_OP)
    response.raise_for_status()
    return response.json()["id"]


def _peak_kib(pid: int) -> int:
    from harness import memory_kib

    return memory_kib(pid)


if __name__ == "__main__":
    main()
