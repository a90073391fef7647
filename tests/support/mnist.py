"""MNIST-format (IDX) files written locally, for torchvision's own loader.

No data set can be downloaded here, so tests and benchmarks write their own:
``digits_like_mnist`` turns scikit-learn's 8×8 digits into 28×28 images with
random shifts and noise, a task with real structure to learn.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: big-endian magic (0x08 = uint8, then ndim), sizes, data."""
    magic = 0x0800 | array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(
    root: Path, images: np.ndarray, labels: np.ndarray, name: str = "MNIST"
) -> Path:
    """Write ``root/<name>/raw/`` as torchvision expects (train and test splits)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return raw


def digits_like_mnist(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 uint8 images of handwritten digits and their labels.

    Each is one of scikit-learn's 8×8 digits, scaled up 3×, placed at a
    random offset in the 28×28 frame, with pixel noise.
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    bunch = load_digits()
    pick = rng.integers(0, len(bunch.target), size=n)
    small = bunch.images[pick] * (255 / 16)  # (n, 8, 8) in [0, 255]
    big = small.repeat(3, axis=1).repeat(3, axis=2)  # (n, 24, 24)
    images = np.zeros((n, 28, 28))
    dy, dx = rng.integers(0, 5, size=(2, n))
    for offset_y in range(5):
        for offset_x in range(5):
            rows = (dy == offset_y) & (dx == offset_x)
            images[rows, offset_y : offset_y + 24, offset_x : offset_x + 24] = big[rows]
    images += rng.normal(0, 20, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), bunch.target[pick].astype(np.uint8)
