"""From a measured curve to a verdict: k*, the projection and its interval.

``k* = inf{k : Δ_{k'} < ε for all k' ≥ k}`` on the smoothed curve. When the
curve has not settled by ``m``, the tail is fitted as ``Δ ≈ C·k^(−α)`` and
solved for ``Δ = ε``; the interval comes from a bootstrap over replicates
(orderings, draws or seeds), never a bare point estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from engine.curve import CurveEstimate, log_grid
from engine.result import Budget, CurvePoint
from engine.specs import AnalysisSpec

#: projections past this many samples are reported as "not in reach"
MAX_PROJECTION = 10**12


def smooth(delta: np.ndarray, spec: AnalysisSpec) -> np.ndarray:
    """The averaged curve smoothed as the paper does (EMA), or unchanged.

    ``s_1 = Δ_1``, ``s_k = a·s_{k−1} + (1−a)·Δ_k`` with ``a = spec.ema_factor``.
    """
    if spec.smoothing == "none" or delta.size == 0:
        return delta.astype(np.float64, copy=True)
    a = spec.ema_factor
    out, _ = lfilter([1 - a], [1, -a], delta, zi=[a * delta[0]])
    return out


def sufficient_size(k: np.ndarray, curve: np.ndarray, tolerance: float) -> int | None:
    """The first ``k`` from which ``curve`` stays below ``tolerance``; None if never."""
    above = np.flatnonzero(~(curve < tolerance))  # NaN counts as above
    if above.size == 0:
        return int(k[0])
    last = above[-1]
    return None if last == k.size - 1 else int(k[last + 1])


@dataclass
class Projection:
    """Where the tail fit says the curve reaches the tolerance."""

    size: int | None
    low: int | None
    high: int | None
    constant: float | None
    exponent: float | None
    points: int
    note: str | None = None


def _tail(bin_k: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Indices of the bins used for the tail fit: the upper half in log k."""
    positive = np.all(values > 0, axis=0) & np.isfinite(values).all(axis=0)
    candidates = np.flatnonzero(positive)
    if candidates.size < 2:
        return candidates
    cut = math.sqrt(bin_k[candidates[0]] * bin_k[candidates[-1]])
    tail = candidates[bin_k[candidates] >= cut]
    return tail if tail.size >= 3 else candidates[-min(3, candidates.size) :]


