"""Every approach, as data: its name, its class, its loss-family preset, its config section, its CLI
flags. The one list the config, the CLI and the approach factory read (torch-free: the config and the
analysis side import it without torch).

Adding an approach: write ``cil/approaches/<name>.py`` (a subclass of ``cil.approaches.base.Approach``),
declare its hyper-parameters below as a section dataclass (FACIL's names and defaults; ``metadata``
says how to check a value and which FACIL flag sets it), and add one :class:`ApproachSpec` per name to
:data:`SPECS`. The section's keys become dotted config keys (``lucir.lamb_mr``), Parquet columns and,
through the ``flag`` metadata, CLI flags.

Field metadata understood by ``cil.config`` and ``cil.cli``:

- ``check``: ``">=0"``, ``">0"``, ``">=1"`` (a number's range) or a tuple of valid strings;
- ``flag``: the FACIL command-line flag that sets the key (``"--lamb-mr"``); with ``sets`` the flag
  takes no value and stores ``sets`` (FACIL's ``--remove-less-forget`` stores ``False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

LOSS_WEIGHT_NAMES = ("w_joint", "w_task", "w_bce_kd", "w_bce_pred")


# ---- config sections (FACIL's names and defaults) ----------------------------------------------------

@dataclass
class LucirSection:
    """LUCIR (Hou et al. 2019) with FACIL's defaults; ``lamb`` is the less-forget weight (the
    approach's distillation weight), made adaptive per task by ``adapt_lamb``."""

    lamb: float = field(default=5.0, metadata={"check": ">=0", "flag": "--lamb"})
    lamb_mr: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb-mr"})
    dist: float = field(default=0.5, metadata={"check": ">=0", "flag": "--dist"})
    K: int = field(default=2, metadata={"check": ">=1", "flag": "--K"})
    less_forget: bool = field(default=True, metadata={"flag": "--remove-less-forget", "sets": False})
    margin_ranking: bool = field(default=True, metadata={"flag": "--remove-margin-ranking", "sets": False})
    adapt_lamb: bool = field(default=True, metadata={"flag": "--remove-adapt-lamda", "sets": False})


#: section name -> its dataclass (the declared defaults are the approach's defaults)
SECTIONS: dict[str, type] = {"lucir": LucirSection}


# ---- approaches --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stability:
    """An approach's stability knob: the float config key that trades new-task accuracy for less
    forgetting, and the value FACIL's grid search starts its decay from (FACIL's gridsearch_config.py).
    The search (cil.gridsearch) decays ``key`` from ``start``; it never looks at approach names."""

    key: str
    start: float


@dataclass(frozen=True)
class ApproachSpec:
    """One approach name. ``loss`` fills the ``loss.*`` keys left unset (the loss family's preset;
    a key absent from it must stay unset: the approach does not use it). ``section`` is the config
    section the approach reads (its keys are filled with the section's defaults; every other
    section must stay unset). ``stability`` is the knob FACIL's grid search decays (None: the search
    picks the learning rate only)."""

    name: str
    impl: str  # "module:Class"
    loss: Mapping[str, float]
    section: str | None = None
    doc: str = ""
    stability: Stability | None = None


def _weights(w_joint: float, w_task: float, w_bce_kd: float, w_bce_pred: float) -> dict[str, float]:
    return {"w_joint": w_joint, "w_task": w_task, "w_bce_kd": w_bce_kd, "w_bce_pred": w_bce_pred}


# Baselines record zero loss weights (they distil nothing) and LwF's T.
_NO_DISTILLATION = {"lamb": 0.0, "T": 2.0, **_weights(0, 0, 0, 0)}
# FACIL's LwF: lamb 1, T 2; the paper's variants differ in the loss weights only.
_LWF = {"lamb": 1.0, "T": 2.0}
# LUCIR's distillation weight is lucir.lamb (adaptive per task); the paper's task-wise term on LUCIR
# is KD at T = 1 weighted 0.1 (its lucir-sr), so 0.1 is LUCIR's unit of w_task.
_LUCIR = {"T": 1.0}
# FACIL's grid search starts LwF's lamb and LUCIR's at 10 (its gridsearch_config.py names LUCIR's
# "lamda_base", an attribute LUCIR never reads; here the knob is the weight LUCIR uses).
_LWF_KNOB = Stability("loss.lamb", 10.0)
_LUCIR_KNOB = Stability("lucir.lamb", 10.0)

