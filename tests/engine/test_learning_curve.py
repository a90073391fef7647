"""Method 4, the learning curve: split, sizes, power-law fit and a full run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dataset import Dataset
from engine.errors import SpecError
from engine.methods import learning_curve as lc
from engine.specs import AnalysisSpec, ArchSpec, TrainSpec

CPU = torch.device("cpu")
SMALL_ARCH = ArchSpec(kind="mlp", hidden_size=8, num_layers=1)


def _blobs(m: int = 240, classes: int = 3, seed: int = 0) -> Dataset:
    """Gaussian blobs whose first feature is the sample's id (to trace subsets)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, m)
    x = rng.normal(size=(m, 4)) + y[:, None]
    x[:, 0] = np.arange(m)
    return Dataset(
        "blobs",
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
        classes,
    )


# --- the power-law fit ------------------------------------------------------

SIZES = np.geomspace(10, 10_000, 12).round()


@pytest.mark.parametrize(
    "a, b, c",
    [(5.0, 0.5, 0.2), (2.0, 1.0, 0.0), (30.0, 0.3, 1.0), (0.5, 2.0, 0.05)],
)
def test_fit_recovers_noiseless_power_law(a, b, c):
    fa, fb, fc = lc.fit_power_law(SIZES, a * SIZES ** (-b) + c)
    assert fa == pytest.approx(a, rel=1e-6)
    assert fb == pytest.approx(b, rel=1e-6)
    assert fc == pytest.approx(c, rel=1e-6, abs=1e-8)


def test_fit_with_noise_is_within_tolerance():
    # err = 5·n^−0.5 + 0.2 spans about 0.25–1.8 nats; noise sd 0.005 nats.
    # Over 200 seeded draws of this design the estimates have standard
    # deviations of about 0.048 (a), 0.0041 (b) and 0.0038 (c), so the bounds
    # below are about 5 standard deviations: a failure means a biased fit,
    # not an unlucky draw.
    a, b, c = 5.0, 0.5, 0.2
    rng = np.random.default_rng(1)
    for _ in range(5):
        err = a * SIZES ** (-b) + c + rng.normal(0, 0.005, SIZES.size)
        fa, fb, fc = lc.fit_power_law(SIZES, err)
        assert abs(fa - a) < 0.25
        assert abs(fb - b) < 0.02
        assert abs(fc - c) < 0.02


def test_fit_respects_bounds_and_needs_three_points():
    n = np.array([10.0, 100.0, 1000.0])
    # Exactly determined: curve_fit cannot estimate a covariance, which must
    # not surface as a warning (warnings are errors in this suite).
    a, b, c = lc.fit_power_law(n, 3.0 * n**-0.7 + 0.1)
    assert (a, b, c) == pytest.approx((3.0, 0.7, 0.1), rel=1e-5)
    # A rising curve cannot be fitted with a ≥ 0 except as a flat line.
    a, b, c = lc.fit_power_law(n, np.array([1.0, 1.5, 2.0]))
    assert a >= 0 and b > 0 and c >= 0
    with pytest.raises(RuntimeError):
        lc.fit_power_law(n[:2], np.array([1.0, 0.5]))
    with pytest.raises(RuntimeError):
        lc.fit_power_law(n, np.array([1.0, np.nan, 0.5]))


def test_fit_differences_recovers_derivative_exponent():
    # For a·n^−b + c the secant slopes placed at geometric means follow
    # a·b·k^−(b+1) exactly when b = 1.
    n = SIZES
    err = 2.0 / n + 0.3
    k = np.sqrt(n[:-1] * n[1:])
    log_c, alpha = lc.fit_differences(k, np.abs(np.diff(err)) / np.diff(n))
    assert alpha == pytest.approx(2.0, rel=1e-9)
    assert np.exp(log_c) == pytest.approx(2.0, rel=1e-9)
    with pytest.raises(RuntimeError):
        lc.fit_differences(k, np.zeros_like(k))


# --- split and sizes --------------------------------------------------------


def test_split_is_stratified_disjoint_and_complete():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, held = lc.split_holdout(y, 0.2, seed=3)
    assert held.numel() == 20 and train.numel() == 80
    assert torch.equal(torch.sort(torch.cat([train, held])).values, torch.arange(100))
    assert torch.bincount(y[held], minlength=3).tolist() == [10, 6, 4]
    again = lc.split_holdout(y, 0.2, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], held)


def test_split_edge_cases():
    train, held = lc.split_holdout(torch.tensor([0, 1, 0]), 0.01, seed=0)
    assert held.numel() == 1 and train.numel() == 2
    train, held = lc.split_holdout(torch.tensor([0, 1, 0, 1]), 0.99, seed=0)
    assert held.numel() == 2 and train.numel() == 2
    with pytest.raises(SpecError):
        lc.split_holdout(torch.tensor([0, 1]), 0.5, seed=0)


@pytest.mark.parametrize(
    "n_train, classes, count",
    [(1437, 10, 4), (1437, 10, 50), (100_000, 3, 8), (15, 10, 8), (2, 2, 5)],
)
def test_sizes_ascending_and_capped(n_train, classes, count):
    sizes = lc.subset_sizes(n_train, classes, count)
    assert sizes.dtype == np.int64
    assert np.all(np.diff(sizes) > 0)
    assert sizes[-1] == n_train and sizes[0] >= 1
    assert 2 <= len(sizes) <= count
    if n_train >= 2 * max(2 * classes, lc.MIN_SUBSET):
        assert sizes[0] == max(2 * classes, lc.MIN_SUBSET)


# --- runs -------------------------------------------------------------------


