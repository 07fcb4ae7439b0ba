"""The paper's loss family as data (torch-free): its terms, its formula and its preset variants.

:data:`TERMS` is the one table of the family's terms: each row names the function of ``cil.losses`` that
computes it (the function's name is the term's name), the ``loss.*`` weight that scales it, and what it
sees. The ``loss.w_*`` config keys (``cil.config.LossConfig``), the registry's presets and
``cil.losses.family_distillation`` all read it, and the docs render its formula (:func:`formula`) and its
table. :data:`VARIANTS` are the paper's five variants, written once and applied to every family
(:data:`FAMILIES`: LwF, LwM, LUCIR).

Adding a distillation term: one function ``cil.losses.<name>(outputs, old_outputs[, T])`` and one
:class:`Term` row below; its weight becomes the config key ``loss.<weight>`` (default: the preset, 0 where
a variant does not set it) and a Parquet column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One term of the family. ``weight``: its ``loss.*`` key (None: unweighted, ``ce_pred``).
    ``distills``: summed inside the distillation weight (``lamb``) over the old heads; otherwise a
    prediction term, added by the approach itself. ``own``: the approach's own distillation term
    (``kd_joint`` for LwF and LwM, LUCIR's less-forget), computed by the approach and weighted by this
    row's weight. ``tempered``: the function takes the temperature ``loss.T``. ``definition`` and
    ``sees``: the docs' table."""

    name: str
    weight: str | None
    definition: str
    sees: str
    distills: bool = False
    own: bool = False
    tempered: bool = False

    @property
    def summary(self) -> str:
        """The weight's description in the config reference."""
        return f"Weight of `{self.name}`, {self.definition.split(':')[-1].strip()} (null: the preset)."


#: the terms, in the docs' order; the distillation terms are summed in this order (the numbers depend on it)
TERMS: tuple[Term, ...] = (
    Term("ce_pred", None, "CE(`z_t`, `y`) (FACIL's LwF: the current head without exemplars; over all heads with "
                          "them)", "the new task"),
    Term("kd_joint", "w_joint", "KD(concat(`z_0..z_{t-1}`), concat(`zo_0..zo_{t-1}`); `T`): KD with one softmax "
                                "over all old classes", "blind to a shift shared by all old logits",
         distills=True, own=True, tempered=True),
    Term("kd_task", "w_task", "sum over `i < t` of KD(`z_i`, `zo_i`; `T`): KD with one softmax per old task",
         "blind to per-task shifts only", distills=True, tempered=True),
    Term("bce_kd", "w_bce_kd", "sum over `i < t` of mean BCE(sigmoid(`z_i`), sigmoid(`zo_i`)): the "
                               "shift-sensitive BCE distillation of each old head", "shift-sensitive distillation",
         distills=True),
    Term("bce_pred", "w_bce_pred", "mean BCE(sigmoid(`z_t`), one_hot(`y`)): the BCE of the current head's "
                                   "prediction", "shift-sensitive prediction"),
)
#: the ``loss.*`` weight keys, in the table's order (the config's and the Parquet columns' order)
LOSS_WEIGHT_NAMES: tuple[str, ...] = tuple(t.weight for t in TERMS if t.weight)
DISTILLATION_TERMS: tuple[Term, ...] = tuple(t for t in TERMS if t.distills)


def formula(own: str = "kd_joint", scale: str = "lamb", first: str = "ce_pred") -> str:
    """The family's loss for one batch, with the approach's own distillation term ``own`` and its
    distillation weight ``scale``: ``first + w * prediction terms + scale * (sum of w * distillation terms)``."""
    prediction = [first] + [f"{t.weight} * {t.name}" for t in TERMS if t.weight and not t.distills]
    distill = [f"{t.weight} * {own if t.own else t.name}" for t in DISTILLATION_TERMS]
    return " + ".join(prediction) + f" + {scale} * (" + " + ".join(distill) + ")"


@dataclass(frozen=True)
class Variant:
    """One of the paper's variants: the name suffix, what it adds (``{own}``: the family's own
    distillation term), and its ``loss.w_*`` per weight profile (:attr:`Family.profile`); a weight it
    does not name is 0."""

    suffix: str
    doc: str
    weights: Mapping[str, Mapping[str, float]]  # profile -> {weight key: value}


# The paper's variants. LUCIR's task-wise term is KD at T = 1 weighted 0.1 (its lucir-sr), so 0.1 is
# LUCIR's unit of w_task, and its -sr and -bsr keep the less-forget and BCE-KD terms at 1.
VARIANTS: tuple[Variant, ...] = (
    Variant("-s", "task-wise KD instead of {own}", {"kd": {"w_task": 1}, "lucir": {"w_task": 0.1}}),
    Variant("-sr", "{own} + task-wise KD", {"kd": {"w_joint": 0.5, "w_task": 1},
                                           "lucir": {"w_joint": 1, "w_task": 0.1}}),
    Variant("-br", "{own} + BCE-KD", {"kd": {"w_joint": 1, "w_bce_kd": 1}, "lucir": {"w_joint": 1, "w_bce_kd": 1}}),
    Variant("-br2", "{own} + BCE-KD + BCE-pred", {"kd": {"w_joint": 1, "w_bce_kd": 1, "w_bce_pred": 1},
                                                 "lucir": {"w_joint": 1, "w_bce_kd": 1, "w_bce_pred": 1}}),
    Variant("-bsr", "{own} + task-wise KD + BCE-KD", {"kd": {"w_joint": 1, "w_task": 1, "w_bce_kd": 0.5},
                                                     "lucir": {"w_joint": 1, "w_task": 0.1, "w_bce_kd": 1}}),
)
#: every family's base row: its own distillation term alone
BASE_WEIGHTS: Mapping[str, float] = {"w_joint": 1}


@dataclass(frozen=True)
class Family:
    """An approach whose loss is the family's: ``name`` and its variants ``name-s`` ... share ``impl``,
    ``section`` and the fixed ``loss`` keys (temperature, distillation weight); ``profile`` picks the
    variants' weights; ``own`` names its own distillation term in the variants' descriptions and ``extra``
    what every variant adds."""

    name: str
    impl: str
    loss: Mapping[str, float]
    profile: str
    own: str
    doc: str
    section: str | None = None
    extra: str = ""

    def presets(self) -> list[tuple[str, dict[str, float], str]]:
        """(name, loss preset, description) of the base approach and each variant."""
        def weights(values: Mapping[str, float]) -> dict[str, float]:
            unknown = set(values) - set(LOSS_WEIGHT_NAMES)
            if unknown:
                raise ValueError(f"family {self.name}: unknown loss weights {sorted(unknown)}")
            return {w: values.get(w, 0) for w in LOSS_WEIGHT_NAMES}

        rows = [(self.name, dict(self.loss) | weights(BASE_WEIGHTS), self.doc)]
        for v in VARIANTS:
            rows.append((self.name + v.suffix, dict(self.loss) | weights(v.weights[self.profile]),
                         v.doc.format(own=self.own) + self.extra))
        return rows
