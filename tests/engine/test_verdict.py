"""The verdict on synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from engine.curve import CurveEstimate, log_bins, log_grid
from engine.specs import AnalysisSpec
from engine.verdict import (
    budget_status,
    curve_points,
    expected_sufficient_size,
    project,
    smooth,
    sufficient_size,
)


def synthetic(m: int, constant: float, alpha: float, noise: float, replicates=40):
    """A curve ``C·k^(−α)`` with multiplicative noise per replicate."""
    rng = np.random.default_rng(0)
    k = np.arange(1, m, dtype=np.int64)
    clean = constant * k.astype(float) ** -alpha
    # mean-one noise, so the mean over replicates is the clean curve
    per_replicate = clean * rng.lognormal(-(noise**2) / 2, noise, (replicates, m - 1))
    index, centres = log_bins(m - 1)
    counts = np.bincount(index)
    bins = np.stack([np.bincount(index, weights=row) / counts for row in per_replicate])
    grid = log_grid(m - 1)
    low, high = np.quantile(per_replicate[:, grid - 1], [0.05, 0.95], axis=0)
    return CurveEstimate(
        k=k,
        delta=per_replicate.mean(0),
        band_k=grid,
        band_low=low,
        band_high=high,
        bin_k=centres,
        replicate_bins=bins,
        expected=clean,
    )


def test_sufficient_size_is_where_the_curve_stays_below():
    k = np.arange(1, 11)
    curve = np.array([9, 8, 1, 7, 1, 1, 6, 1, 1, 1], dtype=float)
    assert sufficient_size(k, curve, 5) == 8
    assert sufficient_size(k, curve, 10) == 1
    assert sufficient_size(k, np.r_[curve[:-1], 6.0], 5) is None
    assert sufficient_size(k, np.r_[curve[:-1], np.nan], 5) is None


def test_ema_matches_the_recursion():
    delta = np.random.default_rng(1).random(500)
    spec = AnalysisSpec(ema_factor=0.9)
    out = smooth(delta, spec)
    ref = [delta[0]]
    for value in delta[1:]:
        ref.append(0.9 * ref[-1] + 0.1 * value)
    np.testing.assert_allclose(out, ref)
    assert np.array_equal(smooth(delta, AnalysisSpec(smoothing="none")), delta)


def test_sufficient_curve_gives_k_star_and_no_projection():
    estimate = synthetic(20_000, constant=0.5, alpha=1.0, noise=0.05)
    spec = AnalysisSpec(tolerance=1e-4)
    smoothed = smooth(estimate.delta, spec)
    k_star = sufficient_size(estimate.k, smoothed, spec.tolerance)
    # 0.5/k < 1e-4 from k = 5000; the EMA lags by about 1/(1 − 0.99) = 100 steps
    assert 5000 <= k_star <= 5300
    assert budget_status(1000, True, None).status == "reached"


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_insufficient_curve_projects_the_known_size(alpha):
    constant, m, truth = 0.5, 2000, 5000
    tolerance = constant * truth**-alpha
    estimate = synthetic(m, constant, alpha, noise=0.3)
    projection = project(estimate, tolerance, m, AnalysisSpec(tolerance=tolerance))
    assert projection.low <= truth <= projection.high
    assert abs(projection.size - truth) / truth < 0.05
    assert projection.exponent == pytest.approx(alpha, rel=0.02)
    assert projection.low <= projection.size <= projection.high


def test_projection_interval_narrows_with_more_replicates():
    spec = AnalysisSpec()
    few = project(synthetic(2000, 0.5, 1.0, 0.5, replicates=5), 1e-4, 2000, spec)
    many = project(synthetic(2000, 0.5, 1.0, 0.5, replicates=200), 1e-4, 2000, spec)
    assert many.high - many.low < few.high - few.low


def test_flat_tail_has_no_projection():
    estimate = synthetic(2000, 0.5, 0.0, noise=0.1)
    projection = project(estimate, 1e-4, 2000, AnalysisSpec())
    assert projection.size is None
    assert "does not fall" in projection.note
    assert budget_status(10**6, False, projection.size).status == "exceeded"


def test_budget_status():
    assert budget_status(None, False, 5000) is None
    assert budget_status(4000, False, 5000).status == "exceeded"
    assert budget_status(5000, False, 5000).status == "within"


def test_expected_size_inside_and_beyond_the_range():
    inside = synthetic(20_000, 0.5, 1.0, 0.01)
    assert expected_sufficient_size(inside, 1e-4) == 5001
    beyond = synthetic(2000, 0.5, 1.0, 0.01)
    assert expected_sufficient_size(beyond, 1e-4) == pytest.approx(5000, rel=1e-3)


def test_stored_curve_is_downsampled_and_exact_at_k_star():
    estimate = synthetic(50_000, 0.5, 1.0, 0.05)
    smoothed = smooth(estimate.delta, AnalysisSpec())
    k_star = 5123
    points = curve_points(estimate, smoothed, k_star)
    ks = [p.k for p in points]
    assert len(points) <= 1001 and ks == sorted(set(ks))
    assert ks[0] == 1 and ks[-1] == 49_999
    at = points[ks.index(k_star)]
    assert at.delta == estimate.delta[k_star - 1]
    assert at.smoothed == smoothed[k_star - 1]
    assert at.delta_low <= at.delta_high
