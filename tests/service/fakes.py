"""Stand-ins for the engine's entry points, for fast tests of the service.

They are named in settings (``PLATEAU_ANALYZE_FUNCTION=fakes:analyze``), so
a worker subprocess finds them when ``tests/service`` is on its PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.curve import Progress, no_progress
from engine.result import CurvePoint, Result, TrainSummary
from engine.specs import AnalysisRequest, Limits

#: every call of ``analyze`` appends its checkpoint argument here
calls: list[dict] = []


@dataclass
class FakeAnalysis:
    result: Result
    curve: list[CurvePoint]


def _result(request: AnalysisRequest) -> Result:
    return Result(
        method=request.analysis.method,
        sample_size=100,
        tolerance=request.analysis.tolerance,
        final_delta=0.5,
        sufficient=False,
        projected_size=400,
        projected_interval=(300, 600),
        additional_samples_needed=300,
        train=TrainSummary(loss=0.1, accuracy=0.9, epochs=1, seconds=0.01),
        parameters=10,
        device="cpu",
        timings={"loading": 0.01, "training": 0.02},
        details={},
    )


def analyze(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    allow_download: bool = False,
    limits: Limits = Limits(),
    progress: Progress = no_progress,
    checkpoint: Path | None = None,
) -> FakeAnalysis:
    """Instant: three progress calls, a fixed Result, a curve of 5 points.

    With more than 2 ``training.epochs``, a tenth of a second per epoch is
    spent in 0.05 s steps, each reported, so tests can make a job that runs
    as long as they need.
    """
    calls.append({"checkpoint": checkpoint, "request": request})
    progress("loading", 0.0)
    epochs = request.training.epochs
    steps = 2 * epochs if epochs > 2 else 0
    for step in range(steps):
        time.sleep(0.05)
        progress("training", step / steps)
    if request.dataset.uri == "fake:crash":
        os._exit(17)  # a job that kills its worker
    if request.dataset.uri == "fake:boom":
        raise RuntimeError("boom")
    progress("verdict", 1.0)
    curve = [
        CurvePoint(k=k, delta=1 / k, smoothed=1 / k, delta_low=None)
        for k in range(1, 6)
    ]
    return FakeAnalysis(result=_result(request), curve=curve)


def validate(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    limits: Limits = Limits(),
    allow_download: bool = False,
) -> None:
    """Accepts everything."""
