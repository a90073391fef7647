"""A fake engine whose verdict the request chooses, for fast webhook tests.

``analysis.tolerance`` >= 0.01: the data suffice (k* = 60 of 100 samples).
Below: they do not; the projection is 400 samples, interval [300, 600].
The budget status comes from the engine's own rule. ``fake:boom`` fails.
Named in settings (``hookfakes:analyze``), so a worker subprocess finds it
when ``tests/webhooks`` is on its PYTHONPATH.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.curve import Progress, no_progress
from engine.result import CurvePoint, Result, TrainSummary
from engine.specs import AnalysisRequest, Limits
from engine.verdict import budget_status

PROJECTED, INTERVAL = 400, (300, 600)


@dataclass
class FakeAnalysis:
    result: Result
    curve: list[CurvePoint]


def analyze(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    allow_download: bool = False,
    limits: Limits = Limits(),
    progress: Progress = no_progress,
    checkpoint: Path | None = None,
) -> FakeAnalysis:
    """Instant: a Result whose verdict follows the tolerance."""
    progress("loading", 0.0)
    if request.dataset.uri == "fake:boom":
        raise RuntimeError("boom")
    sufficient = request.analysis.tolerance >= 0.01
    projected = None if sufficient else PROJECTED
    result = Result(
        method=request.analysis.method,
        sample_size=100,
        tolerance=request.analysis.tolerance,
        final_delta=0.005,
        sufficient=sufficient,
        sufficient_size=60 if sufficient else None,
        projected_size=projected,
        projected_interval=None if sufficient else INTERVAL,
        additional_samples_needed=None if sufficient else PROJECTED - 100,
        budget=budget_status(request.budget, sufficient, projected),
        train=TrainSummary(loss=0.1, accuracy=0.9, epochs=1, seconds=0.01),
        parameters=10,
        device="cpu",
        timings={"loading": 0.01},
        details={},
    )
    progress("verdict", 1.0)
    curve = [CurvePoint(k=k, delta=1 / k, smoothed=1 / k) for k in range(1, 6)]
    return FakeAnalysis(result=result, curve=curve)


def validate(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    limits: Limits = Limits(),
    allow_download: bool = False,
) -> None:
    """Accepts everything."""
