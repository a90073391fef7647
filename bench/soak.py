"""Soak (RELIABILITY.md test 28): memory of every process under a steady load.

    python bench/soak.py                  # 10 minutes
    python bench/soak.py --minutes 3      # shorter
    python bench/soak.py --json out.json  # the samples and figures as JSON too

Starts the API, one worker (one pool process) and the reaper on a scratch
PostgreSQL database and a Redis key prefix (``bench/reliability_stack.py``)
with the no-op engine, then for ``--minutes`` sends a paced mix on loopback:
``--reads`` GETs of a job and of the job list a second, and ``--submits``
job submissions a second, which the worker runs. Every ``--every`` seconds
it samples the resident memory (VmRSS) of each process. The figure is the
growth of each process from the end of the first minute (warm: imports done,
pools filled) to the end, in MiB and MiB per hour. It also reports the
answers by status and that every submitted job finished. It stops by itself.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from pathlib import Path

from reliability_stack import NO_OP, Stack


class Traffic:
    """Paced GETs and POSTs in two threads until stopped."""

    def __init__(self, stack: Stack, reads: float, submits: float) -> None:
        self.stack, self.reads, self.submits = stack, reads, submits
        self.answers: Counter = Counter()
        self.submitted: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._reader, daemon=True),
            threading.Thread(target=self._submitter, daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _paced(self, rate: float, act) -> None:
        import httpx

        headers = self.stack.headers
        with httpx.Client(
            base_url=self.stack.api.url, headers=headers, timeout=30
        ) as h:
            began, n = time.monotonic(), 0
            while not self._stop.is_set():
                self._stop.wait(max(0.0, began + n / rate - time.monotonic()))
                n += 1
                try:
                    status = act(h, n)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.answers[status] += 1

    def _reader(self) -> None:
        def read(http, n: int) -> int:
            if n % 2 or not self.submitted:
                return http.get("/v1/jobs?limit=20").status_code
            return http.get(f"/v1/jobs/{self.submitted[-1]}").status_code

        self._paced(self.reads, read)

    def _submitter(self) -> None:
        def submit(http, _n: int) -> int:
            response = http.post("/v1/jobs", json=NO_OP)
            if response.status_code == 202:
                with self._lock:
                    self.submitted.append(response.json()["id"])
            return response.status_code

        self._paced(self.submits, submit)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--reads", type=float, default=20.0, help="GETs a second")
    parser.add_argument("--submits", type=float, default=2.0, help="POSTs a second")
    parser.add_argument("--every", type=float, default=10.0, help="seconds a sample")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    warm_up = min(60.0, options.minutes * 60 / 3)

    samples: list[dict] = []
    with Stack(workers=1, reaper=True) as stack:
        began = time.monotonic()
        with Traffic(stack, options.reads, options.submits) as traffic:
            while (elapsed := time.monotonic() - began) < options.minutes * 60:
                sample = {"t": round(elapsed, 1)}
                sample.update(
                    {name: rss_mib(pid) for name, pid in stack.pids().items()}
                )
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                time.sleep(min(options.every, options.minutes * 60 - elapsed))
        final = {"t": round(time.monotonic() - began, 1)}
        final.update({name: rss_mib(pid) for name, pid in stack.pids().items()})
        samples.append(final)
        # let the last submissions finish before counting
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            open_jobs = stack.query(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            )[0][0]
            if open_jobs == 0:
                break
            time.sleep(1)
        statuses = dict(stack.query("SELECT status, count(*) FROM jobs GROUP BY 1"))

    figures = growth(samples, warm_up)
    figures.update(
        minutes=options.minutes,
        reads_per_second=options.reads,
        submits_per_second=options.submits,
        answers={str(k): v for k, v in sorted(traffic.answers.items(), key=str)},
        jobs=statuses,
        submitted=len(traffic.submitted),
    )
    print()
    print(f"soak of {options.minutes:g} min, growth after the first {warm_up:.0f} s:")
    for name, value in figures["growth_mib"].items():
        rate = figures["growth_mib_per_hour"][name]
        print(f"  {name:<18} {value:+7.1f} MiB  ({rate:+.1f} MiB/h)")
    print(f"answers {figures['answers']}")
    print(f"jobs {statuses} of {len(traffic.submitted)} submitted")
    if options.json:
        options.json.write_text(json.dumps({**figures, "samples": samples}, indent=2))


def growth(samples: list[dict], warm_up: float) -> dict:
    """Per process: RSS at the end minus RSS at the first sample after warm-up."""
    start = next((s for s in samples if s["t"] >= warm_up), samples[0])
    end = samples[-1]
    hours = max((end["t"] - start["t"]) / 3600, 1e-9)
    names = [k for k in start if k != "t" and start[k] is not None and end.get(k)]
    mib = {name: round(end[name] - start[name], 1) for name in names}
    return {
        "warm_up_seconds": warm_up,
        "rss_mib_start": {name: round(start[name], 1) for name in names},
        "rss_mib_end": {name: round(end[name], 1) for name in names},
        "growth_mib": mib,
        "growth_mib_per_hour": {n: round(v / hours, 1) for n, v in mib.items()},
    }


if __name__ == "__main__":
    main()
