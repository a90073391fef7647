"""Architectures: the method's MLP, a small CNN and a linear model.

Sizes are checked analytically (parameter count, activation memory) before
any tensor is allocated, so an absurd spec fails fast with a clear message.
"""

from __future__ import annotations

import math

from torch import nn

from engine.errors import SpecError
from engine.specs import ArchSpec, Limits

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _flat(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


def _cnn_shapes(arch: ArchSpec, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shape (C, H, W) after each conv block (conv, activation, 2×2 pool)."""
    if len(input_shape) != 3:
        raise SpecError(
            f"a cnn needs image data of shape (C, H, W); this data set has "
            f"features of shape {tuple(input_shape)}: use kind 'mlp' or 'linear'",
            field="architecture.kind",
        )
    c, h, w = input_shape
    shapes = []
    for out in arch.channels:
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise SpecError(
                f"{len(arch.channels)} conv blocks halve a {input_shape[1]}x"
                f"{input_shape[2]} image below 1 pixel: use fewer channels entries",
                field="architecture.channels",
            )
        shapes.append((out, h, w))

    return shapes


def parameter_count(
    arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int
) -> int:
    """Number of trainable parameters, computed without building the model."""
    d = _flat(input_shape)
    if arch.kind == "linear":
        return d * num_classes + num_classes
    if arch.kind == "mlp":
        h, b = arch.hidden_size, int(arch.bias)
        return (d + b) * h + arch.num_layers * (h + b) * h + (h + b) * num_classes
    shapes = _cnn_shapes(arch, input_shape)
    total, c_in, k2 = 0, input_shape[0], arch.kernel_size**2
    for c_out, _, _ in shapes:
        total += c_in * c_out * k2 + c_out
        c_in = c_out
    return total + _flat(shapes[-1]) * num_classes + num_classes


def activation_bytes(
    arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int, batch_size: int
) -> int:
    """Float32 bytes of the activations one training batch keeps for backward."""
    if arch.kind == "linear":
        per_sample = num_classes
    elif arch.kind == "mlp":
        per_sample = 2 * arch.hidden_size * (arch.num_layers + 1) + num_classes
    else:
        c, h, w = input_shape
        per_sample = num_classes
        for c_out, ho, wo in _cnn_shapes(arch, input_shape):
            per_sample += 2 * c_out * h * w + c_out * ho * wo  # conv, act, pool
            h, w = ho, wo
    return 4 * batch_size * (per_sample + _flat(input_shape))


def check_size(
    arch: ArchSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    limits: Limits,
) -> int:
    """Refuse a spec over the limits before allocation; return the parameter count."""
    params = parameter_count(arch, input_shape, num_classes)
    if params > limits.max_parameters:
        raise SpecError(
            f"the {arch.kind} has {params:,} parameters for inputs of shape "
            f"{tuple(input_shape)}; the limit is {limits.max_parameters:,}",
            field="architecture",
        )
    act = activation_bytes(arch, input_shape, num_classes, batch_size)
    if act > limits.max_activation_bytes:
        raise SpecError(
            f"one batch of {batch_size} needs about {act / 2**20:,.0f} MiB of "
            f"activations; the limit is {limits.max_activation_bytes / 2**20:,.0f} "
            "MiB: use a smaller batch_size or a smaller network",
            field="training.batch_size",
        )
    return params


def build_model(
    arch: ArchSpec, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The network for ``arch``; inputs of ``input_shape``, ``num_classes`` logits.

    ``mlp`` is the method's network: input → h, ``num_layers`` × (h → h),
    h → classes, the activation after every layer but the last, bias off by
    default. Image inputs are flattened by the model itself.
    """
    d = _flat(input_shape)
    if arch.kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))
    act = _ACTIVATIONS[arch.activation]
    if arch.kind == "mlp":
        h, bias = arch.hidden_size, arch.bias
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d, h, bias=bias), act()]
        for _ in range(arch.num_layers):
            layers += [nn.Linear(h, h, bias=bias), act()]
        layers.append(nn.Linear(h, num_classes, bias=bias))
        return nn.Sequential(*layers)
    shapes = _cnn_shapes(arch, input_shape)
    layers, c_in = [], input_shape[0]
    for c_out, _, _ in shapes:
        layers += [
            nn.Conv2d(c_in, c_out, arch.kernel_size, padding="same"),
            act(),
            nn.MaxPool2d(2),
        ]
        c_in = c_out
    layers += [nn.Flatten(), nn.Linear(_flat(shapes[-1]), num_classes)]
    return nn.Sequential(*layers)
