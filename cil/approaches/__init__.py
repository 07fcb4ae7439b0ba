"""One file per approach; the LwF presets all map to the one LwF class with other loss weights."""

from cil.approaches.base import Approach
from cil.approaches.finetuning import Finetuning
from cil.approaches.freezing import Freezing
from cil.approaches.joint import Joint
from cil.approaches.lwf import LwF
from cil.config import ExperimentConfig
from cil.presets import LWF_PRESETS

_CLASSES: dict[str, type[Approach]] = {"finetuning": Finetuning, "freezing": Freezing, "joint": Joint}
_CLASSES.update(dict.fromkeys(LWF_PRESETS, LwF))


def make_approach(cfg: ExperimentConfig) -> Approach:
    """The approach named by ``cfg.approach`` (already validated by the config)."""
    return _CLASSES[cfg.approach](cfg)


__all__ = ["Approach", "Finetuning", "Freezing", "Joint", "LwF", "make_approach"]
