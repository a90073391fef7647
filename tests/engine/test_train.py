"""Training to a minimum: deterministic, honest about divergence."""

from __future__ import annotations

import pytest
import torch

from engine.dataset import Dataset
from engine.errors import TrainingError
from engine.models import build_model
from engine.specs import ArchSpec, TrainSpec
from engine.train import per_sample_losses, resolve_device, seed_everything, train

CPU = torch.device("cpu")


def fit(data: Dataset, spec: TrainSpec, arch: ArchSpec = ArchSpec()):
    seed_everything(spec.seed)
    model = build_model(arch, data.input_shape, data.num_classes)
    return model, train(model, data, spec, device=CPU)


def test_training_reaches_a_low_loss_on_digits(digits):
    _, report = fit(digits, TrainSpec(epochs=10))
    assert report.loss < 0.6 and report.accuracy > 0.8
    assert report.epochs == 10 and report.seconds > 0


def test_same_seed_same_weights(digits):
    a, ra = fit(digits, TrainSpec(epochs=2, seed=3))
    b, rb = fit(digits, TrainSpec(epochs=2, seed=3))
    c, _ = fit(digits, TrainSpec(epochs=2, seed=4))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert ra.loss == rb.loss
    assert not all(
        torch.equal(pa, pc)
        for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def test_per_sample_losses_match_a_plain_forward(digits):
    model, _ = fit(digits, TrainSpec(epochs=1))
    losses = per_sample_losses(model, digits, device=CPU)
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(
            model(digits.x), digits.y, reduction="none"
        )
    assert losses.dtype == torch.float64 and losses.shape == (digits.size,)
    torch.testing.assert_close(losses, ref.double())


def test_divergence_is_reported_not_returned(digits):
    wild = Dataset(digits.name, digits.x * 1e36, digits.y, 10)
    with pytest.raises(TrainingError, match="lr"):
        fit(wild, TrainSpec(epochs=2, lr=10.0), ArchSpec(hidden_size=64))


def test_progress_is_reported_and_can_stop_training(digits):
    seen = []

    class Stop(Exception):
        pass

    def progress(stage, fraction):
        seen.append((stage, fraction))
        if fraction > 0.5:
            raise Stop

    model = build_model(ArchSpec(), digits.input_shape, 10)
    with pytest.raises(Stop):
        train(model, digits, TrainSpec(epochs=4), device=CPU, progress=progress)
    assert seen[0][0] == "training"
    assert [f for _, f in seen] == sorted(f for _, f in seen)


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from engine.errors import SpecError

    with pytest.raises(SpecError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU
