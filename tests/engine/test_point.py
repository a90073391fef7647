"""The point curve: the cumulative-sum delta against the closed-form oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.curve import log_bins, log_grid, over_orderings, running_mean_change
from engine.methods.point import curve_from_losses, expected_delta
from engine.specs import AnalysisSpec

loss_vectors = arrays(
    np.float64,
    st.integers(min_value=3, max_value=120),
    elements=st.floats(0, 50, allow_nan=False, allow_infinity=False),
)


def test_running_mean_change_is_the_difference_of_prefix_means():
    values = torch.rand(3, 57, dtype=torch.float64)
    prefix = torch.stack(
        [values[:, : k + 1].mean(1) for k in range(values.shape[1])], dim=1
    )
    expected = prefix[:, 1:] - prefix[:, :-1]  # L_{k+1} - L_k, k = 1..m-1
    torch.testing.assert_close(running_mean_change(values), expected)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(losses=loss_vectors)
def test_mean_squared_delta_matches_the_closed_form(losses):
    """E[(L_{k+1} − L_k)²] = S²/(k(k+1)) over uniform orderings.

    The tolerance is the Monte-Carlo error of the very sample used: at every
    k the gap must lie within 6 standard errors of the mean over orderings
    (one k in about 10⁹ would fail by chance; ``derandomize`` fixes the draws).
    """
    values = torch.from_numpy(losses)
    m, permutations = values.numel(), 4000
    seen: list[torch.Tensor] = []

    def squared(perms: torch.Tensor) -> torch.Tensor:
        d = running_mean_change(values[perms]) ** 2
        seen.append(d)
        return d

    estimate = over_orderings(m, permutations, seed=7, deltas=squared)
    samples = torch.cat(seen).numpy()  # (P, m-1)
    k = np.arange(1, m, dtype=np.float64)
    oracle = float(values.var(unbiased=True)) / (k * (k + 1))
    standard_error = samples.std(0, ddof=1) / math.sqrt(permutations)
    scale = max(float(values.abs().max()), 1.0) ** 2
    gap = np.abs(estimate.delta - oracle)
    assert np.all(gap <= 6 * standard_error + 1e-12 * scale)
    np.testing.assert_allclose(estimate.delta, samples.mean(0), rtol=1e-12)


def test_expected_curve_is_rms_of_the_sampled_deltas():
    losses = torch.distributions.Gamma(2.0, 3.0).sample((500,)).double()
    k = np.arange(1, 500)
    spec = AnalysisSpec(permutations=2000)
    estimate = curve_from_losses(losses, spec, seed=1)
    expected = expected_delta(losses, k)
    np.testing.assert_allclose(estimate.expected, expected)
    # |Δ| averaged is below its RMS (Jensen) and near sqrt(2/π)·RMS for large k
    assert np.all(estimate.delta[50:] < expected[50:])
    ratio = estimate.delta[100:] / expected[100:]
    assert 0.7 < float(np.median(ratio)) < 0.85


def test_same_seed_same_curve_and_band_brackets_the_mean():
    losses = torch.rand(3000, dtype=torch.float64)
    spec = AnalysisSpec(permutations=30)
    a = curve_from_losses(losses, spec, seed=3)
    b = curve_from_losses(losses, spec, seed=3)
    c = curve_from_losses(losses, spec, seed=4)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert not np.array_equal(a.delta, c.delta)
    at_band = a.delta[a.band_k - 1]
    assert np.all(a.band_low <= at_band + 1e-15)
    assert np.all(at_band <= a.band_high + 1e-15)
    assert a.replicate_bins.shape == (30, a.bin_k.size)


def test_chunking_does_not_change_the_curve(monkeypatch):
    losses = torch.rand(2000, dtype=torch.float64)
    spec = AnalysisSpec(permutations=12)
    whole = curve_from_losses(losses, spec, seed=5)
    monkeypatch.setattr("engine.curve.ordering_chunk", lambda m, p: 5)
    chunked = curve_from_losses(losses, spec, seed=5)
    np.testing.assert_allclose(whole.delta, chunked.delta, rtol=1e-12)
    np.testing.assert_allclose(whole.replicate_bins, chunked.replicate_bins)


@pytest.mark.parametrize("n", [1, 2, 7, 999, 1000, 1001, 123_456])
def test_log_grid_and_bins_cover_the_range(n):
    grid = log_grid(n)
    assert grid[0] == 1 and grid[-1] == n and len(grid) <= 1000
    assert np.all(np.diff(grid) > 0)
    index, centres = log_bins(n)
    assert index.shape == (n,) and index.min() == 0
    assert index.max() == centres.size - 1
    assert np.all(np.diff(index) >= 0)
    assert np.all(np.diff(centres) > 0)
