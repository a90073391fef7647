"""The in-memory data set every method works on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Dataset:
    """Features and labels, loaded once and kept as tensors.

    ``x`` is float32 of shape ``(m, *input_shape)``: ``(m, d)`` for tables,
    ``(m, C, H, W)`` for images (pixels scaled to ``[0, 1]``; tabular
    features standardised to zero mean and unit variance). ``y`` is int64 of
    shape ``(m,)`` with values in ``[0, num_classes)``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    @property
    def size(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.name, self.x.to(device), self.y.to(device), self.num_classes
        )

    def subset(self, index: torch.Tensor) -> Dataset:
        return Dataset(self.name, self.x[index], self.y[index], self.num_classes)
