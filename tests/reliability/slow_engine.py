"""A stand-in engine whose jobs take as long as a test needs, and say what they did.

Named in settings (``PLATEAU_ANALYZE_FUNCTION=slow_engine:analyze``), so a
worker subprocess finds it when this folder is on its PYTHONPATH. It does not
import torch, so a worker's child is ready in a moment.

The data set reference is the script: ``fake:train=30,measure=20,step=0.05``
trains for 30 steps, saves a checkpoint, then measures for 20 steps, each
step ``step`` seconds and each reported through the progress callback. An
attempt that finds the checkpoint skips training, as the real engine does.
``fake:crash`` kills its process halfway through training.

Every step is appended to ``$RELIABILITY_EVENTS/<pid>.jsonl`` as it happens,
so a test can count executions and replayed work after any crash.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.result import CurvePoint, Result, TrainSummary

#: points of the curve each finished job writes
CURVE_POINTS = 20


@dataclass
class FakeAnalysis:
    result: Result
    curve: list[CurvePoint]


def emit(job: str, event: str, **fields: Any) -> None:
    """Append one event line; O_APPEND and one write, so a kill loses no half line."""
    folder = os.environ.get("RELIABILITY_EVENTS")
    if not folder:
        return
    line = json.dumps(
        {"t": time.time(), "pid": os.getpid(), "job": job, "event": event, **fields}
    )
    path = Path(folder) / f"{os.getpid()}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def script(uri: str) -> dict[str, float]:
    """``fake:train=30,measure=20,step=0.05`` as numbers (defaults for the rest)."""
    values = {"train": 20.0, "measure": 10.0, "step": 0.05}
    body = uri.removeprefix("fake:")
    for part in filter(None, body.split(",")):
        name, _, value = part.partition("=")
        if name in values:
            values[name] = float(value)
    return values


def analyze(
    request: Any,
    *,
    data_dir: Path,
    allow_download: bool = False,
    limits: Any = None,
    progress: Any = None,
    checkpoint: Path | None = None,
) -> FakeAnalysis:
    """Train (or restore), then measure, one reported step at a time."""
    job = checkpoint.stem if checkpoint is not None else "-"
    uri = request.dataset.uri
    plan = script(uri)
    restored = checkpoint is not None and checkpoint.exists()
    emit(job, "start", restored=restored)
    try:
        if restored:
            progress("training", 1.0)
        else:
            for step in range(int(plan["train"])):
                time.sleep(plan["step"])
                emit(job, "train", step=step)
                progress("training", step / plan["train"])
                if uri == "fake:crash" and step == int(plan["train"]) // 2:
                    emit(job, "crash")
                    os._exit(17)  # a job that kills its worker every time
            if checkpoint is not None:
                partial = checkpoint.with_suffix(".partial")
                partial.write_text("trained")
                partial.replace(checkpoint)
                emit(job, "checkpoint")
        for step in range(int(plan["measure"])):
            time.sleep(plan["step"])
            emit(job, "measure", step=step)
            progress("measuring", step / plan["measure"])
        progress("verdict", 1.0)
    except BaseException as exc:
        emit(job, "stopped", reason=type(exc).__name__)
        raise
    emit(job, "done")
    return FakeAnalysis(result=result_for(request), curve=curve())


def validate(request: Any, **_options: Any) -> None:
    """Accepts every request (the API's checks are tested elsewhere)."""


def result_for(request: Any) -> Result:
    return Result(
        method=request.analysis.method,
        sample_size=100,
        tolerance=request.analysis.tolerance,
        final_delta=0.05,
        sufficient=False,
        projected_size=400,
        projected_interval=(300, 600),
        additional_samples_needed=300,
        train=TrainSummary(loss=0.1, accuracy=0.9, epochs=1, seconds=0.01),
        parameters=10,
        device="cpu",
        timings={"training": 0.01},
        details={},
    )


def curve() -> list[CurvePoint]:
    return [
        CurvePoint(k=k, delta=1 / k, smoothed=1 / k) for k in range(1, CURVE_POINTS + 1)
    ]
