"""Method 2 — the neighbourhood delta (distributional averaging).

Instead of watching the loss at the trained weights ``θ̂`` only, average the
squared change over a Gaussian neighbourhood of ``θ̂``:

    Δ_k = E_θ[(L_{k+1}(θ) − L_k(θ))²]      (or E_θ|L_{k+1}(θ) − L_k(θ)|)

estimated with ``S`` draws ``θ_s`` and ``P`` random orderings of the samples.
Two neighbourhoods: ``isotropic`` (``θ = θ̂ + σ·ε``, ``ε ~ N(0, I_P)``) and
``subspace`` (``θ = θ̂ + Σ_j c_j d_j``, ``c ~ N(0, σ²·I_D)``, ``D`` random
filter-normalised directions ``d_j``).

The per-sample losses of all draws are one ``(S, m)`` matrix computed with
batched passes: the perturbed parameters of a chunk of draws are stacked and
run through ``torch.func.functional_call`` under ``torch.vmap``, so there is
no loop over samples and no copy of the model per draw. Losses are in nats
(cross-entropy); the curve is in nats² for the squared form, nats otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

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

#: bytes of activations one batched pass may hold: (S_chunk, batch, width) float32
ACTIVATION_BUDGET = 256 * 2**20
#: the same on a CPU, where passes that stay in cache are several times faster
CPU_ACTIVATION_BUDGET = 4 * 2**20
#: bytes the stacked parameters of one chunk of draws may take
PARAMETER_BUDGET = 256 * 2**20
#: bytes of float64 work arrays live at once while averaging over orderings
ORDERING_BUDGET = 128 * 2**20


class ParameterLayout:
    """How the named parameters of a model map to one flat vector of ``P`` floats.

    The order is that of ``model.named_parameters()``; a flat vector, or a
    stack of them ``(..., P)``, is split back into named tensors of shape
    ``(..., *shape)`` without copying.
    """

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters()]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.size = int(sum(self.numels))

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate named tensors into one ``(P,)`` vector."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``(..., P)`` into ``{name: (..., *shape)}`` views."""
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.numels, dim=-1)
        return {
            n: part.reshape(*lead, *shape)
            for n, part, shape in zip(self.names, parts, self.shapes, strict=True)
        }


def flat_parameters(model: nn.Module, layout: ParameterLayout) -> torch.Tensor:
    """The model's current parameters as one detached ``(P,)`` vector."""
    return layout.flatten({n: p.detach() for n, p in model.named_parameters()})


