"""Class-incremental learning with FACIL's semantics and the paper's softmax-imbalance loss family.

``cil.run(cfg)`` is the incremental loop (a generator yielding after each task); ``cil.losses`` holds the
public loss functions; ``ExperimentConfig`` is the one validated config tree. This package never imports
Ray, and importing ``cil.results`` (the Parquet schema and writer) does not import torch either: the
names below are loaded on first use.
"""

from __future__ import annotations

from cil.extras import lazy_attributes

_LAZY = {"ConfigError": "cil.config", "ExperimentConfig": "cil.config", "TaskResult": "cil.loop", "run": "cil.loop"}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
