"""Method 3: Lanczos eigenpairs, projected Gauss–Newton matrices, Hessian change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

from engine.dataset import Dataset
from engine.methods import hessian, point
from engine.methods.neighbourhood import ParameterLayout, flat_parameters
from engine.models import build_model
from engine.specs import AnalysisSpec, ArchSpec, TrainSpec
from engine.train import per_sample_losses, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    """A trained MLP with 252 parameters on 300 synthetic samples, 3 classes."""
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    y = (x @ torch.randn(6, 3) + 0.5 * torch.randn(300, 3)).argmax(1)
    data = Dataset("synthetic", x, y, 3)
    model = build_model(ArchSpec(hidden_size=12, num_layers=1), (6,), 3)
    train(model, data, TrainSpec(epochs=20, batch_size=32, lr=1e-2), device=CPU)
    layout = ParameterLayout(model)
    theta = flat_parameters(model, layout)

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, layout.unflatten(flat), (x,))
        return F.cross_entropy(logits, y)

    dense = jacrev(jacrev(mean_loss))(theta).double()  # (P, P)
    return model, data, layout, theta, (dense + dense.T) / 2


@pytest.fixture(scope="module")
def trained(digits):
    """An MLP (hidden 16, 3 layers, no bias) trained briefly on sklearn digits."""
    torch.manual_seed(0)
    model = build_model(ArchSpec(), digits.input_shape, 10)
    train(model, digits, TrainSpec(epochs=3), device=CPU)
    return model, digits


def test_hvp_matches_dense_hessian(tiny):
    model, data, layout, theta, dense = tiny
    matvec = hessian.hessian_vector_product(model, layout, theta, data, device=CPU)
    v = torch.randn(layout.size, dtype=torch.float64)
    hv = matvec(v)
    assert hv.dtype == torch.float64
    torch.testing.assert_close(hv, dense @ v, rtol=1e-4, atol=1e-5)


def test_lanczos_top_eigenvalues_match_dense(tiny):
    model, data, layout, theta, dense = tiny
    matvec = hessian.hessian_vector_product(model, layout, theta, data, device=CPU)
    generator = torch.Generator().manual_seed(0)
    values, vectors, steps = hessian.lanczos(
        matvec, layout.size, 3, generator=generator
    )
    exact = torch.linalg.eigvalsh(dense).flip(0)[:3]  # descending
    assert steps == 3 * 3 + 20
    assert torch.all(values[:-1] >= values[1:])
    assert ((values - exact).abs() / exact.abs()).max() < 1e-4
    # the Ritz vectors are unit eigenvectors of the dense Hessian
    torch.testing.assert_close(vectors.norm(dim=0), torch.ones(3, dtype=torch.float64))
    residual = (dense @ vectors - vectors * values).norm(dim=0)
    assert residual.max() < 1e-3 * exact[0]


def test_lanczos_survives_an_exhausted_krylov_space():
    # rank-2 operator: the Krylov space from any start has dimension 3 at most
    generator = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(30, 2, dtype=torch.float64))[0]
    matrix = u @ torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64)) @ u.T
    values, vectors, steps = hessian.lanczos(
        lambda v: matrix @ v, 30, 4, generator=generator
    )
    assert steps == 30
    torch.testing.assert_close(
        values,
        torch.tensor([5.0, 2.0, 0.0, 0.0], dtype=torch.float64),
        atol=1e-9,
        rtol=0,
    )
    torch.testing.assert_close(
        vectors.T @ vectors, torch.eye(4, dtype=torch.float64), atol=1e-9, rtol=0
    )


def test_projected_gauss_newton_matches_dense_jacobian(tiny):
    model, data, layout, theta, _ = tiny
    generator = torch.Generator().manual_seed(2)
    v = torch.linalg.qr(torch.randn(layout.size, 4, generator=generator))[0]
    h, losses = hessian.projected_gauss_newton(
        model, layout, theta, v.double(), data, device=CPU
    )
    assert h.shape == (data.size, 4, 4) and h.dtype == torch.float64
    torch.testing.assert_close(losses, per_sample_losses(model, data, device=CPU))
    for i in (0, 17, 299):
        xi = data.x[i : i + 1]

        def logits(flat: torch.Tensor, xi: torch.Tensor = xi) -> torch.Tensor:
            return functional_call(model, layout.unflatten(flat), (xi,))[0]

        jac = jacrev(logits)(theta).double()  # (C, P)
        p = torch.softmax(logits(theta).double(), -1)
        a = torch.diag(p) - torch.outer(p, p)
        dense = v.double().T @ (jac.T @ a @ jac) @ v.double()  # (r, r)
        torch.testing.assert_close(h[i], dense, rtol=1e-4, atol=1e-7)


def test_hessian_change_matches_naive_loop():
    generator = torch.Generator().manual_seed(3)
    m, r = 40, 3
    a = torch.randn(m, r, r, generator=generator, dtype=torch.float64)
    h = a + a.transpose(1, 2)
    order = torch.randperm(m, generator=generator)
    curve = hessian.hessian_change(h[order])
    assert curve.shape == (m - 1,)
    naive = []
    for k in range(1, m):
        mean = sum(h[order[j]] for j in range(k)) / k
        naive.append(torch.linalg.matrix_norm(h[order[k]] - mean, ord=2) / (k + 1))
    torch.testing.assert_close(curve, torch.stack(naive))
    # batched over orderings gives the same rows
    batched = hessian.hessian_change(h[torch.stack([order, order.flip(0)])])
    torch.testing.assert_close(batched[0], curve)
    torch.testing.assert_close(batched[1], hessian.hessian_change(h[order.flip(0)]))


def test_threaded_eigenvalues_match_one_call():
    generator = torch.Generator().manual_seed(6)
    a = torch.randn(2, 3000, 4, 4, generator=generator, dtype=torch.float64)
    a = a + a.transpose(-1, -2)
    torch.testing.assert_close(
        hessian.symmetric_eigenvalues(a), torch.linalg.eigvalsh(a), rtol=0, atol=0
    )


def test_eigenspace_delta_matches_direct_formula():
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(12, 3, 3, generator=generator, dtype=torch.float64)
    h = a + a.transpose(1, 2)
    k = torch.tensor([1, 5, 11])
    value = hessian.eigenspace_delta(h.cumsum(0), k, sigma=0.5)
    for j, kk in enumerate(k.tolist()):
        now = torch.linalg.eigvalsh(h[:kk].mean(0))
        nxt = torch.linalg.eigvalsh(h[: kk + 1].mean(0))
        d = nxt - now
        direct = 0.5**4 / 4 * (2 * (d**2).sum() + d.sum() ** 2)
        torch.testing.assert_close(value[j], direct)


def test_bound_shares_orderings_with_the_loss_term():
    generator = torch.Generator().manual_seed(5)
    m, r = 60, 2
    a = torch.randn(m, r, r, generator=generator, dtype=torch.float64)
    h = a + a.transpose(1, 2)
    losses = torch.rand(m, generator=generator, dtype=torch.float64)
    flat = AnalysisSpec(method="hessian", permutations=7, radius=0.0)
    estimate, figures = hessian.curve_from_projected(h, losses, flat, seed=9)
    # radius 0: the bound is the point method's |L_{k+1} − L_k| on the same orderings
    reference = point.curve_from_losses(losses, flat, seed=9)
    np.testing.assert_allclose(estimate.delta, reference.delta, rtol=1e-12)
    assert figures["loss_delta_share"] == pytest.approx(1.0)

    wide = AnalysisSpec(method="hessian", permutations=7, radius=2.0)
    estimate, figures = hessian.curve_from_projected(h, losses, wide, seed=9)
    k = np.asarray(figures["hessian_change"]["k"])
    combined = np.asarray(figures["loss_change"]["value"]) + 4.0 * np.asarray(
        figures["hessian_change"]["value"]
    )
    np.testing.assert_allclose(estimate.delta[k - 1], combined, rtol=1e-10)


def test_run_on_digits(trained):
    model, data = trained
    spec = AnalysisSpec(method="hessian", rank=4, permutations=6, radius=0.5)
    estimate = hessian.run(model, data, spec, seed=0, device=CPU)
    again = hessian.run(model, data, spec, seed=0, device=CPU)
    np.testing.assert_array_equal(estimate.delta, again.delta)
    details = estimate.details
    assert estimate.expected is None
    assert estimate.delta.shape == (data.size - 1,)
    assert np.all(np.isfinite(estimate.delta)) and np.all(estimate.delta > 0)
    values = details["eigenvalues"]
    assert len(values) == 4 and values == sorted(values, reverse=True)
    assert values[0] > 0
    assert details["rank"] == 4 and details["radius"] == 0.5
    assert details["lanczos_iterations"] == 32
    assert 0 < details["loss_delta_share"] <= 1
    change = details["hessian_change"]
    assert change["k"][0] == 1 and change["k"][-1] == data.size - 1
    assert len(change["k"]) == len(change["value"]) <= 200
    # the Hessian change falls roughly like 1/k
    assert change["value"][-1] < change["value"][0] / 100