def _fit(log_k: np.ndarray, log_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through each row of ``log_v`` against ``log_k``.

    Returns ``(log C, α)`` per row for ``log v ≈ log C − α log k``.
    """
    x = log_k - log_k.mean()
    slope = (log_v - log_v.mean(-1, keepdims=True)) @ x / (x @ x)
    intercept = log_v.mean(-1) - slope * log_k.mean()
    return intercept, -slope


def _solve(log_c: np.ndarray, alpha: np.ndarray, tolerance: float) -> np.ndarray:
    """``k`` with ``C·k^(−α) = ε``; ``inf`` where the tail does not fall."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        k = np.exp((log_c - math.log(tolerance)) / alpha)
    return np.where(alpha > 0, k, np.inf)


def _as_size(value: float, floor: int) -> int | None:
    if not math.isfinite(value) or value > MAX_PROJECTION:
        return None
    return max(floor, math.ceil(value))


def project(
    estimate: CurveEstimate,
    tolerance: float,
    sample_size: int,
    spec: AnalysisSpec,
    *,
    seed: int = 0,
) -> Projection:
    """Fit the tail ``Δ ≈ C·k^(−α)`` and solve for ``Δ = ε``, with an interval.

    The point estimate fits the mean over replicates; the interval is the
    central ``spec.confidence`` range of the same fit over bootstrap
    resamples of the replicates (of the tail bins when there is only one).
    Sizes are clamped to at least ``m + 1``, since the data at hand do not
    suffice when this is called.
    """
    bins = estimate.replicate_bins  # (R, B)
    tail = _tail(estimate.bin_k, bins)
    if tail.size < 2:
        return Projection(
            None,
            None,
            None,
            None,
            None,
            int(tail.size),
            "too few positive points in the tail to fit",
        )
    log_k = np.log(estimate.bin_k[tail])
    log_c, alpha = _fit(log_k, np.log(bins[:, tail].mean(0)))
    floor = sample_size + 1
    size = _as_size(float(_solve(log_c, alpha, tolerance)), floor)

    rng = np.random.default_rng(seed)
    r = bins.shape[0]
    if r >= 2:
        weights = rng.multinomial(r, np.full(r, 1 / r), size=spec.bootstrap) / r
        log_v = np.log(weights @ bins[:, tail])  # (n_boot, tail)
        boot_c, boot_alpha = _fit(log_k, log_v)
    else:
        picks = rng.integers(0, tail.size, size=(spec.bootstrap, tail.size))
        boot = [
            _fit(log_k[p], np.log(bins[0, tail][p]))
            for p in picks
            if np.ptp(log_k[p]) > 0
        ]
        boot_c = np.array([b[0] for b in boot])
        boot_alpha = np.array([b[1] for b in boot])
    # a resample whose tail does not fall never reaches ε: past any size
    sizes = np.minimum(_solve(boot_c, boot_alpha, tolerance), 10.0 * MAX_PROJECTION)
    q = (1 - spec.confidence) / 2
    low, high = np.quantile(sizes, [q, 1 - q]) if sizes.size else (np.inf, np.inf)
    note = None
    if float(alpha) <= 0:
        note = "the tail does not fall: more data of this kind may not help"
    elif size is None:
        note = f"the projection is beyond {MAX_PROJECTION:.0e} samples"
    return Projection(
        size=size,
        low=_as_size(float(low), floor),
        high=_as_size(float(high), floor),
        constant=float(np.exp(log_c)),
        exponent=float(alpha),
        points=int(tail.size),
        note=note,
    )


def budget_status(
    budget: int | None, sufficient: bool, projected: int | None
) -> Budget | None:
    """Where the data stand against the caller's label budget.

    ``exceeded`` compares the point projection with the budget (a projection
    that does not converge exceeds any budget); the interval is reported
    beside it for callers that want to be more or less cautious.
    """
    if budget is None:
        return None
    if sufficient:
        return Budget(limit=budget, status="reached")
    if projected is None or projected > budget:
        return Budget(limit=budget, status="exceeded")
    return Budget(limit=budget, status="within")


def expected_sufficient_size(estimate: CurveEstimate, tolerance: float) -> int | None:
    """Where the noise-free expected curve reaches the tolerance, if it has one.

    Inside the measured range it is read off the curve; beyond it the
    expected curve's own tail (a power law) is solved.
    """
    if estimate.expected is None:
        return None
    found = sufficient_size(estimate.k, estimate.expected, tolerance)
    if found is not None:
        return found
    tail = np.flatnonzero(estimate.expected > 0)[-max(2, estimate.k.size // 2) :]
    if tail.size < 2:
        return None
    log_c, alpha = _fit(
        np.log(estimate.k[tail].astype(np.float64)), np.log(estimate.expected[tail])
    )
    return _as_size(float(_solve(log_c, alpha, tolerance)), int(estimate.k[-1]) + 1)


def curve_points(
    estimate: CurveEstimate,
    smoothed: np.ndarray,
    k_star: int | None,
    max_points: int = 1000,
) -> list[CurvePoint]:
    """The curve for storage: log-spaced, at most about ``max_points``.

    ``k*`` is always one of the points, with its exact delta and smoothed
    value; the band there is interpolated (in log k) between the two
    neighbouring measured points.
    """
    index = log_grid(estimate.k.size, max_points) - 1
    if k_star is not None:
        index = np.union1d(index, np.searchsorted(estimate.k, [k_star]))
    ks = estimate.k[index].astype(np.float64)
    log_band_k = np.log(estimate.band_k.astype(np.float64))
    low = np.interp(np.log(ks), log_band_k, estimate.band_low)
    high = np.interp(np.log(ks), log_band_k, estimate.band_high)
    expected = estimate.expected
    return [
        CurvePoint(
            k=int(estimate.k[i]),
            delta=float(estimate.delta[i]),
            delta_low=float(lo),
            delta_high=float(hi),
            delta_expected=None if expected is None else float(expected[i]),
            smoothed=float(smoothed[i]),
        )
        for i, lo, hi in zip(index, low, high, strict=True)
    ]
