"""Method 3 — the Hessian eigenspace and the bound of Kiselev & Grabovoy.

1. The top ``r`` eigenpairs ``(λ_j, v_j)`` of the Hessian of the full-data
   mean cross-entropy at ``θ̂``, by Lanczos with full reorthogonalisation on
   Hessian-vector products (forward-over-reverse ``torch.func``), the
   tridiagonal step in float64.
2. Every per-sample Hessian projected into that subspace with the
   Gauss–Newton form ``h_i = (J_i V)ᵀ A_i (J_i V)``,
   ``A_i = diag(p_i) − p_i p_iᵀ``: ``r`` forward-mode Jacobian-vector
   products per batch, never a ``P×P`` matrix.
3. Over random orderings, the Hessian change
   ``‖h_{π(k+1)} − mean_{j≤k} h_{π(j)}‖₂ / (k+1)`` from running means
   (linear in ``m``), and the right side of the bound for a radius ``R``:
   ``|ℓ_{π(k+1)} − L_k|/(k+1) + R²·‖h_{π(k+1)} − h̄_k‖₂/(k+1)``.

Losses are in nats, Hessian entries in nats per squared parameter unit, so the
bound (the curve the verdict reads) is in nats for ``R`` in parameter units.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from engine.curve import (
    CurveEstimate,
    Progress,
    log_grid,
    no_progress,
    over_orderings,
    running_mean_change,
)
from engine.dataset import Dataset
from engine.methods.neighbourhood import (
    ParameterLayout,
    activation_total,
    flat_parameters,
)
from engine.specs import AnalysisSpec

#: bytes of activations one batched pass (HVP or JVP) may hold
PASS_BUDGET = 256 * 2**20
#: on a CPU (per-call overhead of torch.func matters more than cache there)
CPU_PASS_BUDGET = 128 * 2**20
#: bytes the Lanczos basis may take in float64 before it is kept in float32
BASIS_BUDGET = 1024 * 2**20
#: bytes of float64 work arrays live at once while averaging over orderings
ORDERING_BUDGET = 128 * 2**20
#: points of the log grid at which the Hessian-change curve is reported
REPORT_POINTS = 200


@contextmanager
def _forward_mode() -> Iterator[None]:
    """Silence the FutureWarning torch emits from its own code (it scripts its
    forward-mode decompositions with ``torch.jit.script``) the first time
    forward-mode AD runs; nothing of ours is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.*", category=FutureWarning
        )
        yield


MatVec = Callable[[torch.Tensor], torch.Tensor]


