"""Convergence curves: what a method measures, and the work over orderings.

Every method reduces to the same shape of answer: a change ``delta`` of the
loss (or of the Hessian) for sample sizes ``k``, averaged over replicates
(random orderings of the samples, perturbation draws, seeds), with a band
across replicates and per-replicate averages over log-spaced bins of ``k``
that the verdict bootstraps for its interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

Progress = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    """A progress callback that ignores everything."""


@dataclass
class CurveEstimate:
    """A measured convergence curve, before smoothing and the verdict."""

    #: (n,) sample sizes, ascending
    k: np.ndarray
    #: (n,) mean over replicates of the change when sample k+1 is added
    delta: np.ndarray
    #: (G,) sample sizes where the band across replicates was measured
    band_k: np.ndarray
    #: (G,) lower and upper quantile across replicates at ``band_k``
    band_low: np.ndarray
    band_high: np.ndarray
    #: (B,) geometric centre of each log-spaced bin of k
    bin_k: np.ndarray
    #: (R, B) each replicate's mean delta over each bin (for the bootstrap)
    replicate_bins: np.ndarray
    #: (n,) a noise-free expected curve where one is known in closed form
    expected: np.ndarray | None = None
    #: method-specific figures for the Result (JSON-serialisable)
    details: dict = field(default_factory=dict)


def log_grid(n: int, points: int = 1000) -> np.ndarray:
    """About ``points`` distinct, log-spaced integers in ``[1, n]``, both ends in."""
    if n <= points:
        return np.arange(1, n + 1, dtype=np.int64)
    grid = np.unique(np.geomspace(1, n, points).round().astype(np.int64))
    grid[-1] = n
    return grid


def log_bins(n: int, bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Assign each of ``k = 1..n`` to one of up to ``bins`` log-spaced bins.

    Returns ``(index, centres)``: ``index[k-1]`` is the bin of ``k`` and
    ``centres`` the geometric centre of each non-empty bin.
    """
    edges = np.unique(np.geomspace(1, n + 1, bins + 1).astype(np.int64))
    k = np.arange(1, n + 1)
    index = np.searchsorted(edges, k, side="right") - 1
    index = np.clip(index, 0, len(edges) - 2)
    used, index = np.unique(index, return_inverse=True)
    lo, hi = edges[used], np.minimum(edges[used + 1] - 1, n)
    centres = np.sqrt(lo * np.maximum(hi, lo))
    return index.astype(np.int64), centres


def ordering_chunk(m: int, permutations: int, budget_bytes: int = 96 * 2**20) -> int:
    """How many orderings to process at once so one (c, m) float64 array fits."""
    return int(max(1, min(permutations, budget_bytes // (8 * max(m, 1)))))


def over_orderings(
    m: int,
    permutations: int,
    seed: int,
    deltas: Callable[[torch.Tensor], torch.Tensor],
    *,
    band: float = 0.9,
    progress: Progress = no_progress,
    stage: str = "orderings",
    device: torch.device | str = "cpu",
) -> CurveEstimate:
    """Average a per-ordering curve over ``permutations`` random orderings.

    ``deltas(perms)`` receives a ``(c, m)`` int64 tensor of orderings and
    returns the ``(c, m-1)`` float64 changes for ``k = 1..m-1``. Orderings are
    processed in chunks so that memory stays ``O(c·m)`` whatever ``P`` is;
    the total work is ``O(P·m)``. Orderings come from one generator seeded
    with ``seed``, so the same seed gives the same curve.
    """
    if m < 2:
        raise ValueError("at least two samples are needed for a curve")
    n = m - 1
    k = np.arange(1, m, dtype=np.int64)
    band_k = log_grid(n)
    band_at = torch.as_tensor(band_k - 1, device=device)
    bin_index, bin_k = log_bins(n)
    bin_index_t = torch.as_tensor(bin_index, device=device)
    bin_count = torch.bincount(bin_index_t).to(torch.float64)

    generator = torch.Generator(device="cpu").manual_seed(seed)
    total = torch.zeros(n, dtype=torch.float64, device=device)
    at_grid, per_bin = [], []
    chunk = ordering_chunk(m, permutations)
    done = 0
    while done < permutations:
        c = min(chunk, permutations - done)
        perms = torch.stack([torch.randperm(m, generator=generator) for _ in range(c)])
        d = deltas(perms.to(device))  # (c, m-1)
        total += d.sum(0)
        at_grid.append(d[:, band_at].cpu())
        sums = torch.zeros(c, len(bin_k), dtype=torch.float64, device=device)
        per_bin.append((sums.index_add_(1, bin_index_t, d) / bin_count).cpu())
        done += c
        progress(stage, done / permutations)

    grid_values = torch.cat(at_grid).numpy()  # (P, G)
    tail = (1 - band) / 2
    low, high = np.quantile(grid_values, [tail, 1 - tail], axis=0)
    return CurveEstimate(
        k=k,
        delta=(total / permutations).cpu().numpy(),
        band_k=band_k,
        band_low=low,
        band_high=high,
        bin_k=bin_k,
        replicate_bins=torch.cat(per_bin).numpy(),
    )


def running_mean_change(values: torch.Tensor) -> torch.Tensor:
    """``(ℓ_{k+1} − L_k) / (k+1)`` for each row of ordered values.

    ``values`` is ``(..., m)`` (float64 recommended); the result is
    ``(..., m-1)`` and is exactly ``L_{k+1} − L_k`` where ``L_k`` is the mean
    of the first ``k`` values.
    """
    m = values.shape[-1]
    k = torch.arange(1, m, dtype=values.dtype, device=values.device)
    prefix_mean = values[..., :-1].cumsum(-1) / k  # L_k, k = 1..m-1
    return (values[..., 1:] - prefix_mean) / (k + 1)
