"""Class-incremental learning with FACIL's semantics and the paper's softmax-imbalance loss family.

``cil.run(cfg)`` is the incremental loop (a generator yielding after each task); ``cil.losses`` holds the
public loss functions; ``ExperimentConfig`` is the one validated config tree. This package never imports
Ray, and importing ``cil.results`` (the Parquet schema and writer) does not import torch either: the
names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"ConfigError": "cil.config", "ExperimentConfig": "cil.config", "TaskResult": "cil.loop", "run": "cil.loop"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cil' has no attribute {name!r}")