def lanczos(
    matvec: MatVec,
    size: int,
    rank: int,
    *,
    iterations: int | None = None,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Top ``rank`` eigenpairs of a symmetric operator by Lanczos.

    ``matvec`` maps a ``(size,)`` float64 vector to its image ``(size,)``.
    Runs ``iterations`` steps (default ``min(size, 3·rank + 20)``) from a
    seeded random start, reorthogonalising every new vector against the whole
    basis (twice), restarting with a fresh orthogonal vector if the Krylov
    space is exhausted. Ritz values come from the float64 tridiagonal matrix.
    Returns ``(eigenvalues (r,) float64 descending, vectors (size, r) float64,
    iterations)`` with ``r = min(rank, size)``.
    """
    rank = min(rank, size)
    n = min(size, 3 * rank + 20) if iterations is None else min(iterations, size)
    n = max(n, rank)
    basis_dtype = torch.float64 if n * size * 8 <= BASIS_BUDGET else torch.float32
    basis = torch.zeros(n, size, dtype=basis_dtype, device=device)  # (n, P)
    alpha = torch.zeros(n, dtype=torch.float64)
    beta = torch.zeros(max(n - 1, 0), dtype=torch.float64)

    def orthogonalise(w: torch.Tensor, j: int) -> torch.Tensor:
        q = basis[: j + 1].to(torch.float64)  # (j+1, P)
        for _ in range(2):
            w = w - q.T @ (q @ w)
        return w

    def fresh(j: int) -> torch.Tensor:
        w = torch.randn(size, generator=generator, dtype=torch.float64).to(device)
        return orthogonalise(w, j)

    q = torch.randn(size, generator=generator, dtype=torch.float64).to(device)
    q = q / q.norm()
    scale = 0.0
    for j in range(n):
        basis[j] = q.to(basis_dtype)
        w = matvec(q).to(torch.float64)  # (P,)
        alpha[j] = torch.dot(w, q)
        w = w - alpha[j] * q
        if j > 0:
            w = w - beta[j - 1] * basis[j - 1].to(torch.float64)
        w = orthogonalise(w, j)
        if j == n - 1:
            break
        b = float(w.norm())
        scale = max(scale, abs(float(alpha[j])), b)
        if b <= 1e-10 * max(scale, 1e-300):
            w = fresh(j)  # invariant subspace found: continue in a new direction
            beta[j] = 0.0
            q = w / w.norm()
        else:
            beta[j] = b
            q = w / b

    tridiagonal = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)  # ascending
    top = torch.argsort(ritz_values, descending=True)[:rank]
    y = ritz_vectors[:, top].to(device)  # (n, r)
    vectors = basis.to(torch.float64).T @ y  # (P, r)
    vectors = vectors / vectors.norm(dim=0, keepdim=True)
    return ritz_values[top].clone(), vectors, n


def _pass_batch(
    model: nn.Module, data: Dataset, device: torch.device, copies: int
) -> int:
    """Samples per pass so that ``copies`` × the activations fit the budget."""
    budget = CPU_PASS_BUDGET if device.type == "cpu" else PASS_BUDGET
    per_sample = 4 * copies * activation_total(model, data, device)
    return int(max(1, min(data.size, budget // max(per_sample, 1))))


def hessian_vector_product(
    model: nn.Module,
    layout: ParameterLayout,
    theta: torch.Tensor,
    data: Dataset,
    *,
    device: torch.device,
) -> MatVec:
    """``v ↦ H v`` for the Hessian of the full-data mean cross-entropy at ``theta``.

    Forward-over-reverse (``jvp`` of ``grad``) over the data in large
    batches, accumulated in float64. ``v`` is ``(P,)``; the result is a
    ``(P,)`` float64 vector in nats per squared parameter unit.
    """
    buffers = dict(model.named_buffers())
    batch = _pass_batch(model, data, device, copies=8)
    m = data.size

    def batch_loss(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor):
        z = functional_call(model, (layout.unflatten(flat), buffers), (xb,))
        return F.cross_entropy(z, yb, reduction="sum")

    gradient = grad(batch_loss)
    x, y = data.x.to(device), data.y.to(device)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        tangent = v.to(device=device, dtype=theta.dtype)
        total = torch.zeros(layout.size, dtype=torch.float64, device=device)
        for i in range(0, m, batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            with _forward_mode():
                _, hv = jvp(
                    lambda t, xb=xb, yb=yb: gradient(t, xb, yb), (theta,), (tangent,)
                )
            total += hv.to(torch.float64)
        return total / m

    return matvec


def projected_gauss_newton(
    model: nn.Module,
    layout: ParameterLayout,
    theta: torch.Tensor,
    vectors: torch.Tensor,
    data: Dataset,
    *,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Gauss–Newton matrices in the span of ``vectors``, and losses.

    ``vectors`` is ``(P, r)``. For every sample, ``J_i V`` (the logits'
    Jacobian along each column, ``(C, r)``) comes from ``r`` forward-mode
    ``jvp`` passes; then ``h_i = (J_i V)ᵀ (diag(p_i) − p_i p_iᵀ) (J_i V)``.
    Returns ``(h (m, r, r), losses (m,))``, float64 on the CPU; losses are the
    per-sample cross-entropy at ``theta`` in nats.
    """
    m, r = data.size, vectors.shape[1]
    params = layout.unflatten(theta)
    buffers = dict(model.named_buffers())
    tangents = [
        layout.unflatten(vectors[:, j].to(device=device, dtype=theta.dtype))
        for j in range(r)
    ]
    batch = _pass_batch(model, data, device, copies=3)
    x, y = data.x.to(device), data.y.to(device)
    h = torch.empty(m, r, r, dtype=torch.float64)
    losses = torch.empty(m, dtype=torch.float64)
    for i in range(0, m, batch):
        xb, yb = x[i : i + batch], y[i : i + batch]

        def logits(p: dict[str, torch.Tensor], xb: torch.Tensor = xb) -> torch.Tensor:
            return functional_call(model, (p, buffers), (xb,))

        columns = []
        z = None
        for tangent in tangents:
            with _forward_mode():
                z, jz = jvp(logits, (params,), (tangent,))  # (b, C), (b, C)
            columns.append(jz.detach())
        assert z is not None
        z = z.detach().to(torch.float64)
        g = torch.stack(columns, dim=-1).to(torch.float64)  # (b, C, r)
        p = torch.softmax(z, dim=-1)  # (b, C)
        pg = torch.einsum("bc,bcr->br", p, g)  # (b, r)
        hb = torch.einsum("bcr,bc,bcs->brs", g, p, g)  # (b, r, r)
        hb -= pg.unsqueeze(2) * pg.unsqueeze(1)
        h[i : i + batch] = hb.cpu()
        losses[i : i + batch] = F.cross_entropy(z, yb, reduction="none").cpu()
    return h, losses


def symmetric_eigenvalues(matrices: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a batch ``(..., r, r)``, ascending ``(..., r)``.

    On a CPU, LAPACK handles a batch of small matrices one by one on one
    core; large batches are split across ``torch.get_num_threads()`` threads
    (the work runs outside the GIL).
    """
    threads = torch.get_num_threads()
    lead, r = matrices.shape[:-2], matrices.shape[-1]
    count = math.prod(lead)
    if matrices.device.type != "cpu" or threads < 2 or count < 4096:
        return torch.linalg.eigvalsh(matrices)
    flat = matrices.reshape(count, r, r)
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(torch.linalg.eigvalsh, flat.chunk(threads)))
    return torch.cat(parts).reshape(*lead, r)


def _change_and_prefix(ordered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hessian-change curve and the prefix sums of ``ordered`` ``(..., m, r, r)``."""
    m = ordered.shape[-3]
    k = torch.arange(1, m, dtype=ordered.dtype, device=ordered.device)
    prefix = ordered.cumsum(-3)  # (..., m, r, r)
    diff = prefix[..., :-1, :, :] / k[:, None, None]  # mean of the first k
    diff.neg_().add_(ordered[..., 1:, :, :])  # h_{k+1} − h̄_k, (..., m-1, r, r)
    norm = symmetric_eigenvalues(diff).abs().amax(-1)  # (..., m-1)
    return norm / (k + 1), prefix


def hessian_change(ordered: torch.Tensor) -> torch.Tensor:
    """``‖h_{k+1} − mean_{j≤k} h_j‖₂ / (k+1)`` for ``k = 1..m-1``.

    ``ordered`` is ``(..., m, r, r)`` symmetric matrices already in the
    order of one (or each) ordering; the spectral norm of each symmetric
    difference is its largest absolute eigenvalue. Returns ``(..., m-1)``,
    in the units of ``h``.
    """
    return _change_and_prefix(ordered)[0]


def eigenspace_delta(
    prefix: torch.Tensor, k: torch.Tensor, sigma: float
) -> torch.Tensor:
    """Second-order neighbourhood delta inside the eigenspace at sizes ``k``.

    ``prefix`` holds the prefix sums ``(..., m, r, r)`` of the ordered
    projected Hessians; with ``λ^{(k)}`` the eigenvalues of the mean of the
    first ``k``, returns ``σ⁴/4 · [2·Σ_j (λ_j^{(k+1)} − λ_j^{(k)})² +
    (Σ_j (λ_j^{(k+1)} − λ_j^{(k)}))²]`` (nats²) as ``(..., len(k))``.
    """
    kf = k.to(prefix.dtype)[:, None, None]
    now = torch.linalg.eigvalsh(prefix[..., k - 1, :, :] / kf)  # (..., G, r)
    nxt = torch.linalg.eigvalsh(prefix[..., k, :, :] / (kf + 1))
    step = nxt - now
    return sigma**4 / 4 * (2 * step.square().sum(-1) + step.sum(-1).square())


def ordering_subchunk(m: int, r: int) -> int:
    """Orderings handled at once: three ``(c, m, r, r)`` float64 arrays fit."""
    return int(max(1, ORDERING_BUDGET // (3 * 8 * max(m, 1) * r * r)))


def curve_from_projected(
    h: torch.Tensor,
    losses: torch.Tensor,
    spec: AnalysisSpec,
    *,
    seed: int,
    progress: Progress = no_progress,
) -> tuple[CurveEstimate, dict]:
    """The bound curve from projected Hessians ``(m, r, r)`` and losses ``(m,)``.

    For each ordering: the loss term ``|ℓ_{π(k+1)} − L_k|/(k+1)``, the
    Hessian change, and their sum weighted by ``R²``; the estimate's
    ``delta`` is the mean bound over orderings. Also returns figures for the
    details: the mean Hessian change, loss term and eigenspace delta on a
    log grid, and the loss term's share of the bound at the last ``k``.
    """
    h = h.to(torch.float64).cpu()
    values = losses.to(torch.float64).cpu()
    m, r = h.shape[0], h.shape[1]
    radius2 = spec.radius**2
    grid = torch.as_tensor(log_grid(m - 1, REPORT_POINTS))  # k values
    sub = ordering_subchunk(m, r)
    sums = {
        "hessian": torch.zeros(m - 1, dtype=torch.float64),
        "loss": torch.zeros(m - 1, dtype=torch.float64),
        "eigenspace": torch.zeros(len(grid), dtype=torch.float64),
    }

    def deltas(perms: torch.Tensor) -> torch.Tensor:
        out = torch.empty(perms.shape[0], m - 1, dtype=torch.float64)
        for i in range(0, perms.shape[0], sub):
            p = perms[i : i + sub]  # (c, m)
            change, prefix = _change_and_prefix(h[p])  # (c, m-1), (c, m, r, r)
            eig = eigenspace_delta(prefix, grid, spec.sigma)  # (c, G)
            del prefix
            loss_term = running_mean_change(values[p]).abs_()  # (c, m-1)
            sums["hessian"] += change.sum(0)
            sums["loss"] += loss_term.sum(0)
            sums["eigenspace"] += eig.sum(0)
            out[i : i + sub] = loss_term + radius2 * change
        return out

    estimate = over_orderings(
        m, spec.permutations, seed, deltas, band=spec.band, progress=progress
    )
    n = spec.permutations
    at = (grid - 1).numpy()
    last_bound = float(estimate.delta[-1])
    last_loss = float(sums["loss"][-1]) / n
    figures = {
        "hessian_change": {
            "k": grid.tolist(),
            "value": (sums["hessian"].numpy()[at] / n).tolist(),
        },
        "loss_change": {
            "k": grid.tolist(),
            "value": (sums["loss"].numpy()[at] / n).tolist(),
        },
        "eigenspace_delta": {
            "k": grid.tolist(),
            "value": (sums["eigenspace"].numpy() / n).tolist(),
            "sigma": spec.sigma,
        },
        "loss_delta_share": last_loss / last_bound if last_bound > 0 else 1.0,
    }
    return estimate, figures


def run(
    model: nn.Module,
    data: Dataset,
    spec: AnalysisSpec,
    *,
    seed: int,
    device: torch.device,
    progress: Progress = no_progress,
) -> CurveEstimate:
    """Hessian-eigenspace bound of ``model``'s trained weights on ``data``.

    ``delta`` is the mean over orderings of the bound's right side for
    radius ``spec.radius`` (nats); the details hold the top ``spec.rank``
    Hessian eigenvalues and the Hessian-change curve. ``expected`` is None.
    """
    model.eval()
    device = torch.device(device)
    layout = ParameterLayout(model)
    theta = flat_parameters(model, layout).to(device)  # (P,)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    matvec = hessian_vector_product(model, layout, theta, data, device=device)
    rank = min(spec.rank, layout.size)
    steps = min(layout.size, 3 * rank + 20)
    done = [0]

    def counted(v: torch.Tensor) -> torch.Tensor:
        out = matvec(v)
        done[0] += 1
        progress("lanczos", done[0] / steps)
        return out

    progress("lanczos", 0.0)
    eigenvalues, vectors, iterations = lanczos(
        counted, layout.size, rank, generator=generator, device=device
    )  # (r,), (P, r)
    progress("projection", 0.0)
    h, losses = projected_gauss_newton(
        model, layout, theta, vectors, data, device=device
    )  # (m, r, r), (m,)
    progress("projection", 1.0)
    progress("orderings", 0.0)
    estimate, figures = curve_from_projected(
        h, losses, spec, seed=seed, progress=progress
    )
    estimate.expected = None
    estimate.details = {
        "eigenvalues": [float(v) for v in eigenvalues],
        "radius": spec.radius,
        "rank": rank,
        "lanczos_iterations": iterations,
        "loss_at_minimum": float(losses.mean()),
        **figures,
    }
    return estimate
