"""glassbox: the deep-learning practice of 2025 in one toolkit you can run, read and verify.

Heavy modules load on first use so that ``import glassbox`` and
``glassbox --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "glassbox.data",
    "build_model": "glassbox.nn.models",
    "Trainer": "glassbox.train.trainer",
    "Run": "glassbox.run",
    "run_recipe": "glassbox.pipeline",
    "load_recipe": "glassbox.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glassbox' has no attribute {name!r}")
