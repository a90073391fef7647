"""Bad input (RELIABILITY.md tests 19-22) through a real API and the real engine.

The API is uvicorn with the engine's own checks; the worker runs the real
engine. Hostile files are made by ``badfiles``. A request is either refused
with a 422 naming the field before anything is queued, or accepted and then
ended by the worker with a status and a message; never a 5xx, never code
run from a pickle, never a file opened outside the data directory.
The engine-level cases are tests/engine/test_data.py (paths, bombs, pickles,
CSV) and tests/engine/test_train.py (divergence).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from badfiles import (
    header_bomb_npy,
    header_bomb_npz,
    many_entries_npz,
    not_a_zip,
    npz_with,
    pickle_npy,
    pickle_npz,
    raw_pickle,
    table,
    text,
    valid_npz,
    zip_bomb_npz,
)
from harness import memory_kib, record
from plateau_service import Service

from app.db.models import Job
from app.db.session import session_scope

pytestmark = pytest.mark.slow

ENGINE = {
    "analyze_function": "engine.analyze:analyze",
    "validate_function": "engine.analyze:validate_request",
    "lease_seconds": 30,
    "rate_limit_per_minute": 0,
}
#: a quick analysis, so that accepted jobs end in seconds
QUICK = {
    "training": {"epochs": 2, "batch_size": 16},
    "analysis": {"method": "point", "permutations": 5},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, scratch_db, shared_redis) -> Iterator[dict[str, Any]]:
    """A data directory full of bad files, an API and a worker on the real engine."""
    root = tmp_path_factory.mktemp("bad-input")
    values = {"database_url": scratch_db, **shared_redis, **ENGINE}
    service = Service(root / "service", values)
    data, outside = Path(service.values["data_dir"]), root / "outside"
    outside.mkdir()
    marker = root / "PICKLE-RAN"
    _make_files(data, outside, marker)
    try:
        key = service.key("bad-input")
        api = service.api()
        worker = service.worker()
        with httpx.Client(base_url=api.url, timeout=60) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            # warm both processes up on a valid job before measuring anything
            warm = _submit(http, "file:ok.npz")
            assert warm.status_code == 202, warm.text
            _wait_final(service, warm.json()["id"])
            yield {
                "service": service,
                "http": http,
                "api": api,
                "worker": worker,
                "data": data,
                "outside": outside,
                "marker": marker,
                "key": key,
            }
    finally:
        service.close()


def _make_files(data: Path, outside: Path, marker: Path) -> None:
    valid_npz(data / "ok.npz")
    valid_npz(outside / "secret.npz")
    os.symlink(outside / "secret.npz", data / "link.npz")
    os.symlink(outside, data / "linkdir")
    zip_bomb_npz(data / "zipbomb.npz")
    header_bomb_npz(data / "headerbomb.npz")
    header_bomb_npy(data / "headerbomb.npy")
    many_entries_npz(data / "entries.npz")
    pickle_npz(data / "pickle.npz", marker)
    pickle_npy(data / "pickle.npy", marker)
    raw_pickle(data / "pickle-as.npz", marker)
    raw_pickle(data / "pickle-as.csv", marker)
    not_a_zip(data / "notazip.npz")
    text(data / "ragged.csv", "a,b,label\n1,2,0\n3,4,5,1\n1,2,1\n")
    text(data / "empty.csv", "")
    text(data / "header-only.csv", "a,b,label\n")
    x, y = table()
    nan, inf = x.copy(), x.copy()
    nan[3, 1], inf[5, 0] = np.nan, np.inf
    npz_with(data / "nan.npz", nan, y)
    npz_with(data / "inf.npz", inf, y)
    npz_with(data / "negative-label.npz", x, np.where(np.arange(40) == 7, -1, y))
    npz_with(data / "huge-label.npz", x, np.where(np.arange(40) == 7, 10**9, y))
    npz_with(data / "one-class.npz", x, np.zeros(40, dtype=int))
    npz_with(data / "ten-rows.npz", x[:10], y[:10])
    images = np.random.default_rng(0).integers(0, 255, (20, 8, 8), dtype=np.uint8)
    npz_with(data / "images.npz", images, np.arange(20) % 2)


def _submit(http: httpx.Client, uri: str, **body: Any) -> httpx.Response:
    return http.post("/v1/jobs", json={"dataset": {"uri": uri}, **QUICK, **body})


def _wait_final(service: Service, job_id: str) -> Job:
    return service.wait_status(job_id, {"succeeded", "failed", "cancelled"}, 180)


def _jobs(service: Service) -> int:
    with session_scope(service.url) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Job))


PATH_ESCAPES = [
    "file:../outside/secret.npz",
    "file:OUTSIDE/secret.npz",  # the absolute path, filled in below
    "file:%2e%2e%2foutside%2fsecret.npz",
    "file:..%2Foutside/secret.npz",
    "file:sub/../../outside/secret.npz",
    "file:..\\outside\\secret.npz",
    "file:ok.npz\x00../../outside/secret.npz",
    "file:link.npz",
    "file:linkdir/secret.npz",
]


def test_19_path_escapes_are_422_and_open_no_file_outside(world):
    outside = world["outside"]
    uris = [u.replace("OUTSIDE", str(outside)) for u in PATH_ESCAPES]
    before = _jobs(world["service"])

    # over HTTP, the real server
    answers = {uri: _submit(world["http"], uri) for uri in uris}

    # in this process, where an audit hook sees every file the API opens
    opened = _opened_outside_during(world, uris, outside)

    statuses = {uri: r.status_code for uri, r in answers.items()}
    assert set(statuses.values()) == {422}, statuses
    for response in answers.values():
        assert response.json()["detail"][0]["loc"] == ["body", "dataset", "uri"]
    assert _jobs(world["service"]) == before
    assert opened == []
    record(
        "19",
        cases=len(uris),
        refused_422=sum(s == 422 for s in statuses.values()),
        files_opened_outside=len(opened),
        jobs_queued=_jobs(world["service"]) - before,
    )


_audit: dict[str, Any] = {"root": None, "seen": []}


def _audit_hook(event: str, args: tuple) -> None:
    root = _audit["root"]
    if root is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    path = args[0] if args else None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str | os.PathLike) and os.path.realpath(path).startswith(root):
        _audit["seen"].append((event, str(path)))


def _opened_outside_during(world, uris: list[str], outside: Path) -> list:
    from fastapi.testclient import TestClient

    from app.main import create_app

    if not getattr(sys, "_plateau_audit", False):
        sys.addaudithook(_audit_hook)  # hooks cannot be removed: it stays idle
        sys._plateau_audit = True  # type: ignore[attr-defined]
    settings = world["service"].settings
    headers = {"Authorization": f"Bearer {world['key']}"}
    with TestClient(create_app(settings)) as client:
        _audit["root"], _audit["seen"] = str(outside.resolve()), []
        try:
            for uri in uris:
                response = client.post(
                    "/v1/jobs",
                    json={"dataset": {"uri": uri}, **QUICK},
                    headers=headers,
                )
                assert response.status_code == 422, (uri, response.text)
        finally:
            _audit["root"] = None
    return list(_audit["seen"])


HOSTILE_FILES = [
    "file:zipbomb.npz",
    "file:headerbomb.npz",
    "file:headerbomb.npy",
    "file:entries.npz",
    "file:pickle.npz",
    "file:pickle.npy",
    "file:pickle-as.npz",
    "file:pickle-as.csv",
    "file:notazip.npz",
    "file:ragged.csv",
    "file:empty.csv",
    "file:header-only.csv",
]


def test_20_bombs_pickles_and_broken_csv_are_refused_without_5xx_or_memory(world):
    service, http = world["service"], world["http"]
    api, worker = world["api"], world["worker"]
    api_before = memory_kib(api.pid)
    child_before = max(memory_kib(pid) for pid in worker.children())

    outcomes: dict[str, str] = {}
    for uri in HOSTILE_FILES:
        response = _submit(http, uri)
        assert response.status_code < 500, (uri, response.text)
        if response.status_code == 422:
            outcomes[uri] = "422: " + response.json()["detail"][0]["msg"]
            continue
        assert response.status_code == 202, (uri, response.text)
        row = _wait_final(service, response.json()["id"])
        assert row.status == "failed", (uri, row.status)
        assert row.error_code == "bad_data", (uri, row.error_code, row.error_message)
        outcomes[uri] = f"202, then failed ({row.error_code}): {row.error_message}"

    api_after = memory_kib(api.pid)
    child_after = max(memory_kib(pid) for pid in worker.children())
    assert not world["marker"].exists(), "a pickle ran code"
    assert all(o.startswith(("422", "202")) for o in outcomes.values())
    record(
        "20",
        cases=len(HOSTILE_FILES),
        server_errors_5xx=0,
        pickle_code_ran=world["marker"].exists(),
        api_peak_rss_mib_before=round(api_before / 1024, 1),
        api_peak_rss_mib_after=round(api_after / 1024, 1),
        worker_child_peak_rss_mib_before=round(child_before / 1024, 1),
        worker_child_peak_rss_mib_after=round(child_after / 1024, 1),
        outcomes=outcomes,
    )


ABSURD_ARCHITECTURES = [
    ("architecture.hidden_size", {"architecture": {"hidden_size": 0}}),
    ("architecture.hidden_size", {"architecture": {"hidden_size": -16}}),
    ("architecture.hidden_size", {"architecture": {"hidden_size": 10**12}}),
    ("architecture.hidden_size", {"architecture": {"hidden_size": "wide"}}),
    ("architecture.num_layers", {"architecture": {"num_layers": -1}}),
    ("architecture.num_layers", {"architecture": {"num_layers": 10**6}}),
    ("architecture.channels", {"architecture": {"kind": "cnn", "channels": [0]}}),
    ("architecture.channels", {"architecture": {"kind": "cnn", "channels": [-8]}}),
    ("architecture.channels", {"architecture": {"kind": "cnn", "channels": []}}),
    ("architecture.kernel_size", {"architecture": {"kind": "cnn", "kernel_size": 0}}),
    ("architecture.kind", {"architecture": {"kind": "transformer"}}),
    # within each field's range, absurd together: checked against the limits
    ("architecture", {"architecture": {"hidden_size": 65536, "num_layers": 64}}),
    (
        "architecture",
        {"architecture": {"kind": "cnn", "channels": [4096] * 4, "kernel_size": 15}},
    ),
    (
        "training.batch_size",
        {
            "architecture": {"hidden_size": 4096, "num_layers": 2},
            "training": {"batch_size": 65536},
        },
    ),
]


def test_21_absurd_architectures_are_422_before_queueing(world):
    import redis

    service, http = world["service"], world["http"]
    queue_key = service.values["broker_key_prefix"] + service.values["queue"]
    broker = redis.Redis.from_url(service.values["broker_url"])
    jobs_before, queued_before = _jobs(service), broker.llen(queue_key)
    answers = []
    try:
        for field, body in ABSURD_ARCHITECTURES:
            uri = "file:images.npz" if "cnn" in str(body) else "sklearn:digits"
            response = http.post("/v1/jobs", json={"dataset": {"uri": uri}, **body})
            answers.append((field, response))
        queued_after = broker.llen(queue_key)
    finally:
        broker.close()

    for field, response in answers:
        assert response.status_code == 422, (field, response.text)
        places = [".".join(map(str, e["loc"][1:])) for e in response.json()["detail"]]
        assert any(place.startswith(field) for place in places), (field, places)
    assert _jobs(service) == jobs_before
    assert queued_after == queued_before
    record(
        "21",
        cases=len(answers),
        refused_422=sum(r.status_code == 422 for _f, r in answers),
        jobs_stored=_jobs(service) - jobs_before,
        messages_queued=queued_after - queued_before,
    )


BAD_VALUES = [
    ("NaN features", "file:nan.npz", {}),
    ("Inf features", "file:inf.npz", {}),
    ("label -1", "file:negative-label.npz", {}),
    ("label 10^9", "file:huge-label.npz", {}),
    ("one class", "file:one-class.npz", {}),
    ("10 rows, batch 64", "file:ten-rows.npz", {"training": {"batch_size": 64}}),
    (
        "loss diverges mid-run",
        "sklearn:iris",
        {
            "architecture": {"hidden_size": 512, "num_layers": 12, "bias": True},
            "training": {"epochs": 2, "lr": 10, "batch_size": 8},
        },
    ),
]


def test_22_bad_values_end_with_a_status_and_a_message(world):
    service, http = world["service"], world["http"]
    outcomes: dict[str, dict[str, Any]] = {}
    for name, uri, extra in BAD_VALUES:
        body = {**QUICK, "dataset": {"uri": uri}, **extra}
        response = http.post("/v1/jobs", json=body)
        assert response.status_code in (202, 422), (name, response.text)
        if response.status_code == 422:
            outcomes[name] = {"status": 422, "message": response.json()["detail"]}
            continue
        row = _wait_final(service, response.json()["id"])
        outcomes[name] = {
            "status": row.status,
            "code": row.error_code,
            "message": row.error_message,
        }

    for name, outcome in outcomes.items():
        assert outcome.get("code") != "internal_error", (name, outcome)
    for name in ("NaN features", "Inf features", "label -1", "label 10^9", "one class"):
        assert outcomes[name]["status"] == "failed", outcomes[name]
        assert outcomes[name]["code"] == "bad_data", outcomes[name]
    assert outcomes["10 rows, batch 64"]["status"] == "succeeded"
    diverged = outcomes["loss diverges mid-run"]
    assert diverged["status"] == "failed" and "diverged" in diverged["message"]
    record("22", outcomes=outcomes)


def test_path_like_job_ids_in_the_url_are_404_or_422(world):
    http = world["http"]
    paths = [
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/%2e%2e/curve",
        f"/v1/jobs/{uuid.uuid4()}%00/curve",
        "/v1/jobs/../../../etc/passwd",
    ]
    statuses = [http.get(path).status_code for path in paths]
    assert all(status in (404, 422) for status in statuses), statuses
