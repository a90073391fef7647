"""Training to a minimum, and the per-sample losses at that minimum.

The data set is already a pair of tensors in memory; a batch is a slice of a
shuffled index, never a per-sample transform pipeline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.curve import Progress, no_progress
from engine.dataset import Dataset
from engine.errors import SpecError, TrainingError
from engine.specs import TrainSpec

#: samples per forward pass when only evaluating (no graph is kept)
EVAL_BATCH = 8192
#: data sets up to this size are reshuffled by copy each epoch (see ``train``)
SHUFFLE_COPY_BYTES = 1024**3
#: a final loss this many times that of a uniform guess counts as divergence
DIVERGED_FACTOR = 100


@dataclass
class TrainReport:
    """Where training stopped: full-data loss and accuracy at the minimum."""

    loss: float
    accuracy: float
    epochs: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            "device 'cuda' was asked for but no CUDA device is visible; "
            "use --device auto or cpu",
            field="training.device",
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch so that the same seed gives the same weights and curve on a CPU."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _optimizer(model: nn.Module, lr: float, device: torch.device):
    # The fused kernel updates all parameters in one call: fewer Python-level
    # operations per step, which is what dominates for small networks.
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - old builds/devices
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def train(
    model: nn.Module,
    data: Dataset,
    spec: TrainSpec,
    *,
    device: torch.device,
    progress: Progress = no_progress,
    stage: str = "training",
) -> TrainReport:
    """Train ``model`` in place with Adam on all of ``data`` for ``spec.epochs``.

    Cross-entropy loss, mini-batches of ``spec.batch_size`` from a fresh
    seeded shuffle every epoch. Raises :class:`TrainingError` if the loss
    stops being finite. ``progress`` may raise to stop between batches.
    """
    start = time.perf_counter()
    model.to(device).train()
    x, y = data.x.to(device), data.y.to(device)
    m, batch = data.size, spec.batch_size
    steps = math.ceil(m / batch)
    total_steps = steps * spec.epochs
    report_every = max(1, total_steps // 100)
    optimizer = _optimizer(model, spec.lr, device)
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)

    # Shuffling the whole data set once per epoch makes every batch a
    # contiguous slice (a view), instead of a gather per step; above
    # SHUFFLE_COPY_BYTES the copy costs more memory than it saves time.
    copy = x.element_size() * x.numel() <= SHUFFLE_COPY_BYTES
    step = 0
    for epoch in range(spec.epochs):
        order = torch.randperm(m, generator=generator).to(device)
        xs, ys = (x[order], y[order]) if copy else (x, y)
        for i in range(steps):
            rows = slice(i * batch, (i + 1) * batch)
            index = rows if copy else order[rows]
            loss = F.cross_entropy(model(xs[index]), ys[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % report_every == 0:
                progress(stage, step / total_steps)
        # One sync per epoch, not per step: a non-finite loss is caught here.
        if not math.isfinite(loss.item()):
            raise TrainingError(
                f"training diverged in epoch {epoch + 1}: the loss became "
                f"{loss.item()}; lower training.lr (now {spec.lr}) or check the data",
                field="training.lr",
            )

    model.eval()
    losses = per_sample_losses(model, data, device=device)
    loss_mean = float(losses.mean())
    # A uniform guess scores ln(C); far above that, training blew up.
    ceiling = DIVERGED_FACTOR * math.log(max(data.num_classes, 2))
    if not math.isfinite(loss_mean) or loss_mean > ceiling:
        raise TrainingError(
            f"training diverged: the final loss is {loss_mean:.3g}, far above the "
            f"{math.log(max(data.num_classes, 2)):.3g} of a uniform guess; lower "
            f"training.lr (now {spec.lr}) or rescale the features",
            field="training.lr",
        )
    progress(stage, 1.0)
    return TrainReport(
        loss=loss_mean,
        accuracy=accuracy(model, data, device=device),
        epochs=spec.epochs,
        seconds=time.perf_counter() - start,
    )


@torch.no_grad()
def per_sample_losses(
    model: nn.Module, data: Dataset, *, device: torch.device
) -> torch.Tensor:
    """Cross-entropy of every sample at the current weights: ``(m,)`` float64.

    A few large batched forward passes; the result lives on the CPU.
    """
    model.eval()
    out = torch.empty(data.size, dtype=torch.float64)
    for i in range(0, data.size, EVAL_BATCH):
        xb = data.x[i : i + EVAL_BATCH].to(device)
        yb = data.y[i : i + EVAL_BATCH].to(device)
        loss = F.cross_entropy(model(xb), yb, reduction="none")
        out[i : i + EVAL_BATCH] = loss.double().cpu()
    return out


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, *, device: torch.device) -> float:
    """Share of samples whose largest logit is the label."""
    model.eval()
    correct = 0
    for i in range(0, data.size, EVAL_BATCH):
        xb = data.x[i : i + EVAL_BATCH].to(device)
        yb = data.y[i : i + EVAL_BATCH].to(device)
        correct += int((model(xb).argmax(1) == yb).sum())
    return correct / data.size
