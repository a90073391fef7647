"""schemathesis over the whole OpenAPI schema (RELIABILITY.md test 23).

The real API (uvicorn, the engine's checks, PostgreSQL) is fuzzed with a
valid key by ``schemathesis run``: every phase (examples, coverage, fuzzing,
stateful), every check but one, a bounded number of examples per operation
and a fixed seed. Job ids are drawn, most of the time, from jobs seeded in
every status (and one of another tenant), and data set references from ones
that exist, so the generated requests reach the real code paths instead of
stopping at 404 and 422.

``positive_data_acceptance`` is left out: it expects every schema-valid body
to be accepted, but the schema cannot say that a data set must exist or
that a cursor must be one the service issued, so those refusals (422 naming
the field) are correct behaviour, not failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from badfiles import valid_npz
from harness import record
from plateau_service import seed_jobs

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "25"))
EXCLUDED_CHECKS = ["positive_data_acceptance"]


def write_config(path: Path, job_ids: list[str], datasets: list[str]) -> Path:
    config = "\n".join(
        [
            "[dictionaries.jobs]",
            f"values = {json.dumps(job_ids)}",
            "",
            "[dictionaries.datasets]",
            f"values = {json.dumps(datasets)}",
            "",
            "[parameters]",
            '"path.job_id" = { dictionary = "jobs", probability = 0.8 }',
            '"body.dataset.uri" = { dictionary = "datasets", probability = 0.5 }',
            "",
        ]
    )
    path.write_text(config)
    return path


def test_23_schemathesis_finds_no_failure_on_any_check(make_service, db, tmp_path):
    service = make_service(
        database_url=db,
        analyze_function="engine.analyze:analyze",
        validate_function="engine.analyze:validate_request",
        # the fuzzer sends far more than a client may; limits are test 26's
        rate_limit_per_minute=0,
    )
    data = Path(service.values["data_dir"])
    valid_npz(data / "table.npz")
    key = service.key("fuzzer")
    ours = seed_jobs(service.url, "fuzzer")
    theirs = seed_jobs(service.url, "someone-else")
    api = service.api()
    config = write_config(
        tmp_path / "schemathesis.toml",
        [*ours.values(), theirs["succeeded"]],
        ["sklearn:digits", "sklearn:iris", "file:table.npz"],
    )
    report = tmp_path / "report.json"

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{api.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--exclude-checks",
            ",".join(EXCLUDED_CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "20261203",
            # one worker: two threads of schemathesis can hit a CPython race in
            # ast (SystemError: AST constructor recursion depth mismatch)
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # it keeps a cache folder in the working directory
    )

    (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)
    summary = json.loads(report.read_text())
    failures = {f["code"] + " " + f["title"]: f["count"] for f in summary["failures"]}
    tail = run.stdout[-12000:]
    assert summary["errors"] == [], tail
    assert failures == {}, tail
    assert run.returncode == 0, tail
    assert "Exception in ASGI application" not in api.text()
    record(
        "23",
        operations_tested=summary["operations"]["tested"],
        test_cases=summary["test_cases"]["generated"],
        failures_per_check=failures or 0,
        checks="all but " + ", ".join(EXCLUDED_CHECKS),
        max_examples=MAX_EXAMPLES,
        seconds=round(summary["running_time"], 1),
    )