_SPECS = [
    ApproachSpec("finetuning", "cil.approaches.finetuning:Finetuning", _NO_DISTILLATION,
                 doc="lower bound: the new task with cross-entropy"),
    ApproachSpec("freezing", "cil.approaches.freezing:Freezing", _NO_DISTILLATION,
                 doc="backbone frozen after task 0, new heads only"),
    ApproachSpec("joint", "cil.approaches.joint:Joint", _NO_DISTILLATION,
                 doc="upper bound: all data seen so far"),
    ApproachSpec("lwf", "cil.approaches.lwf:LwF", _LWF | _weights(1, 0, 0, 0), doc="FACIL's LwF", stability=_LWF_KNOB),
    ApproachSpec("lwf-s", "cil.approaches.lwf:LwF", _LWF | _weights(0, 1, 0, 0),
                 doc="task-wise KD", stability=_LWF_KNOB),
    ApproachSpec("lwf-sr", "cil.approaches.lwf:LwF", _LWF | _weights(0.5, 1, 0, 0),
                 doc="joint + task-wise KD", stability=_LWF_KNOB),
    ApproachSpec("lwf-br", "cil.approaches.lwf:LwF", _LWF | _weights(1, 0, 1, 0),
                 doc="KD + BCE-KD", stability=_LWF_KNOB),
    ApproachSpec("lwf-br2", "cil.approaches.lwf:LwF", _LWF | _weights(1, 0, 1, 1),
                 doc="KD + BCE-KD + BCE-pred", stability=_LWF_KNOB),
    ApproachSpec("lwf-bsr", "cil.approaches.lwf:LwF", _LWF | _weights(1, 1, 0.5, 0),
                 doc="KD + task-wise + BCE-KD", stability=_LWF_KNOB),
    ApproachSpec("lucir", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(1, 0, 0, 0), "lucir",
                 doc="FACIL's LUCIR", stability=_LUCIR_KNOB),
    ApproachSpec("lucir-s", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(0, 0.1, 0, 0), "lucir",
                 doc="task-wise KD instead of less-forget", stability=_LUCIR_KNOB),
    ApproachSpec("lucir-sr", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(1, 0.1, 0, 0), "lucir",
                 doc="less-forget + task-wise KD (the paper's lucir-sr)", stability=_LUCIR_KNOB),
    ApproachSpec("lucir-br", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(1, 0, 1, 0), "lucir",
                 doc="less-forget + BCE-KD", stability=_LUCIR_KNOB),
    ApproachSpec("lucir-br2", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(1, 0, 1, 1), "lucir",
                 doc="less-forget + BCE-KD + BCE-pred over all heads", stability=_LUCIR_KNOB),
    ApproachSpec("lucir-bsr", "cil.approaches.lucir:LUCIR", _LUCIR | _weights(1, 0.1, 1, 0), "lucir",
                 doc="less-forget + task-wise KD + BCE-KD", stability=_LUCIR_KNOB),
]

SPECS: Mapping[str, ApproachSpec] = MappingProxyType({s.name: s for s in _SPECS})
APPROACHES: tuple[str, ...] = tuple(SPECS)
#: loss.* keys an approach may leave to its preset (every other loss.* key has a fixed default)
LOSS_PRESET_KEYS = ("lamb", "T", *LOSS_WEIGHT_NAMES)


def spec(name: str) -> ApproachSpec:
    """The spec of approach ``name`` (KeyError naming the valid names otherwise)."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown approach {name!r}; valid: {', '.join(APPROACHES)}") from None


def section_users(section: str) -> list[str]:
    """The approach names that read ``section``."""
    return [s.name for s in _SPECS if s.section == section]


def section_defaults(section: str) -> dict[str, Any]:
    """The declared defaults of a section, as a dict of its leaves."""
    return dataclasses.asdict(SECTIONS[section]())


# ---- FACIL flags declared by sections ----------------------------------------------------------------

@dataclass(frozen=True)
class SectionFlag:
    """A FACIL flag declared by a section field: the dotted key it sets, its value type, and the
    constant it stores when it takes no value (``--remove-*``)."""

    key: str
    type: type
    sets: Any = None


def section_flags() -> dict[str, dict[str, SectionFlag]]:
    """flag -> {section -> what it sets there}: one FACIL flag may mean another key per approach
    (``--lamb`` is ``loss.lamb`` for LwF and ``lucir.lamb`` for LUCIR)."""
    import typing

    out: dict[str, dict[str, SectionFlag]] = {}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag")
            if flag:
                out.setdefault(flag, {})[name] = SectionFlag(f"{name}.{f.name}", hints[f.name],
                                                             f.metadata.get("sets"))
    return out
