"""Plateau's compute engine: load data, train to a minimum, measure convergence.

The engine imports nothing from the web, database or queue layers; the CLI,
the API and the workers all call :func:`engine.analyze.analyze`.
"""

from engine.errors import AnalysisCancelled, DataError, EngineError, SpecError
from engine.specs import (
    AnalysisSpec,
    ArchSpec,
    DatasetSpec,
    Limits,
    TrainSpec,
)

__all__ = [
    "AnalysisCancelled",
    "AnalysisSpec",
    "ArchSpec",
    "DataError",
    "DatasetSpec",
    "EngineError",
    "Limits",
    "SpecError",
    "TrainSpec",
]
