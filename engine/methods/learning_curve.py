"""Method 4 — the learning curve, the classical baseline (METHOD.md).

The data are split once into a training part and a held-out part. For each
of several seeds, one random ordering of the training part is cut into nested
prefixes of log-spaced sizes ``n_1 < … < n_S`` (the last is the whole training
part); a fresh network is trained on each prefix and its mean cross-entropy on
the held-out part (nats per sample) and accuracy are recorded. A power law
``err(n) ≈ a·n^(−b) + c`` is fitted to the mean held-out loss. Every training
uses the same epochs by default; ``match_steps`` gives every subset the step
count of the full training part instead (see :func:`run`).

To share the verdict with the other methods the curve is reported as a
per-sample change of the held-out loss, the analogue of ``|L_{k+1} − L_k|``:

    delta_i = |err(n_{i+1}) − err(n_i)| / (n_{i+1} − n_i)     (nats per sample)

taken per seed and then averaged. Each step is placed at the geometric mean
``√(n_i·n_{i+1})`` of its two sizes (rounded to an integer for ``k``): there
the secant slope of a power law equals its derivative exactly for ``b = 1``
and closely otherwise, so the fitted derivative ``a·b·n^(−b−1)`` reported as
the noise-free ``expected`` curve is directly comparable with ``delta``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit

from engine.curve import CurveEstimate, Progress, no_progress
from engine.dataset import Dataset
from engine.errors import SpecError
from engine.models import build_model
from engine.specs import AnalysisSpec, ArchSpec, TrainSpec
from engine.train import accuracy, per_sample_losses, seed_everything, train

STAGE = "learning-curve"

#: the smallest training subset is never below this many samples (nor below
#: two per class), unless the training part itself is too small for it
MIN_SUBSET = 10

#: the most epochs ``match_steps`` gives one subset (TrainSpec's own limit)
MAX_EPOCHS = 1000

# Keys that separate the independent random streams derived from one seed.
_SPLIT, _ORDER, _INIT = 0, 1, 2


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 31-bit seed for the stream named by ``keys`` under ``seed``."""
    state = np.random.SeedSequence((seed, *keys)).generate_state(1, np.uint32)
    return int(state[0] >> 1)


