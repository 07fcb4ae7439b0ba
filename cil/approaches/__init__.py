"""One file per approach over the shared loop; :mod:`cil.approaches.registry` lists them.

Importing this package does not import torch (the config reads the registry): the approach classes
are loaded when :func:`make_approach` builds one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cil.approaches.registry import APPROACHES, SPECS, ApproachSpec, spec

if TYPE_CHECKING:
    from cil.approaches.base import Approach
    from cil.config import ExperimentConfig


def approach_class(name: str) -> type[Approach]:
    """The class that implements approach ``name``."""
    module, _, cls = spec(name).impl.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_approach(cfg: ExperimentConfig) -> Approach:
    """The approach named by ``cfg.approach`` (already validated by the config)."""
    return approach_class(cfg.approach)(cfg)


__all__ = ["APPROACHES", "SPECS", "ApproachSpec", "approach_class", "make_approach", "spec"]
