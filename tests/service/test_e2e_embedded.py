"""``plateau up`` as a user runs it: no PostgreSQL, no Redis, one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import DIGITS, free_port

pytestmark = pytest.mark.slow

PLATEAU = Path(sys.executable).parent / "plateau"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_plateau_up_runs_a_digits_job_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [str(PLATEAU), "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        banner = up.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, (tmp_path / "up.log").read_text()
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/readyz").json()["status"] == "ok"
            assert "Plateau" in http.get("/").text
            job = http.post("/v1/jobs", json=DIGITS)  # no key: the local tenant
            assert job.status_code == 202, job.text
            job_id = job.json()["id"]

            deadline = time.monotonic() + 90
            while (state := http.get(f"/v1/jobs/{job_id}").json())["status"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
            assert state["status"] == "succeeded", state["error"]
            assert state["result"]["sample_size"] == 1797
            assert http.get(f"/v1/jobs/{job_id}/curve").json()["points"]
            metrics = http.get("/metrics").text
            assert 'plateau_jobs{status="succeeded"} 1.0' in metrics
            assert "plateau_job_duration_seconds_count 1.0" in metrics

        assert (tmp_path / "var" / "plateau.sqlite").exists()
        assert (tmp_path / "var" / "broker").is_dir()
        children = children_of(up.pid)
        assert len(children) == 2  # the API and the worker

        started = time.monotonic()
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert not [pid for pid in children if alive(pid)]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        up.stdout.close()
        log.close()
