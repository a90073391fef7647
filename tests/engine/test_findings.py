"""The paper's qualitative findings, reproduced on scikit-learn's digits.

Kiselev & Grabovoy (2024) report that wider layers give a smaller delta and
more layers a larger one. Grid: widths 8, 32, 128 at 3 layers; depths 1, 3, 6
at width 16; seeds 0, 1, 2; 10 epochs, Adam 1e-3, batch 64; delta averaged
over k = 1,297..1,796 (the last 500 steps) and 20 orderings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.methods.point import curve_from_losses
from engine.models import build_model
from engine.specs import AnalysisSpec, ArchSpec, TrainSpec
from engine.train import per_sample_losses, seed_everything, train

CPU = torch.device("cpu")
SEEDS = (0, 1, 2)


def tail_delta(data, hidden: int, layers: int) -> float:
    """Mean tail delta over seeds for one architecture."""
    values = []
    for seed in SEEDS:
        seed_everything(seed)
        arch = ArchSpec(hidden_size=hidden, num_layers=layers)
        model = build_model(arch, data.input_shape, data.num_classes)
        train(model, data, TrainSpec(seed=seed), device=CPU)
        losses = per_sample_losses(model, data, device=CPU)
        curve = curve_from_losses(losses, AnalysisSpec(permutations=20), seed=seed)
        values.append(curve.delta[-500:].mean())
    return float(np.mean(values))


@pytest.mark.slow
def test_wider_layers_give_a_smaller_delta(digits):
    deltas = [tail_delta(digits, hidden, 3) for hidden in (8, 32, 128)]
    assert deltas[0] > deltas[1] > deltas[2], deltas


@pytest.mark.slow
def test_more_layers_give_a_larger_delta(digits):
    deltas = [tail_delta(digits, 16, layers) for layers in (1, 3, 6)]
    assert deltas[0] < deltas[1] < deltas[2], deltas
