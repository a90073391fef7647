"""Method 1 — the point delta of Kiselev & Grabovoy (2024).

Per-sample losses at the trained weights ``θ̂`` in one batched pass, then
``Δ_k = |L_{k+1}(θ̂) − L_k(θ̂)|`` over ``P`` random orderings with a cumulative
sum: ``O(P·m)`` work in chunks of orderings, never ``O(m²)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.curve import (
    CurveEstimate,
    Progress,
    no_progress,
    over_orderings,
    running_mean_change,
)
from engine.dataset import Dataset
from engine.specs import AnalysisSpec
from engine.train import per_sample_losses


def expected_delta(losses: torch.Tensor, k: np.ndarray) -> np.ndarray:
    """Root-mean-square delta over all orderings, exactly: ``S / √(k(k+1))``.

    ``S²`` is the unbiased sample variance of the per-sample losses; the
    formula holds for draws without replacement (METHOD.md, the oracle).
    """
    s = float(losses.std(unbiased=True)) if losses.numel() > 1 else 0.0
    k = k.astype(np.float64)
    return s / np.sqrt(k * (k + 1))


def curve_from_losses(
    losses: torch.Tensor,
    spec: AnalysisSpec,
    *,
    seed: int,
    progress: Progress = no_progress,
) -> CurveEstimate:
    """The point curve for a vector of per-sample losses ``(m,)``."""
    values = losses.to(torch.float64).cpu()

    def deltas(perms: torch.Tensor) -> torch.Tensor:
        return running_mean_change(values[perms]).abs_()  # (c, m-1)

    estimate = over_orderings(
        values.numel(),
        spec.permutations,
        seed,
        deltas,
        band=spec.band,
        progress=progress,
    )
    estimate.expected = expected_delta(values, estimate.k)
    estimate.details = {
        "loss_mean": float(values.mean()),
        "loss_std": float(values.std(unbiased=True)),
    }
    return estimate


def run(
    model: nn.Module,
    data: Dataset,
    spec: AnalysisSpec,
    *,
    seed: int,
    device: torch.device,
    progress: Progress = no_progress,
) -> CurveEstimate:
    """Point delta at the trained weights of ``model`` on ``data``."""
    progress("losses", 0.0)
    losses = per_sample_losses(model, data, device=device)
    progress("losses", 1.0)
    return curve_from_losses(losses, spec, seed=seed, progress=progress)