def _leaf_outputs(
    model: nn.Module, data: Dataset, device: torch.device
) -> list[tuple[bool, int]]:
    """For every leaf module, in execution order: (after a parameterised layer,
    floats it outputs per sample), from one forward pass of one sample."""
    sizes: list[tuple[bool, int]] = []
    seen_parameters = [False]

    def hook(module, _inputs, output) -> None:
        if any(True for _ in module.parameters(recurse=False)):
            seen_parameters[0] = True
        if isinstance(output, torch.Tensor):
            sizes.append((seen_parameters[0], output[:1].numel()))

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(data.x[:1].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def activation_width(model: nn.Module, data: Dataset, device: torch.device) -> int:
    """Largest number of floats a parameter-dependent layer outputs for one sample.

    Only outputs from the first layer that holds parameters onwards count:
    those are the ones that carry the draw dimension under ``vmap`` (a
    flattened input does not). This is the ``width`` of the
    ``(draws, batch, width)`` activation budget.
    """
    sizes = _leaf_outputs(model, data, device)
    return max([n for after, n in sizes if after] or [1])


def activation_total(model: nn.Module, data: Dataset, device: torch.device) -> int:
    """Floats of all layer outputs plus the input, for one sample."""
    sizes = _leaf_outputs(model, data, device)
    return int(data.x[:1].numel() + sum(n for _, n in sizes))


def filter_normalised_directions(
    layout: ParameterLayout,
    theta: torch.Tensor,
    count: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``count`` random directions, filter-normalised per parameter tensor.

    Each direction is drawn ``N(0, 1)`` with the shape of every weight tensor
    (two or more dimensions) and rescaled so that its part for that tensor has
    the tensor's norm in ``theta``; one-dimensional parameters (biases,
    normalisation scales) are left at zero. Returns ``(count, P)`` in the
    dtype and on the device of ``theta``.
    """
    parts = layout.unflatten(theta)
    out = []
    for _ in range(count):
        pieces = []
        for name, shape, numel in zip(
            layout.names, layout.shapes, layout.numels, strict=True
        ):
            if len(shape) < 2:
                pieces.append(torch.zeros(numel, dtype=theta.dtype))
                continue
            g = torch.randn(numel, generator=generator, dtype=torch.float64)
            weight_norm = float(parts[name].double().norm())
            g_norm = float(g.norm())
            scale = weight_norm / g_norm if g_norm > 0 else 0.0
            pieces.append((g * scale).to(theta.dtype))
        out.append(torch.cat(pieces))
    return torch.stack(out).to(theta.device)  # (D, P)


class Draws:
    """The ``S`` perturbed parameter vectors ``θ_s``, handed out in order.

    All randomness comes from one CPU generator seeded from ``seed`` (a
    stream apart from the one ``over_orderings`` draws orderings from with the
    same seed); draws are produced one after the other, so the same seed
    gives the same draws whatever the chunk sizes asked for.
    """

    def __init__(
        self,
        layout: ParameterLayout,
        theta: torch.Tensor,
        spec: AnalysisSpec,
        seed: int,
    ) -> None:
        self.layout = layout
        self.theta = theta  # (P,)
        self.total = spec.draws
        self.sigma = spec.sigma
        self.perturbation = spec.perturbation
        stream = np.random.SeedSequence([seed, 1]).generate_state(1)[0]
        self.generator = torch.Generator(device="cpu").manual_seed(int(stream))
        self.given = 0
        self.directions: torch.Tensor | None = None
        self.coefficients: torch.Tensor | None = None
        if self.perturbation == "subspace":
            self.directions = filter_normalised_directions(
                layout, theta, spec.directions, self.generator
            )  # (D, P)
            self.coefficients = spec.sigma * torch.randn(
                spec.draws, spec.directions, generator=self.generator
            )  # (S, D)
        elif self.perturbation != "isotropic":
            raise ValueError(f"unknown perturbation {self.perturbation!r}")

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` draws as ``(count, P)`` parameter vectors."""
        count = min(count, self.total - self.given)
        if self.directions is not None and self.coefficients is not None:
            c = self.coefficients[self.given : self.given + count]
            offsets = c.to(self.theta) @ self.directions  # (count, P)
        else:
            noise = [
                torch.randn(self.layout.size, generator=self.generator)
                for _ in range(count)
            ]
            offsets = self.sigma * torch.stack(noise).to(self.theta)  # (count, P)
        self.given += count
        return self.theta + offsets


def chunk_sizes(
    draws: int, m: int, width: int, params: int, budget: int = ACTIVATION_BUDGET
) -> tuple[int, int]:
    """``(draws per pass, samples per pass)`` within the memory budgets.

    The activations of one pass are ``(S_chunk, batch, width)`` float32 and
    stay under ``budget`` bytes; the stacked parameters of a chunk of draws
    stay under :data:`PARAMETER_BUDGET`. Samples per pass are kept at 1024 or
    more (when there are that many) by taking fewer draws at once.
    """
    per_value = 4 * max(width, 1)
    s = max(1, min(draws, PARAMETER_BUDGET // (4 * max(params, 1))))
    batch_floor = min(m, 1024)
    if budget // (s * per_value) < batch_floor:
        s = max(1, budget // (batch_floor * per_value))
    batch = max(1, min(m, budget // (s * per_value)))
    return int(s), int(batch)


def activation_budget(device: torch.device) -> int:
    """Bytes of activations one pass may hold on ``device``."""
    return CPU_ACTIVATION_BUDGET if device.type == "cpu" else ACTIVATION_BUDGET


def losses_at(
    model: nn.Module,
    layout: ParameterLayout,
    thetas: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy (nats) of every sample at every parameter vector.

    ``thetas`` is ``(s, P)``, ``x`` a batch ``(b, ...)`` and ``y`` ``(b,)``, all
    on one device; one vmapped pass over the stacked parameters gives the
    ``(s, b)`` float64 losses.
    """
    params = layout.unflatten(thetas)  # {name: (s, *shape)}
    buffers = dict(model.named_buffers())

    def logits(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, buffers), (x,))

    z = torch.vmap(logits)(params)  # (s, b, C)
    log_p = F.log_softmax(z, dim=-1)
    picked = log_p.gather(-1, y.view(1, -1, 1).expand(z.shape[0], -1, 1))
    return -picked.squeeze(-1).double()  # (s, b)


@torch.no_grad()
def loss_matrix(
    model: nn.Module,
    data: Dataset,
    draws: Draws,
    *,
    device: torch.device,
    progress: Progress = no_progress,
) -> torch.Tensor:
    """Per-sample losses (nats) at all ``S`` draws: ``(S, m)`` float64 on the CPU.

    Draws are taken in chunks and the data in batches so that one pass holds
    at most :func:`activation_budget` bytes of activations.
    """
    model.eval()
    m, total = data.size, draws.total
    width = activation_width(model, data, device)
    s_chunk, batch = chunk_sizes(
        total, m, width, draws.layout.size, activation_budget(torch.device(device))
    )
    out = torch.empty(total, m, dtype=torch.float64)
    x, y = data.x.to(device), data.y.to(device)
    done = 0
    progress("draws", 0.0)
    while done < total:
        thetas = draws.take(s_chunk).to(device)  # (s, P)
        s = thetas.shape[0]
        for i in range(0, m, batch):
            out[done : done + s, i : i + batch] = losses_at(
                model, draws.layout, thetas, x[i : i + batch], y[i : i + batch]
            ).cpu()
        done += s
        progress("draws", done / total)
    return out


def ordering_subchunk(draws: int, m: int) -> int:
    """Orderings handled at once: three ``(S, c, m)`` float64 arrays fit the budget."""
    return int(max(1, ORDERING_BUDGET // (3 * 8 * max(draws, 1) * max(m, 1))))


def ordering_deltas(
    values: torch.Tensor, perms: torch.Tensor, *, squared: bool
) -> torch.Tensor:
    """Mean over draws of ``(L_{k+1} − L_k)²`` (or ``|·|``) for each ordering.

    ``values`` is the ``(S, m)`` float64 loss matrix (nats), ``perms`` a
    ``(c, m)`` int64 batch of orderings; returns ``(c, m-1)`` for
    ``k = 1..m-1`` (nats² squared, nats otherwise). Orderings are processed a
    few at a time so at most about :data:`ORDERING_BUDGET` bytes are live.
    """
    s_count, m = values.shape
    sub = ordering_subchunk(s_count, m)
    out = torch.empty(perms.shape[0], m - 1, dtype=values.dtype)
    for i in range(0, perms.shape[0], sub):
        change = running_mean_change(values[:, perms[i : i + sub]])  # (S, c, m-1)
        change = change.square_() if squared else change.abs_()
        out[i : i + sub] = change.mean(0)  # (c, m-1)
    return out


def curve_from_loss_matrix(
    losses: torch.Tensor,
    spec: AnalysisSpec,
    *,
    seed: int,
    progress: Progress = no_progress,
) -> CurveEstimate:
    """The neighbourhood curve for an ``(S, m)`` loss matrix.

    For each ordering, ``(L_{k+1} − L_k)`` is taken for every draw, squared
    (or its absolute value taken when ``spec.squared`` is false) and averaged
    over draws; ``over_orderings`` averages that over orderings. ``expected``
    is the exact mean over orderings of the squared form,
    ``mean_s S_s² / (k(k+1))`` with ``S_s²`` the unbiased variance of draw
    ``s``'s losses, or its square root (an RMS) for the absolute form.
    """
    values = losses.to(torch.float64).cpu()  # (S, m)
    m = values.shape[1]

    def deltas(perms: torch.Tensor) -> torch.Tensor:
        return ordering_deltas(values, perms, squared=spec.squared)  # (c, m-1)

    estimate = over_orderings(
        m, spec.permutations, seed, deltas, band=spec.band, progress=progress
    )
    k = estimate.k.astype(np.float64)
    variance = float(values.var(dim=1, unbiased=True).mean()) if m > 1 else 0.0
    expected = variance / (k * (k + 1))
    estimate.expected = expected if spec.squared else np.sqrt(expected)
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
    """Neighbourhood delta of ``model``'s trained weights on ``data``.

    ``delta`` is ``E_θ[(L_{k+1} − L_k)²]`` in nats² (``spec.squared``) or
    ``E_θ|L_{k+1} − L_k|`` in nats, averaged over ``spec.draws`` draws and
    ``spec.permutations`` orderings, all seeded from ``seed``.
    """
    model.eval()
    layout = ParameterLayout(model)
    theta = flat_parameters(model, layout).to(device)  # (P,)
    at_minimum = per_sample_losses(model, data, device=device)  # (m,)
    draws = Draws(layout, theta, spec, seed)
    losses = loss_matrix(model, data, draws, device=device, progress=progress)
    progress("orderings", 0.0)
    estimate = curve_from_loss_matrix(losses, spec, seed=seed, progress=progress)
    loss_mean = float(losses.mean())
    estimate.details = {
        "sigma": spec.sigma,
        "draws": spec.draws,
        "directions": spec.directions if spec.perturbation == "subspace" else None,
        "perturbation": spec.perturbation,
        "squared": spec.squared,
        "loss_mean_at_draws": loss_mean if math.isfinite(loss_mean) else None,
        "loss_at_minimum": float(at_minimum.mean()),
        "expected": (
            "exact mean over orderings of the squared change, nats²"
            if spec.squared
            else "root of the exact mean squared change (an RMS, nats); "
            "an upper bound on the expected absolute change"
        ),
    }
    return estimate
