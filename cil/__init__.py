"""Class-incremental learning with FACIL's semantics and the paper's softmax-imbalance loss family.

``cil.run(cfg)`` is the incremental loop (a generator yielding after each task); ``cil.losses`` holds the
public loss functions; ``ExperimentConfig`` is the one validated config tree. This package never imports
Ray.
"""

from cil.config import ConfigError, ExperimentConfig
from cil.run import TaskResult, run

__all__ = ["ConfigError", "ExperimentConfig", "TaskResult", "run"]
