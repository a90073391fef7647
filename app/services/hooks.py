"""The engine's entry points, resolved from settings (tests swap in fakes)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=16)
def resolve(path: str) -> Callable[..., Any]:
    """The function named by ``module:attribute``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not 'module:function'")
    return getattr(importlib.import_module(module_name), attribute)