def test_subsets_nested_and_never_touch_held_out(monkeypatch):
    data = _blobs()
    trained: list[set[int]] = []
    evaluated: list[set[int]] = []
    real_train, real_losses = lc.train, lc.per_sample_losses

    def recording_train(model, subset, spec, **kwargs):
        trained.append(set(subset.x[:, 0].long().tolist()))
        return real_train(model, subset, spec, **kwargs)

    def recording_losses(model, held, **kwargs):
        evaluated.append(set(held.x[:, 0].long().tolist()))
        return real_losses(model, held, **kwargs)

    monkeypatch.setattr(lc, "train", recording_train)
    monkeypatch.setattr(lc, "per_sample_losses", recording_losses)
    spec = AnalysisSpec(method="learning-curve", subset_sizes=4, seeds=2)
    est = lc.run(data, SMALL_ARCH, TrainSpec(epochs=1), spec, device=CPU)

    sizes = est.details["sizes"]
    assert len(trained) == est.details["trainings"] == 2 * len(sizes)
    held = evaluated[0]
    assert all(e == held for e in evaluated)
    assert len(held) == est.details["holdout_size"] == 48
    for r in range(2):
        runs = trained[r * len(sizes) : (r + 1) * len(sizes)]
        assert [len(s) for s in runs] == sizes
        assert all(a < b for a, b in zip(runs, runs[1:], strict=False))
        assert all(not (s & held) for s in runs)
        assert len(runs[-1]) + len(held) == data.size
    # Seeds draw different orderings of the same training part.
    assert trained[0] != trained[len(sizes)]


def test_curve_shapes_and_determinism():
    data = _blobs()
    spec = AnalysisSpec(method="learning-curve", subset_sizes=5, seeds=3, band=0.8)
    training = TrainSpec(epochs=2, seed=7)
    calls: list[tuple[str, float]] = []
    est = lc.run(
        data,
        SMALL_ARCH,
        training,
        spec,
        device=CPU,
        progress=lambda *a: calls.append(a),
    )
    n = len(est.details["sizes"]) - 1
    assert est.k.dtype == np.int64 and np.all(np.diff(est.k) > 0)
    for arr in (est.delta, est.band_low, est.band_high, est.expected):
        assert arr.shape == (n,)
    assert np.array_equal(est.band_k, est.k) and np.array_equal(est.bin_k, est.k)
    assert est.replicate_bins.shape == (3, n)
    assert np.allclose(est.delta, est.replicate_bins.mean(0))
    assert np.all(est.band_low <= est.delta + 1e-15)
    assert np.all(est.delta <= est.band_high + 1e-15)
    assert [c[0] for c in calls] == ["learning-curve"] * (est.details["trainings"] + 1)
    fractions = [c[1] for c in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)

    again = lc.run(data, SMALL_ARCH, training, spec, device=CPU)
    for name in ("k", "delta", "band_low", "band_high", "replicate_bins", "expected"):
        assert np.array_equal(getattr(est, name), getattr(again, name)), name
    assert est.details == again.details

    other = lc.run(data, SMALL_ARCH, TrainSpec(epochs=2, seed=8), spec, device=CPU)
    assert not np.array_equal(est.delta, other.delta)


def test_one_seed_band_collapses_and_fit_failure_falls_back(monkeypatch):
    def failing(n, err):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(lc, "fit_power_law", failing)
    spec = AnalysisSpec(method="learning-curve", subset_sizes=4, seeds=1)
    est = lc.run(_blobs(), SMALL_ARCH, TrainSpec(epochs=1), spec, device=CPU)
    assert np.array_equal(est.band_low, est.delta)
    assert np.array_equal(est.band_high, est.delta)
    assert est.details["fit"] is None
    assert "no convergence" in est.details["fit_error"]
    assert est.expected is None or est.expected.shape == est.delta.shape


def test_match_steps_scales_epochs(monkeypatch):
    epochs: list[tuple[int, int]] = []
    real_train = lc.train

    def recording_train(model, subset, spec, **kwargs):
        epochs.append((subset.size, spec.epochs))
        return real_train(model, subset, spec, **kwargs)

    monkeypatch.setattr(lc, "train", recording_train)
    spec = AnalysisSpec(method="learning-curve", subset_sizes=3, seeds=1)
    training = TrainSpec(epochs=2, batch_size=16)
    est = lc.run(_blobs(), SMALL_ARCH, training, spec, device=CPU, match_steps=True)
    # 192 training samples: 12 batches × 2 epochs = 24 steps; sizes 10 and 44
    # are 1 and 3 batches.
    assert [n for n, _ in epochs] == est.details["sizes"] == [10, 44, 192]
    assert [e for _, e in epochs] == est.details["epochs"] == [24, 8, 2]
    epochs.clear()
    est = lc.run(_blobs(), SMALL_ARCH, training, spec, device=CPU)
    assert [e for _, e in epochs] == est.details["epochs"] == [2, 2, 2]


def test_digits_end_to_end():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    data = Dataset(
        "digits",
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
        10,
    )
    spec = AnalysisSpec(method="learning-curve", subset_sizes=4, seeds=2)
    est = lc.run(data, ArchSpec(), TrainSpec(epochs=3), spec, device=CPU)

    d = est.details
    assert d["sizes"][0] == 20 and d["sizes"][-1] == d["train_size"]
    assert d["holdout_size"] + d["train_size"] == 1797
    assert d["trainings"] == 8 and d["seeds"] == 2
    assert d["heldout_loss"][-1] < d["heldout_loss"][0]
    assert d["heldout_accuracy"][-1] > d["heldout_accuracy"][0]
    assert np.all(np.isfinite(est.delta)) and np.all(est.delta >= 0)
    if d["fit"] is not None:
        assert d["fit"]["a"] >= 0 and d["fit"]["b"] > 0 and d["fit"]["c"] >= 0
        assert np.all(np.isfinite(est.expected))
    else:
        assert "fit_error" in d
