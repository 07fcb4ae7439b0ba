"""Every approach, as data: its name, its class, its loss-family preset, its config section, its CLI
flags. The one list the config, the CLI and the approach factory read (torch-free: the config and the
analysis side import it without torch).

Adding an approach: write ``cil/approaches/<name>.py`` (a subclass of ``cil.approaches.base.Approach``),
declare its hyper-parameters below as a section dataclass (FACIL's names and defaults; ``metadata``
says how to check a value and which FACIL flag sets it), and add one :class:`ApproachSpec` per name to
:data:`SPECS`. The section's keys become dotted config keys (``lucir.lamb_mr``), Parquet columns and,
through the ``flag`` metadata, CLI flags.

Field metadata understood by ``cil.config`` and ``cil.cli`` (the same as the shared sections' in
``cil.config.schema``):

- ``check``: a range of ``cil.config.validation.RANGES`` (``">=0"``, ``">0"``, ``">=1"``, ``"[0,1]"``,
  ``"-1|>=0"`` -- -1 as a sentinel, e.g. "adaptive" or "all", else >= 0 -- ...), a tuple of valid
  strings, or a function of the value that returns what is wrong with it (``None`` when it is valid);
- ``flag``: the FACIL command-line flag that sets the key (``"--lamb-mr"``); with ``sets`` the flag
  takes no value and stores ``sets`` (FACIL's ``--remove-less-forget`` stores ``False``).

The loss family's approaches (LwF, LwM, LUCIR and their variants) are generated from
``cil.approaches.family``: one :class:`~cil.approaches.family.Family` each, its variants from the one
variant table.

Over 400 lines on purpose: most of it is data (every approach section's keys, with their docstrings,
which the reference renders), and one file keeps an approach's declaration in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cil.approaches.family import LOSS_WEIGHT_NAMES, TERMS, Family
from cil.catalog import dataset_problem

# ---- config sections (FACIL's names and defaults) ----------------------------------------------------

@dataclass
class LucirSection:
    """LUCIR (Hou et al. 2019) with FACIL's defaults; ``lamb`` is the less-forget weight (the
    approach's distillation weight), made adaptive per task by ``adapt_lamb``."""

    lamb: float = field(default=5.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the less-forget distillation (LUCIR's distillation weight; `loss.lamb` does not apply to LUCIR),
    made adaptive per task by `adapt_lamb`."""
    lamb_mr: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb-mr"})
    """Weight of the margin-ranking loss."""
    dist: float = field(default=0.5, metadata={"check": ">=0", "flag": "--dist"})
    """Margin of the margin-ranking loss."""
    K: int = field(default=2, metadata={"check": ">=1", "flag": "--K"})
    """Hard new-class cosines (the top K) each old-class sample is ranked against."""
    less_forget: bool = field(default=True, metadata={"flag": "--remove-less-forget", "sets": False})
    """Less-forget distillation between the normalised features of both models, old heads frozen from task 1 on;
    false is FACIL's ablation (`--remove-less-forget`): the MSE between the old heads' cosines of both models times
    the number of old classes, nothing frozen."""
    margin_ranking: bool = field(default=True, metadata={"flag": "--remove-margin-ranking", "sets": False})
    """Use the margin-ranking loss (false: FACIL's `--remove-margin-ranking`)."""
    adapt_lamb: bool = field(default=True, metadata={"flag": "--remove-adapt-lamda", "sets": False})
    """Scale `lamb` per task by sqrt(old classes / new classes) (false: FACIL's `--remove-adapt-lamda`, `lamb` as
    given)."""
    facil_relu: bool = False
    """Remove the ReLU FACIL removes: the end of ``layer3``'s last block on ResNet-32 and ResNet-18 (on
    ResNet-18 an inner one, so its features stay non-negative) and none on the ConvNet (false: the ReLU
    after the backbone's last block, the paper's intent, on every backbone)."""


def _mixing_weight(value: float) -> str | None:
    """FACIL's alpha: the old importance's share in [0, 1], or -1 for old classes / classes seen."""
    return None if value == -1 or 0 <= value <= 1 else "must be in [0, 1], or -1 (old classes / classes seen)"


def _sample_count(value: int) -> str | None:
    """FACIL's sample count: >= 1, or -1 for the task's training samples in full batches."""
    return None if value == -1 or value >= 1 else "must be >= 1, or -1 (the task's training samples, in full batches)"


#: how the importance pass picks the label of each sample (FACIL's choices)
FISHER_SAMPLING = ("max_pred", "true", "multinomial")


@dataclass
class EwcSection:
    """EWC (Kirkpatrick et al. 2017) with FACIL's defaults: ``lamb`` weighs the Fisher penalty,
    ``alpha`` is the old Fisher's share when the new task's is merged in."""

    lamb: float = field(default=5000.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the Fisher penalty `lamb * sum F (p - p*)^2 / 2` over the backbone."""
    alpha: float = field(default=0.5, metadata={"check": _mixing_weight, "flag": "--alpha"})
    """The old Fisher's share when the new task's is merged in, `F <- alpha F + (1 - alpha) F_t` (-1: old classes /
    classes seen)."""
    fi_sampling_type: str = field(default="max_pred",
                                  metadata={"check": FISHER_SAMPLING, "flag": "--fi-sampling-type"})
    """Label of each sample in the Fisher pass: `max_pred` (the model's top class), `true` (ground truth),
    `multinomial` (one label drawn per sample from the model's softmax)."""
    fi_num_samples: int = field(default=-1, metadata={"check": _sample_count, "flag": "--fi-num-samples"})
    """Training samples the Fisher pass uses (-1: the whole task, in full batches as FACIL)."""


@dataclass
class MasSection:
    """MAS (Aljundi et al. 2018, global version) with FACIL's defaults."""

    lamb: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the importance penalty `lamb * sum Omega (p - p*)^2 / 2` over the backbone."""
    alpha: float = field(default=0.5, metadata={"check": _mixing_weight, "flag": "--alpha"})
    """The old importances' share when the new task's are merged in (-1: old classes / classes seen)."""
    fi_num_samples: int = field(default=-1, metadata={"check": _sample_count, "flag": "--fi-num-samples"})
    """Training samples the importance pass uses (-1: the whole task, in full batches as FACIL)."""


@dataclass
class PathIntegralSection:
    """Path Integral / Synaptic Intelligence (Zenke et al. 2017) with FACIL's defaults: ``lamb`` is
    the paper's c, ``damping`` its xi."""

    lamb: float = field(default=0.1, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the path-integral penalty (the paper's c)."""
    damping: float = field(default=0.1, metadata={"check": ">0", "flag": "--damping"})
    """Damping added to each parameter's squared move in the importance (the paper's xi)."""


@dataclass
class RWalkSection:
    """RWalk (Chaudhry et al. 2018) with FACIL's defaults (FACIL's flags for the Fisher keys are
    spelt with underscores). ``facil_path_loss``: score the optimisation path by the cross-entropy
    over all heads, as FACIL does, instead of the cross-entropy it trains with."""

    lamb: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the penalty `lamb * sum (F + s) (p - p*)^2` over the backbone."""
    alpha: float = field(default=0.5, metadata={"check": _mixing_weight, "flag": "--alpha"})
    """The old Fisher's share when the new task's is merged in, as EWC's (-1: old classes / classes seen)."""
    damping: float = field(default=0.1, metadata={"check": ">0", "flag": "--damping"})
    """Damping of the path scores."""
    fim_sampling_type: str = field(default="max_pred",
                                   metadata={"check": FISHER_SAMPLING, "flag": "--fim_sampling_type"})
    """Label of each sample in the Fisher pass, as EWC's `fi_sampling_type`."""
    fim_num_samples: int = field(default=-1, metadata={"check": _sample_count, "flag": "--fim_num_samples"})
    """Training samples the Fisher pass uses (-1: the whole task, in full batches as FACIL)."""
    facil_path_loss: bool = False
    """Score the optimisation path by the cross-entropy over all heads, as FACIL does, instead of the cross-entropy
    the approach trains with."""


@dataclass
class ICaRLSection:
    """iCaRL (Rebuffi et al. 2017) with FACIL's default: ``lamb`` weighs the distillation BCE."""

    lamb: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the distillation BCE between the old classes' sigmoids of both models."""


@dataclass
class BiCSection:
    """BiC (Wu et al. 2019) with FACIL's defaults: ``lamb`` -1 is the paper's adaptive
    n_old / n_seen (the cross-entropy then weighs 1 - lamb); ``val_exemplar_percentage`` of each class's
    exemplar quota is held out to train the new task's bias layer for ``num_bias_epochs`` epochs."""

    lamb: float = field(default=-1.0, metadata={"check": "-1|>=0", "flag": "--lamb"})
    """Distillation weight (-1: the paper's adaptive n_old / n_seen, the cross-entropy then weighing 1 - lamb)."""
    T: float = field(default=2.0, metadata={"check": ">0", "flag": "--T"})
    """Distillation temperature."""
    val_exemplar_percentage: float = field(default=0.1, metadata={"check": "[0,1]",
                                                                  "flag": "--val-exemplar-percentage"})
    """Share of each class's exemplar quota held out to train the bias layers, in [0, 1]."""
    num_bias_epochs: int = field(default=200, metadata={"check": ">=0", "flag": "--num-bias-epochs"})
    """Epochs of the bias-correction stage after each task."""


@dataclass
class LwmSection:
    """LwM (Dhar et al. 2019) with FACIL's defaults: ``beta`` weighs the distillation of the old heads
    (the loss family's terms), ``gamma`` the attention distillation between Grad-CAM maps of
    ``gradcam_layer`` (a backbone module name). ``facil_attention`` reproduces FACIL's attention term:
    maps from detached hooks (no gradient), each model's own top class over all its heads, and a score
    averaged over the batch-by-batch block of those classes, unnormalised maps."""

    beta: float = field(default=1.0, metadata={"check": ">=0", "flag": "--beta"})
    """Weight of the distillation of the old heads (the loss family's terms, weighted by `loss.w_*`)."""
    gamma: float = field(default=1.0, metadata={"check": ">=0", "flag": "--gamma"})
    """Weight of the attention distillation between the Grad-CAM maps of both models."""
    gradcam_layer: str = field(default="layer3", metadata={"flag": "--gradcam-layer"})
    """Backbone module whose activations make the Grad-CAM maps (`net.` prefix optional for resnet18); `layer3` on a
    backbone without one means its last spatial layer (convnet: `bns.1`); any other name that is not a module is an
    error listing the valid names."""
    facil_attention: bool = False
    """Reproduce FACIL's attention term: maps from detached hooks (no gradient), each model's own top class over all
    its heads, a score averaged over the batch-by-batch block of those classes, unnormalised maps."""
    facil_fix_bn: bool = False
    """FACIL's LwM puts the model back in training mode after each batch's Grad-CAM pass, which undoes
    `train.fix_bn` after task 0; true does the same (false: `train.fix_bn` holds for LwM too)."""


@dataclass
class EeilSection:
    """EEIL (Castro et al. 2018) with FACIL's defaults: ``lamb`` weighs the distillation at temperature
    ``T``; after the training on all data, ``nepochs_finetuning`` epochs on a class-balanced set at
    ``train.lr * lr_finetuning_factor``; ``noise_grad`` adds FACIL's decaying Gaussian noise to the
    gradients. ``facil_finetuning`` reproduces FACIL's stages (see cil.approaches.eeil)."""

    lamb: float = field(default=1.0, metadata={"check": ">=0", "flag": "--lamb"})
    """Weight of the distillation of the old heads."""
    T: float = field(default=2.0, metadata={"check": ">0", "flag": "--T"})
    """Distillation temperature."""
    lr_finetuning_factor: float = field(default=0.01, metadata={"check": ">0", "flag": "--lr-finetuning-factor"})
    """The balanced fine-tuning stage trains at `train.lr * lr_finetuning_factor`."""
    nepochs_finetuning: int = field(default=40, metadata={"check": ">=0", "flag": "--nepochs-finetuning"})
    """Epochs of the class-balanced fine-tuning stage after the training on all data (0: no second stage)."""
    noise_grad: bool = field(default=False, metadata={"flag": "--noise-grad", "sets": True})
    """Add FACIL's decaying Gaussian noise `N(0,1) * 0.3 / (1 + epoch)^0.55` to every gradient."""
    facil_finetuning: bool = False
    """Reproduce FACIL's stages: stage 1 distils heads 0..t-2, the balanced stage distils no new class and balances
    the exemplars against as many random new-task samples in total."""
    balanced_herding: bool = False
    """Pick the ``m`` samples of each new class in the balanced set by herding on the features of the
    model stage 1 left, as the paper does (false: at random, as FACIL; ignored with ``facil_finetuning``)."""
    balanced_model_selection: bool = False
    """FACIL's model selection in the balanced stage too: lr decay on a plateau of the validation loss (the new task's
    cross-entropy over all heads) and the best epoch kept, which keeps the stage's first, least balanced epoch. False
    (the paper's): `nepochs_finetuning` epochs at the stage's lr, the last kept."""


@dataclass
class DmcSection:
    """DMC (Zhang et al. 2020): ``aux_dataset`` is the unlabelled data of the double distillation, any
    name ``cil.data.load_dataset`` reads (FACIL: ImageNet 32x32; here 3,000 images of 100 synthetic
    classes, so that small runs need no download: many classes vary the images more than many samples
    of few), read from ``aux_data_root`` (empty: ``data.data_root``) at the main data set's
    image size; ``aux_batch_size`` is the batch size of the consolidation stage."""

    aux_dataset: str = field(default="synthetic:classes=100,train=30,test=5",
                             metadata={"check": dataset_problem, "flag": "--aux-dataset"})
    """The unlabelled auxiliary data of the double distillation: any name `cil.data.load_dataset` reads (FACIL:
    ImageNet 32x32; the default, 3,000 images of 100 synthetic classes, needs no download), at the main data set's
    image size and channel count."""
    aux_batch_size: int = field(default=128, metadata={"check": ">=1", "flag": "--aux-batch-size"})
    """Batch size of the consolidation stage on the auxiliary data."""
    aux_data_root: str = ""
    """Where `aux_dataset` is read from (empty: `data.data_root`)."""


#: section name -> its dataclass (the declared defaults are the approach's defaults)
SECTIONS: dict[str, type] = {"lucir": LucirSection, "ewc": EwcSection, "mas": MasSection,
                             "path_integral": PathIntegralSection, "r_walk": RWalkSection,
                             "icarl": ICaRLSection, "bic": BiCSection, "lwm": LwmSection,
                             "eeil": EeilSection, "dmc": DmcSection}


# ---- approaches --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stability:
    """An approach's stability knob: the float config key that trades new-task accuracy for less
    forgetting, and the value FACIL's grid search starts its decay from (FACIL's gridsearch_config.py).
    The search (cil.gridsearch) decays ``key`` from ``start``; it never looks at approach names."""

    key: str
    start: float


@dataclass(frozen=True)
class FirstTask:
    """How an approach trains task 0, as far as a sweep may share it (tune/prefix.py): the state after
    task 0 (model, memory, the approach's own state, after its end-of-task work) and task 0's rows are
    those of approach ``like`` (None: its own) whenever the configs agree on every key except ``unused``
    (keys with no effect up to the end of task 0) and the keys of ``neutral`` at their neutral value (a
    loss weight of 0 computes no term). tests/test_prefix.py checks every declaration bit for bit."""

    like: str | None = None
    unused: tuple[str, ...] = ()
    neutral: Mapping[str, Any] = field(default_factory=dict)


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
    #: the run is refused without an exemplar budget (FACIL asserts it for BiC, IL2M, ...)
    needs_exemplars: bool = False
    #: ``memory.selection`` when the config leaves it unset
    selection: str = "random"
    stability: Stability | None = None
    #: a reference that sees every task's data, not a method under comparison: "the best approach"
    #: comparisons leave it out (``analysis.UPPER_BOUNDS``)
    upper_bound: bool = False
    #: what acts up to the end of task 0, for sharing that task between trials (tune/prefix.py)
    first_task: FirstTask = field(default_factory=FirstTask)


# Baselines record zero loss weights (they distil nothing) and LwF's T.
_NO_DISTILLATION = {"lamb": 0.0, "T": 2.0, **dict.fromkeys(LOSS_WEIGHT_NAMES, 0)}
# FACIL's grid search starts LwF's lamb and LUCIR's at 10 (its gridsearch_config.py names LUCIR's
# "lamda_base", an attribute LUCIR never reads; here the knob is the weight LUCIR uses).
_LWF_KNOB = Stability("loss.lamb", 10.0)
# Task 0 of finetuning and of the LwF family: cross-entropy alone (nothing to distil yet, no exemplars
# while it trains); the prediction BCE acts from task 0 unless its weight is 0 (lwf-br2's is 1).
# The family's distillation weights act on old heads only (none in task 0); its prediction terms' weights
# act from task 0 and are neutral at 0 (cil.approaches.family.TERMS).
_DISTILLATION_WEIGHTS = tuple(f"loss.{t.weight}" for t in TERMS if t.distills and t.weight)
_PREDICTION_WEIGHTS_OFF = {f"loss.{t.weight}": 0.0 for t in TERMS if not t.distills and t.weight}
_FINETUNING_FIRST = FirstTask("finetuning", ("loss.lamb", "loss.T", *_DISTILLATION_WEIGHTS,
                                             "loss.bce_pred_with_exemplars"), _PREDICTION_WEIGHTS_OFF)
# LwM's distillations need an old model: none in task 0.
_LWM_FIRST = FirstTask(None, ("lwm.beta", "lwm.gamma", "loss.T", *_DISTILLATION_WEIGHTS))
# LUCIR's less-forget and margin-ranking terms act on old classes: none in task 0.
_LUCIR_FIRST = FirstTask(None, ("lucir.lamb", "lucir.lamb_mr", "lucir.dist", "lucir.K", "lucir.adapt_lamb",
                                "loss.T", *_DISTILLATION_WEIGHTS))
_LUCIR_KNOB = Stability("lucir.lamb", 10.0)
# FACIL's gridsearch_config.py: the other approaches' knobs and their first values.
_LWM_KNOB = Stability("lwm.beta", 2.0)
_EEIL_KNOB = Stability("eeil.lamb", 10.0)
_EWC_KNOB = Stability("ewc.lamb", 10000.0)
_MAS_KNOB = Stability("mas.lamb", 400.0)
_PATH_INTEGRAL_KNOB = Stability("path_integral.lamb", 10.0)
_R_WALK_KNOB = Stability("r_walk.lamb", 20.0)
_ICARL_KNOB = Stability("icarl.lamb", 4.0)

# The loss family's approaches: each name and its five paper variants (cil.approaches.family.VARIANTS).
# FACIL's LwF: lamb 1, T 2. LwM's distillation weight is lwm.beta; its KD runs at T = 2 as FACIL's
# (softmax^(1/2) renormalised). LUCIR's distillation weight is lucir.lamb (adaptive per task), its
# task-wise KD at T = 1.
FAMILIES = {
    "lwf": Family("lwf", "cil.approaches.lwf:LwF", {"lamb": 1.0, "T": 2.0}, "kd", "joint KD", "FACIL's LwF"),
    "lwm": Family("lwm", "cil.approaches.lwm:LwM", {"T": 2.0}, "kd", "joint KD",
                  "LwF's KD + Grad-CAM attention distillation", section="lwm", extra=" + attention"),
    "lucir": Family("lucir", "cil.approaches.lucir:LUCIR", {"T": 1.0}, "lucir", "less-forget", "FACIL's LUCIR",
                    section="lucir"),
}
_KNOBS = {"lwf": _LWF_KNOB, "lwm": _LWM_KNOB, "lucir": _LUCIR_KNOB}
_FIRST_TASKS = {"lwf": _FINETUNING_FIRST, "lwm": _LWM_FIRST, "lucir": _LUCIR_FIRST}


def _family(name: str) -> list[ApproachSpec]:
    f = FAMILIES[name]
    return [ApproachSpec(n, f.impl, loss, f.section, doc=doc, stability=_KNOBS[name], first_task=_FIRST_TASKS[name])
            for n, loss, doc in f.presets()]


_SPECS = [
    ApproachSpec("finetuning", "cil.approaches.finetuning:Finetuning", _NO_DISTILLATION,
                 doc="lower bound: the new task with cross-entropy", first_task=_FINETUNING_FIRST),
    ApproachSpec("freezing", "cil.approaches.freezing:Freezing", _NO_DISTILLATION,
                 doc="backbone frozen after task 0, new heads only"),
    ApproachSpec("joint", "cil.approaches.joint:Joint", _NO_DISTILLATION,
                 doc="upper bound: all data seen so far", upper_bound=True),
    *_family("lwf"),
    *_family("lwm"),
    ApproachSpec("eeil", "cil.approaches.eeil:EEIL", {}, "eeil",
                 doc="distillation, then class-balanced fine-tuning", stability=_EEIL_KNOB,
                 first_task=FirstTask(None, ("eeil.lamb", "eeil.T", "eeil.lr_finetuning_factor",
                                             "eeil.nepochs_finetuning"))),
    ApproachSpec("dmc", "cil.approaches.dmc:DMC", {}, "dmc",
                 doc="a new-task model, then double distillation on auxiliary data"),
    *_family("lucir"),
    ApproachSpec("ewc", "cil.approaches.ewc:EWC", {}, "ewc",
                 doc="Fisher-weighted quadratic penalty on the backbone", stability=_EWC_KNOB,
                 first_task=FirstTask(None, ("ewc.lamb",))),
    ApproachSpec("mas", "cil.approaches.mas:MAS", {}, "mas",
                 doc="quadratic penalty weighted by output-sensitivity importances", stability=_MAS_KNOB,
                 first_task=FirstTask(None, ("mas.lamb",))),
    ApproachSpec("path_integral", "cil.approaches.path_integral:PathIntegral", {}, "path_integral",
                 doc="quadratic penalty weighted by each parameter's share of the loss decrease",
                 stability=_PATH_INTEGRAL_KNOB, first_task=FirstTask(None, ("path_integral.lamb",))),
    ApproachSpec("r_walk", "cil.approaches.r_walk:RWalk", {}, "r_walk",
                 doc="quadratic penalty weighted by Fisher plus path scores", stability=_R_WALK_KNOB,
                 first_task=FirstTask(None, ("r_walk.lamb",))),
    ApproachSpec("icarl", "cil.approaches.icarl:ICaRL", {}, "icarl", selection="herding",
                 doc="FACIL's iCaRL: BCE distillation, herding, nearest-mean-of-exemplars", stability=_ICARL_KNOB,
                 first_task=FirstTask(None, ("icarl.lamb",))),
    ApproachSpec("bic", "cil.approaches.bic:BiC", {}, "bic", needs_exemplars=True,
                 doc="FACIL's BiC: distillation, then a bias layer per task trained on held-out exemplars",
                 first_task=FirstTask(None, ("bic.lamb", "bic.T", "bic.num_bias_epochs"))),
    ApproachSpec("il2m", "cil.approaches.il2m:IL2M", {}, needs_exemplars=True,
                 doc="FACIL's IL2M: finetuning with exemplars, class-statistics rectification at evaluation"),
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
