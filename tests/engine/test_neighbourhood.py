"""Method 2: perturbation draws, batched losses and the neighbourhood curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dataset import Dataset
from engine.methods import neighbourhood as nb
from engine.models import build_model
from engine.specs import AnalysisSpec, ArchSpec, TrainSpec
from engine.train import per_sample_losses, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small():
    """An untrained MLP with biases on 200 synthetic samples, 4 classes."""
    torch.manual_seed(0)
    data = Dataset("synthetic", torch.randn(200, 5), torch.randint(0, 4, (200,)), 4)
    model = build_model(ArchSpec(hidden_size=8, num_layers=2, bias=True), (5,), 4)
    return model, data


@pytest.fixture(scope="module")
def trained(digits):
    """An MLP (hidden 16, 3 layers, no bias) trained briefly on sklearn digits."""
    torch.manual_seed(0)
    model = build_model(ArchSpec(), digits.input_shape, 10)
    train(model, digits, TrainSpec(epochs=2), device=CPU)
    return model, digits


def test_filter_normalised_directions_have_layer_norms(small):
    model, _ = small
    layout = nb.ParameterLayout(model)
    theta = nb.flat_parameters(model, layout)
    generator = torch.Generator().manual_seed(0)
    directions = nb.filter_normalised_directions(layout, theta, 3, generator)
    assert directions.shape == (3, layout.size)
    weights = dict(model.named_parameters())
    for d in directions:
        parts = layout.unflatten(d)
        for name, part in parts.items():
            if part.ndim >= 2:
                torch.testing.assert_close(part.norm(), weights[name].detach().norm())
            else:
                assert name.endswith("bias")
                assert torch.all(part == 0)
    # two directions are different draws
    assert not torch.allclose(directions[0], directions[1])


def test_draws_do_not_depend_on_chunking(small):
    model, _ = small
    layout = nb.ParameterLayout(model)
    theta = nb.flat_parameters(model, layout)
    for form in ("subspace", "isotropic"):
        spec = AnalysisSpec(method="neighbourhood", perturbation=form, draws=10)
        whole = nb.Draws(layout, theta, spec, seed=3).take(10)
        pieces = nb.Draws(layout, theta, spec, seed=3)
        parts = torch.cat([pieces.take(3), pieces.take(3), pieces.take(10)])
        assert parts.shape == (10, layout.size)
        torch.testing.assert_close(whole, parts, rtol=0, atol=0)


def test_draws_have_the_requested_spread(small):
    model, _ = small
    layout = nb.ParameterLayout(model)
    theta = nb.flat_parameters(model, layout)
    spec = AnalysisSpec(
        method="neighbourhood", perturbation="isotropic", draws=400, sigma=0.3
    )
    offsets = nb.Draws(layout, theta, spec, seed=0).take(400) - theta  # (S, P)
    # std of 400·P standard normals times σ: within 2% of σ
    assert float(offsets.std()) == pytest.approx(0.3, rel=0.02)

    spec = AnalysisSpec(
        method="neighbourhood", perturbation="subspace", draws=400, sigma=0.3
    )
    draws = nb.Draws(layout, theta, spec, seed=0)
    offsets = draws.take(400) - theta  # (S, P)
    coefficients = torch.linalg.lstsq(draws.directions.T, offsets.T).solution.T
    torch.testing.assert_close(coefficients @ draws.directions, offsets)
    assert float(coefficients.std()) == pytest.approx(0.3, rel=0.1)


def test_batched_losses_equal_a_loop_over_draws(small, monkeypatch):
    model, data = small
    layout = nb.ParameterLayout(model)
    theta = nb.flat_parameters(model, layout)
    spec = AnalysisSpec(method="neighbourhood", draws=5, sigma=0.5)
    # a tiny budget forces several draw chunks and data batches
    monkeypatch.setattr(nb, "CPU_ACTIVATION_BUDGET", 4 * 8 * 64 * 2)
    chunks = nb.chunk_sizes(5, data.size, 8, layout.size, nb.CPU_ACTIVATION_BUDGET)
    assert chunks == (1, 128)  # five draw chunks, two data batches
    batched = nb.loss_matrix(model, data, nb.Draws(layout, theta, spec, 1), device=CPU)
    assert batched.shape == (5, data.size) and batched.dtype == torch.float64

    thetas = nb.Draws(layout, theta, spec, 1).take(5)
    copy = build_model(ArchSpec(hidden_size=8, num_layers=2, bias=True), (5,), 4)
    for s in range(5):
        copy.load_state_dict(layout.unflatten(thetas[s]))
        torch.testing.assert_close(
            batched[s], per_sample_losses(copy, data, device=CPU), rtol=1e-5, atol=1e-6
        )


def test_activation_width_ignores_the_flattened_input():
    model = build_model(ArchSpec(), (1, 28, 28), 10)
    data = Dataset("images", torch.rand(3, 1, 28, 28), torch.zeros(3).long(), 10)
    assert nb.activation_width(model, data, CPU) == 16
    assert nb.activation_total(model, data, CPU) == 2 * 784 + 8 * 16 + 10


def test_squared_curve_matches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    s_count, m, n = 4, 24, 4000
    losses = torch.rand(s_count, m, generator=generator, dtype=torch.float64) ** 2
    spec = AnalysisSpec(method="neighbourhood", permutations=n, squared=True)
    estimate = nb.curve_from_loss_matrix(losses, spec, seed=1)

    # the per-ordering values on an independent set of orderings: their
    # spread over orderings sets the Monte-Carlo tolerance
    perms = torch.stack([torch.randperm(m, generator=generator) for _ in range(n)])
    per_ordering = nb.ordering_deltas(losses, perms, squared=True)  # (n, m-1)
    standard_error = per_ordering.std(0).numpy() / np.sqrt(n)
    k = np.arange(1, m)
    variance = losses.var(dim=1, unbiased=True).mean().item()
    closed_form = variance / (k * (k + 1))
    np.testing.assert_allclose(estimate.expected, closed_form, rtol=1e-12)
    assert np.all(
        np.abs(per_ordering.mean(0).numpy() - closed_form) < 5 * standard_error
    )
    assert np.all(np.abs(estimate.delta - closed_form) < 5 * standard_error)


def test_absolute_form_reports_the_rms():
    generator = torch.Generator().manual_seed(2)
    losses = torch.rand(3, 50, generator=generator, dtype=torch.float64)
    squared = nb.curve_from_loss_matrix(
        losses, AnalysisSpec(permutations=200, squared=True), seed=0
    )
    absolute = nb.curve_from_loss_matrix(
        losses, AnalysisSpec(permutations=200, squared=False), seed=0
    )
    np.testing.assert_allclose(absolute.expected, np.sqrt(squared.expected))
    # E|X| ≤ √E[X²]: the sampled absolute curve sits below the RMS
    assert np.mean(absolute.delta / absolute.expected) < 1.0
    # the same orderings: each ordering's |·| and (·)² come from the same changes
    perms = torch.stack([torch.randperm(50, generator=generator) for _ in range(5)])
    direct = nb.ordering_deltas(losses[:1], perms, squared=False)
    change = torch.stack([losses[0, p] for p in perms])
    k = torch.arange(1, 50, dtype=torch.float64)
    manual = (change[:, 1:] - change[:, :-1].cumsum(1) / k).abs() / (k + 1)
    torch.testing.assert_close(direct, manual)


@pytest.mark.parametrize("form", ["subspace", "isotropic"])
@pytest.mark.parametrize("squared", [True, False])
def test_run_on_digits(trained, form, squared):
    model, data = trained
    spec = AnalysisSpec(
        method="neighbourhood",
        perturbation=form,
        squared=squared,
        draws=8,
        sigma=0.05,
        permutations=5,
    )
    stages = []
    estimate = nb.run(
        model, data, spec, seed=0, device=CPU, progress=lambda s, f: stages.append(s)
    )
    assert "draws" in stages and stages[-1] == "orderings"
    m = data.size
    assert estimate.delta.shape == estimate.expected.shape == (m - 1,)
    assert np.all(np.isfinite(estimate.delta)) and np.all(estimate.delta >= 0)
    # both fall roughly like 1/k (squared: 1/k²)
    assert estimate.expected[-1] < estimate.expected[0] / 100
    assert estimate.delta[-100:].mean() < estimate.delta[:10].mean() / 100
    details = estimate.details
    assert details["perturbation"] == form and details["squared"] is squared
    assert details["sigma"] == 0.05 and details["draws"] == 8
    assert details["directions"] == (2 if form == "subspace" else None)
    loss = per_sample_losses(model, data, device=CPU).mean().item()
    assert details["loss_at_minimum"] == pytest.approx(loss)
    # small perturbations of a trained net move the mean loss a little, mostly up
    assert details["loss_mean_at_draws"] == pytest.approx(loss, rel=0.5)
    assert ("RMS" in details["expected"]) is (not squared)


def test_same_seed_same_curve(trained):
    model, data = trained
    spec = AnalysisSpec(method="neighbourhood", draws=4, permutations=3, sigma=0.1)
    first = nb.run(model, data, spec, seed=5, device=CPU)
    second = nb.run(model, data, spec, seed=5, device=CPU)
    other = nb.run(model, data, spec, seed=6, device=CPU)
    np.testing.assert_array_equal(first.delta, second.delta)
    np.testing.assert_array_equal(first.expected, second.expected)
    assert not np.array_equal(first.delta, other.delta)
