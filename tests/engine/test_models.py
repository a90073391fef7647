"""Architectures: the method's MLP exactly, sizes checked before allocation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from torch import nn

from engine.errors import SpecError
from engine.models import build_model, check_size, parameter_count
from engine.specs import ArchSpec, Limits


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        (ArchSpec(), (784,)),
        (ArchSpec(hidden_size=7, num_layers=0, bias=True), (1, 28, 28)),
        (ArchSpec(activation="tanh", num_layers=5), (64,)),
        (ArchSpec(kind="cnn"), (1, 28, 28)),
        (ArchSpec(kind="cnn", channels=(8, 8, 8), kernel_size=4), (3, 32, 32)),
        (ArchSpec(kind="linear"), (3, 8, 8)),
    ],
)
def test_parameter_count_matches_the_built_model(arch, shape):
    model = build_model(arch, shape, 10)
    assert parameter_count(arch, shape, 10) == sum(
        p.numel() for p in model.parameters()
    )


def test_mlp_is_the_networks_of_the_method():
    model = build_model(ArchSpec(hidden_size=16, num_layers=3), (1, 28, 28), 10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(784, 16), (16, 16), (16, 16), (16, 16), (16, 10)]
    assert all(m.bias is None for m in linears)
    relus = [m for m in model if isinstance(m, nn.ReLU)]
    assert len(relus) == 4 and isinstance(model[-1], nn.Linear)


def test_absurd_sizes_are_refused_before_allocation():
    huge = ArchSpec(hidden_size=65_536, num_layers=64)
    with pytest.raises(SpecError, match="parameters") as info:
        check_size(huge, (3, 224, 224), 1000, 64, Limits())
    assert info.value.field == "architecture"
    with pytest.raises(SpecError, match="batch_size"):
        check_size(
            ArchSpec(kind="cnn", channels=(4096,)),
            (3, 64, 64),
            10,
            4096,
            Limits(max_parameters=10**9),
        )


def test_cnn_on_tabular_data_is_refused():
    with pytest.raises(SpecError, match="image data"):
        check_size(ArchSpec(kind="cnn"), (64,), 10, 64, Limits())
    with pytest.raises(SpecError, match="below 1 pixel"):
        parameter_count(ArchSpec(kind="cnn", channels=(4, 4, 4, 4)), (1, 8, 8), 10)


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_size": 0},
        {"num_layers": -1},
        {"hidden_size": 10**9},
        {"kind": "transformer"},
        {"channels": []},
    ],
)
def test_out_of_range_specs_fail_validation(bad):
    with pytest.raises(ValidationError):
        ArchSpec(**bad)