def split_holdout(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into ``(train, held_out)``, stratified by label.

    About ``fraction`` of the samples (at least one, and leaving at least two
    for training) are held out; each class contributes in proportion to its
    size, the remainder going to the classes with the largest fractional
    share. Indices are int64, each part in random order, the two disjoint
    and together covering ``0..m−1``.
    """
    y = y.cpu()
    m = int(y.numel())
    if m < 3:
        raise SpecError(
            f"the learning curve needs at least 3 samples (held-out and two "
            f"training sizes); this data set has {m}",
            field="dataset",
        )
    held = min(max(round(fraction * m), 1), m - 2)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(m, generator=generator)
    # Group by class, random order within each class.
    order = order[torch.sort(y[order], stable=True).indices]
    classes, counts = torch.unique(y[order], return_counts=True)
    quota = counts.double() * (held / m)
    take = quota.floor().long()
    remainder = held - int(take.sum())
    if remainder > 0:
        by_fraction = torch.sort(quota - take, descending=True, stable=True).indices
        take[by_fraction[:remainder]] += 1
    starts = torch.cumsum(counts, 0) - counts
    held_mask = torch.zeros(m, dtype=torch.bool)
    for start, n in zip(starts.tolist(), take.tolist(), strict=True):
        held_mask[start : start + n] = True
    # Shuffle again so neither part is grouped by class.
    mix = torch.randperm(m, generator=generator)
    order, held_mask = order[mix], held_mask[mix]
    return order[~held_mask], order[held_mask]


def subset_sizes(n_train: int, num_classes: int, count: int) -> np.ndarray:
    """Up to ``count`` distinct log-spaced training sizes, int64 ascending.

    From ``max(2·num_classes, MIN_SUBSET)`` (lowered to half the training part
    when that part is too small for it) up to ``n_train`` itself, both ends
    included; fewer than ``count`` sizes when the range has too few integers.
    """
    if n_train < 2:
        raise SpecError(
            "the learning curve needs at least 2 training samples; lower "
            "analysis.holdout or use more data",
            field="analysis.holdout",
        )
    low = min(max(2 * num_classes, MIN_SUBSET), max(1, n_train // 2))
    sizes = np.unique(np.geomspace(low, n_train, count).round().astype(np.int64))
    sizes[0], sizes[-1] = low, n_train
    return sizes


def _power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * n ** (-b) + c


def fit_power_law(n: np.ndarray, err: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of ``err(n) ≈ a·n^(−b) + c`` with ``a ≥ 0, b > 0, c ≥ 0``.

    ``n`` are sample sizes, ``err`` the losses (any unit; ``a`` and ``c`` come
    back in it, ``b`` is dimensionless). Sizes are rescaled by the smallest
    for conditioning. Raises :class:`RuntimeError` when there are fewer than
    three points or the fit does not converge to finite parameters.
    """
    n = np.asarray(n, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if n.shape != err.shape or n.ndim != 1:
        raise ValueError("n and err must be 1-d arrays of the same length")
    if n.size < 3:
        raise RuntimeError(f"a power law has 3 parameters; only {n.size} points")
    if not (np.all(np.isfinite(err)) and np.all(n > 0)):
        raise RuntimeError("sizes must be positive and losses finite")
    n0 = float(n.min())
    u = n / n0
    # Initial guess: c just below the last loss, b from the two ends.
    span = float(err.max() - err.min())
    c0 = max(float(err.min()) - 0.1 * span, 0.0)
    hi, lo = float(err[np.argmin(u)]) - c0, float(err[np.argmax(u)]) - c0
    b0 = 0.5
    if hi > 0 and lo > 0 and u.max() > 1 and hi > lo:
        b0 = float(np.clip(math.log(hi / lo) / math.log(u.max()), 0.05, 5.0))
    a0 = max(hi, 1e-12)
    scale = max(span, float(np.abs(err).max()), 1e-12)
    try:
        with warnings.catch_warnings():
            # With exactly three points the covariance is undefined; only the
            # parameters are used, so that warning is irrelevant here.
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(
                _power_law,
                u,
                err / scale,
                p0=(a0 / scale, b0, c0 / scale),
                bounds=([0.0, 1e-8, 0.0], [np.inf, 20.0, np.inf]),
                maxfev=20_000,
            )
    except (RuntimeError, ValueError) as exc:
        raise RuntimeError(f"the power-law fit failed: {exc}") from exc
    a_u, b, c = (float(p) for p in params)
    a, c = a_u * scale * n0**b, c * scale
    if not all(math.isfinite(p) for p in (a, b, c)):
        raise RuntimeError("the power-law fit gave non-finite parameters")
    return a, b, c


def fit_differences(k: np.ndarray, delta: np.ndarray) -> tuple[float, float]:
    """Fallback fit ``log delta ≈ log C − α·log k`` over the positive deltas.

    Returns ``(log C, α)``; for a power law ``a·n^(−b) + c`` this is
    ``C = a·b`` and ``α = b + 1``. Raises :class:`RuntimeError` with fewer
    than two positive deltas.
    """
    k = np.asarray(k, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    keep = np.isfinite(delta) & (delta > 0)
    if int(keep.sum()) < 2 or np.unique(k[keep]).size < 2:
        raise RuntimeError("fewer than two positive differences to fit")
    slope, intercept = np.polyfit(np.log(k[keep]), np.log(delta[keep]), 1)
    return float(intercept), float(-slope)


def _epochs_per_size(
    sizes: np.ndarray, training: TrainSpec, match_steps: bool
) -> list[int]:
    """Epochs for each training size: as asked, or scaled to equal step counts."""
    if not match_steps:
        return [training.epochs] * len(sizes)
    batch = training.batch_size
    full_steps = math.ceil(int(sizes[-1]) / batch) * training.epochs
    return [
        min(max(math.ceil(full_steps / math.ceil(int(n) / batch)), 1), MAX_EPOCHS)
        for n in sizes
    ]


def _heldout(
    data: Dataset,
    index: torch.Tensor,
    arch: ArchSpec,
    training: TrainSpec,
    held: Dataset,
    device: torch.device,
) -> tuple[float, float]:
    """Train a fresh, seeded network on ``data[index]``; held-out loss and accuracy."""
    seed_everything(training.seed)
    model = build_model(arch, data.input_shape, data.num_classes)
    train(model, data.subset(index), training, device=device)
    loss = float(per_sample_losses(model, held, device=device).mean())
    return loss, accuracy(model, held, device=device)


def run(
    data: Dataset,
    arch: ArchSpec,
    training: TrainSpec,
    spec: AnalysisSpec,
    *,
    device: torch.device,
    progress: Progress = no_progress,
    match_steps: bool = False,
) -> CurveEstimate:
    """Learning curve of ``arch`` on ``data``: held-out loss against training size.

    ``spec.seeds`` × ``spec.subset_sizes`` trainings (fewer sizes if the data
    are small), each with ``training`` except its seed. Replicate ``r`` uses
    one ordering of the training part and one initialisation/shuffle seed for
    all its sizes, so the differences between sizes come from the data rather
    than from the initialisation. ``delta`` is in nats per added sample.

    With a fixed number of epochs a subset of ``n`` samples gets only
    ``⌈n/batch⌉·epochs`` optimisation steps, so an under-trained network makes
    small subsets look worse than the data alone would. ``match_steps`` scales
    the epochs of each subset up (at most :data:`MAX_EPOCHS`) so that every
    training takes about as many steps as the full training part does with
    ``training.epochs``; that costs about one full training per point instead
    of ``Σ n_i / n_S`` (under two for log-spaced sizes) per seed.
    """
    data = data.to("cpu")
    train_index, held_index = split_holdout(
        data.y, spec.holdout, derive_seed(training.seed, _SPLIT)
    )
    held = data.subset(held_index)
    sizes = subset_sizes(train_index.numel(), data.num_classes, spec.subset_sizes)
    total = spec.seeds * len(sizes)
    epochs = _epochs_per_size(sizes, training, match_steps)
    losses = np.empty((spec.seeds, len(sizes)))
    accuracies = np.empty((spec.seeds, len(sizes)))

    done = 0
    progress(STAGE, 0.0)
    for r in range(spec.seeds):
        generator = torch.Generator(device="cpu")
        generator.manual_seed(derive_seed(training.seed, _ORDER, r))
        ordering = train_index[torch.randperm(train_index.numel(), generator=generator)]
        seed = derive_seed(training.seed, _INIT, r)
        for i, n in enumerate(sizes.tolist()):
            replicate = training.model_copy(update={"seed": seed, "epochs": epochs[i]})
            losses[r, i], accuracies[r, i] = _heldout(
                data, ordering[:n], arch, replicate, held, device
            )
            done += 1
            progress(STAGE, done / total)

    size_f = sizes.astype(np.float64)
    centres = np.sqrt(size_f[:-1] * size_f[1:])
    k = np.round(centres).astype(np.int64)
    per_seed = np.abs(np.diff(losses, axis=1)) / np.diff(size_f)  # (seeds, S−1)
    delta = per_seed.mean(axis=0)
    tail = (1 - spec.band) / 2
    band_low, band_high = np.quantile(per_seed, [tail, 1 - tail], axis=0)
    mean_loss = losses.mean(axis=0)

    details: dict = {
        "sizes": sizes.tolist(),
        "heldout_loss": mean_loss.tolist(),
        "heldout_accuracy": accuracies.mean(axis=0).tolist(),
        "holdout_size": int(held_index.numel()),
        "train_size": int(train_index.numel()),
        "seeds": spec.seeds,
        "trainings": total,
        "epochs": epochs,
        "delta_at": "geometric mean of consecutive sizes",
    }
    expected: np.ndarray | None
    try:
        a, b, c = fit_power_law(size_f, mean_loss)
        details["fit"] = {"a": a, "b": b, "c": c}
        expected = a * b * centres ** (-b - 1)
    except RuntimeError as exc:
        details["fit"] = None
        details["fit_error"] = str(exc)
        mean_delta = np.abs(np.diff(mean_loss)) / np.diff(size_f)
        try:
            log_c, alpha = fit_differences(centres, mean_delta)
            details["difference_fit"] = {"log_c": log_c, "alpha": alpha}
            expected = np.exp(log_c - alpha * np.log(centres))
        except RuntimeError as fallback:
            details["fit_error"] += f"; fallback failed too: {fallback}"
            expected = None

    return CurveEstimate(
        k=k,
        delta=delta,
        band_k=k.copy(),
        band_low=band_low,
        band_high=band_high,
        bin_k=k.copy(),
        replicate_bins=per_seed,
        expected=expected,
        details=details,
    )
