"""Shared fixtures for the engine's tests: small real data, no services."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from engine.dataset import Dataset


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's 8×8 digits (1,797 samples, 10 classes), standardised."""
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    return Dataset("sklearn:digits", x, torch.tensor(bunch.target), 10)
