"""One analysis from request to Result: load, train, measure, decide.

This is the engine's front door; the CLI, the API's validation and the
workers call :func:`analyze` and :func:`validate_request`, nothing deeper.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.curve import CurveEstimate, Progress, no_progress
from engine.data import check_reference, load_dataset
from engine.dataset import Dataset
from engine.errors import DataError, SpecError
from engine.models import build_model, check_size
from engine.peek import peek_shape
from engine.result import CurvePoint, Result, TrainSummary
from engine.specs import AnalysisRequest, Limits
from engine.train import TrainReport, resolve_device, seed_everything, train
from engine.verdict import (
    budget_status,
    curve_points,
    expected_sufficient_size,
    project,
    smooth,
    sufficient_size,
)

logger = logging.getLogger(__name__)


@dataclass
class Analysis:
    """The Result document, the stored curve, and the trained model."""

    result: Result
    curve: list[CurvePoint]
    model: nn.Module | None = None


def validate_request(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    limits: Limits = Limits(),
    allow_download: bool = False,
) -> None:
    """Cheap checks before a job is queued; raises DataError or SpecError.

    The reference must resolve to something present; where the input shape
    can be read without loading the data (known data sets, file headers),
    the architecture's size is checked against the limits too.
    """
    check_reference(
        request.dataset, data_dir=data_dir, limits=limits, allow_download=allow_download
    )
    shape = peek_shape(request.dataset, data_dir=data_dir)
    if shape is not None:
        input_shape, num_classes = shape
        check_size(
            request.architecture,
            input_shape,
            num_classes,
            request.training.batch_size,
            limits,
        )


def _train_or_restore(
    model: nn.Module,
    data: Dataset,
    request: AnalysisRequest,
    *,
    device: torch.device,
    progress: Progress,
    checkpoint: Path | None,
) -> TrainReport:
    """Train to the minimum, or load the weights a previous attempt saved."""
    if checkpoint is not None and checkpoint.is_file():
        model.load_state_dict(load_file(checkpoint, device=str(device)))
        model.to(device)
        meta = _read_metadata(checkpoint)
        logger.info("restored weights from checkpoint %s", checkpoint.name)
        progress("training", 1.0)
        return TrainReport(
            loss=float(meta["loss"]),
            accuracy=float(meta["accuracy"]),
            epochs=int(meta["epochs"]),
            seconds=float(meta["seconds"]),
        )
    report = train(model, data, request.training, device=device, progress=progress)
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        partial = checkpoint.with_suffix(".partial")
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(
            state,
            partial,
            metadata={
                "loss": repr(report.loss),
                "accuracy": repr(report.accuracy),
                "epochs": str(report.epochs),
                "seconds": repr(report.seconds),
            },
        )
        partial.replace(checkpoint)  # atomic: a crash leaves no half-written file
    return report


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return handle.metadata() or {}


def _check_method_memory(request: AnalysisRequest, m: int, limits: Limits) -> None:
    """Refuse a method whose per-sample matrices would not fit, before allocating."""
    spec = request.analysis
    if spec.method == "neighbourhood":
        need, what = spec.draws * m * 8, f"{spec.draws} draws × {m:,} samples"
    elif spec.method == "hessian":
        need, what = spec.rank**2 * m * 8, f"rank {spec.rank}² × {m:,} samples"
    else:
        return
    if need > limits.max_dataset_bytes:
        raise SpecError(
            f"the {spec.method} method needs {need / 2**30:.1f} GiB for {what}; "
            f"the limit is {limits.max_dataset_bytes / 2**30:.1f} GiB: lower "
            "analysis.draws or analysis.rank, or set dataset.limit",
            field="analysis",
        )


def _measure(
    model: nn.Module,
    data: Dataset,
    request: AnalysisRequest,
    *,
    device: torch.device,
    progress: Progress,
) -> CurveEstimate:
    spec, seed = request.analysis, request.training.seed
    if spec.method == "learning-curve":
        from engine.methods import learning_curve

        return learning_curve.run(
            data,
            request.architecture,
            request.training,
            spec,
            device=device,
            progress=progress,
            match_steps=spec.match_steps,
        )
    module = importlib.import_module(f"engine.methods.{spec.method}")
    return module.run(model, data, spec, seed=seed, device=device, progress=progress)


def analyze(
    request: AnalysisRequest,
    *,
    data_dir: Path,
    allow_download: bool = False,
    limits: Limits = Limits(),
    progress: Progress = no_progress,
    checkpoint: Path | None = None,
) -> Analysis:
    """Run one analysis end to end and return its Result and curve.

    Stages reported through ``progress(stage, fraction)``: ``loading``,
    ``training``, then the method's own (``losses``, ``orderings``, ...),
    then ``verdict``. ``progress`` may raise (``AnalysisCancelled``) to stop
    between steps. With ``checkpoint``, weights are restored from that file
    when it exists (training is skipped) and written there after training.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 4)
        clock = now

    progress("loading", 0.0)
    device = resolve_device(request.training.device)
    data = load_dataset(
        request.dataset,
        data_dir=data_dir,
        allow_download=allow_download,
        seed=request.training.seed,
        limits=limits,
    )
    if data.size < 3:
        raise DataError(
            f"{data.name} has {data.size} samples; at least 3 are needed",
            field="dataset",
        )
    params = check_size(
        request.architecture,
        data.input_shape,
        data.num_classes,
        request.training.batch_size,
        limits,
    )
    _check_method_memory(request, data.size, limits)
    data = data.to(device)
    progress("loading", 1.0)
    lap("loading")

    seed_everything(request.training.seed)
    model = build_model(request.architecture, data.input_shape, data.num_classes)
    report = _train_or_restore(
        model, data, request, device=device, progress=progress, checkpoint=checkpoint
    )
    lap("training")

    estimate = _measure(model, data, request, device=device, progress=progress)
    lap("method")

    progress("verdict", 0.0)
    spec, m = request.analysis, data.size
    smoothed = smooth(estimate.delta, spec)
    k_star = sufficient_size(estimate.k, smoothed, spec.tolerance)
    sufficient = k_star is not None
    projection = None
    if not sufficient:
        projection = project(
            estimate, spec.tolerance, m, spec, seed=request.training.seed
        )
    projected = projection.size if projection else None
    result = Result(
        method=spec.method,
        sample_size=m,
        tolerance=spec.tolerance,
        final_delta=float(smoothed[-1]),
        sufficient=sufficient,
        sufficient_size=k_star,
        projected_size=projected,
        projected_interval=(
            (projection.low, projection.high)
            if projection and projection.low and projection.high
            else None
        ),
        additional_samples_needed=projected - m if projected else None,
        budget=budget_status(request.budget, sufficient, projected),
        train=TrainSummary(
            loss=report.loss,
            accuracy=report.accuracy,
            epochs=report.epochs,
            seconds=report.seconds,
        ),
        expected_sufficient_size=expected_sufficient_size(estimate, spec.tolerance),
        tail_fit=(
            {
                "constant": projection.constant,
                "exponent": projection.exponent,
                "points": projection.points,
                "note": projection.note,
            }
            if projection
            else None
        ),
        parameters=params,
        device=str(device),
        timings=timings,
        details=estimate.details,
    )
    curve = curve_points(estimate, smoothed, k_star)
    progress("verdict", 1.0)
    lap("verdict")
    result.timings.update(timings)
    return Analysis(result=result, curve=curve, model=model)
