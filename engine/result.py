"""The Result document of the contract, and the stored curve points."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class TrainSummary(BaseModel):
    """Full-data loss and accuracy where training stopped."""

    loss: float
    accuracy: float
    epochs: int
    seconds: float


class Budget(BaseModel):
    """The caller's label budget and where the data stand against it.

    ``reached``: the data already suffice. ``within``: more are needed and the
    projected size fits the budget. ``exceeded``: the projected size is over it.
    """

    limit: int
    status: Literal["reached", "within", "exceeded"]


class CurvePoint(BaseModel):
    """One point of the stored convergence curve."""

    k: int
    delta: float
    delta_low: float | None = None
    delta_high: float | None = None
    delta_expected: float | None = None
    smoothed: float


class Result(BaseModel):
    """What an analysis found (CONTRACT.md, "Result")."""

    method: str
    sample_size: int
    tolerance: float
    final_delta: float
    sufficient: bool
    sufficient_size: int | None = None
    projected_size: int | None = None
    projected_interval: tuple[int, int] | None = None
    additional_samples_needed: int | None = None
    budget: Budget | None = None
    train: TrainSummary
    #: the size at which the noise-free expected curve reaches the tolerance
    expected_sufficient_size: int | None = None
    #: the tail fit behind the projection: delta ≈ C·k^(−exponent)
    tail_fit: dict | None = None
    parameters: int
    device: str
    #: seconds per stage (loading, training, method, verdict)
    timings: dict[str, float]
    #: method-specific figures (eigenvalues, draws, fitted power law, ...)
    details: dict
