"""What an analysis is asked to do: data set, architecture, training, method.

These models are the single source of truth for ranges and defaults; the
API's request schema and the CLI both build them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal["point", "neighbourhood", "hessian", "learning-curve"]
Device = Literal["auto", "cpu", "cuda"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Spec):
    """A data set reference (see the contract's table) and how much of it to use."""

    uri: Annotated[str, Field(min_length=1, max_length=1024)]
    limit: Annotated[int | None, Field(ge=2, le=100_000_000)] = None
    label_column: Annotated[str | None, Field(min_length=1, max_length=256)] = None

    @field_validator("uri")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("the dataset reference contains a NUL byte")
        return value


class ArchSpec(_Spec):
    """The network. Input and output sizes come from the data set."""

    kind: Literal["mlp", "cnn", "linear"] = "mlp"
    hidden_size: Annotated[int, Field(ge=1, le=65_536)] = 16
    num_layers: Annotated[int, Field(ge=0, le=64)] = 3
    bias: bool = False
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    channels: Annotated[
        tuple[Annotated[int, Field(ge=1, le=4096)], ...],
        Field(min_length=1, max_length=8),
    ] = (16, 32)
    kernel_size: Annotated[int, Field(ge=1, le=15)] = 3


class TrainSpec(_Spec):
    """How to train to the minimum (defaults are the method's setup)."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 64
    lr: Annotated[float, Field(gt=0, le=10)] = 1e-3
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    device: Device = "auto"


class AnalysisSpec(_Spec):
    """Which convergence method to run and its parameters."""

    method: Method = "point"
    tolerance: Annotated[float, Field(gt=0, le=1e6)] = 1e-4
    permutations: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: smoothing of the averaged curve: the paper's EMA (factor below) or none
    smoothing: Literal["ema", "none"] = "ema"
    ema_factor: Annotated[float, Field(ge=0, lt=1)] = 0.99
    #: width of the band across orderings, as a central quantile range
    band: Annotated[float, Field(gt=0, lt=1)] = 0.9
    #: bootstrap resamples for the projection interval, and its level
    bootstrap: Annotated[int, Field(ge=10, le=10_000)] = 200
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.9

    # neighbourhood method
    sigma: Annotated[float, Field(gt=0, le=1e3)] = 0.1
    draws: Annotated[int, Field(ge=1, le=4096)] = 64
    directions: Annotated[int, Field(ge=1, le=64)] = 2
    perturbation: Literal["subspace", "isotropic"] = "subspace"
    squared: bool = True

    # hessian method
    rank: Annotated[int, Field(ge=1, le=64)] = 10
    radius: Annotated[float, Field(ge=0, le=1e3)] = 1.0

    # learning-curve method
    subset_sizes: Annotated[int, Field(ge=3, le=50)] = 8
    seeds: Annotated[int, Field(ge=1, le=20)] = 3
    holdout: Annotated[float, Field(gt=0, lt=1)] = 0.2
    #: give every subset about as many optimiser steps as the full training part
    #: (otherwise small subsets are under-trained and the curve measures that)
    match_steps: bool = True


class Limits(_Spec):
    """Resource limits checked before anything is allocated."""

    max_parameters: int = 50_000_000
    #: bytes of activations for one training batch (forward, kept for backward)
    max_activation_bytes: int = 2 * 1024**3
    #: bytes a data set may take in memory once loaded
    max_dataset_bytes: int = 8 * 1024**3
    #: bytes a data file may have on disk
    max_file_bytes: int = 4 * 1024**3


class AnalysisRequest(_Spec):
    """Everything one analysis needs: the body of a job without its webhook."""

    dataset: DatasetSpec
    architecture: ArchSpec = ArchSpec()
    training: TrainSpec = TrainSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    #: the most labels the caller can afford, in samples (total, not extra)
    budget: Annotated[int | None, Field(ge=1, le=10**12)] = None
