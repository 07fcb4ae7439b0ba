"""The experiment config: one dataclass tree, validated on construction, with dotted names.

The same dotted names (``loss.lamb``, ``train.lr``, ``data.num_tasks`` ...) are used by the CLI, sweep
YAML, Ray Tune trial configs and Parquet columns, so every config error is caught here, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cil.approaches.registry import APPROACHES, LOSS_PRESET_KEYS, LOSS_WEIGHT_NAMES, SECTIONS, SPECS, section_users


class ConfigError(ValueError):
    """A bad experiment config: the message names every bad key, its value and what is valid."""


# Classes per dataset where they are known before loading; `folder` is checked when it is loaded.
KNOWN_NUM_CLASSES = {"digits": 10, "cifar100": 100, "mnist": 10, "svhn": 10, "imagenet100": 100,
                     "synthetic": 10}
DATASETS = (*KNOWN_NUM_CLASSES, "folder")
NETWORKS = ("convnet", "resnet32", "resnet18")
# model.network when left unset: FACIL's choice for its data sets (its default resnet32; resnet18 for the
# ImageNet subset), a small convnet for the bundled ones. Resolved on construction, so results record it.
DEFAULT_NETWORKS = {"digits": "convnet", "synthetic": "convnet", "cifar100": "resnet32", "mnist": "resnet32",
                    "svhn": "resnet32", "imagenet100": "resnet18", "folder": "resnet32"}
SELECTIONS = ("random", "herding", "entropy", "distance")
# data.augment: FACIL's training transform per dataset, translation-only crops, or nothing
# (cil.data.dataset.training_augment says what each means for each dataset).
AUGMENT_MODES = ("facil", "crop", "none")
SGD_IMPLS = ("torch", "for-loop", "foreach", "fused")
CPU_ISA_MODES = ("portable", "native")  # run.cpu_isa: what each sets is cil.numerics.CPU_MODES
# Keys that say where a run happens, not what it computes: left out of the fingerprint (the device's
# kind counts: a CUDA run gets other numbers than a CPU run, see ExperimentConfig.device_kind).
MACHINE_KEYS = ("data.data_root", "data.on_device", "data.device_memory_budget", "data.cache_dir", "run.device")


def default_data_root() -> str:
    """Absolute data root: ``$CIL_DATA_ROOT`` or ``~/.cache/cil/data`` (never relative to the code)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("CIL_DATA_ROOT", "~/.cache/cil/data")))


@dataclass
class DataConfig:
    """Which data, and how it is cut into tasks (FACIL's scenario)."""

    dataset: str = "digits"
    """The data set. `digits` (scikit-learn's 1,797 real 8x8 digits; every 5th image of each class is the test
    split) and `synthetic` (by default 10 classes of seeded 3x32x32 images around class-specific patterns;
    parameters after `:`, e.g. `synthetic:classes=50,channels=1,size=8,train=40`, also `test`, `seed`) need no
    files and no network; `cifar100`, `mnist` and `svhn` are downloaded by torchvision into `data_root` on first
    use; `imagenet100` and `folder` are read from `data_root` (layouts: the data sets section of the docs)."""
    data_root: str = field(default_factory=default_data_root)
    """Where the data sets live, made absolute: downloads land here and folders are read from here."""
    num_tasks: int = 5
    """Tasks the classes are split into (FACIL's scenario); at most the data set's number of classes."""
    nc_first_task: int | None = None
    """Classes of the first task; the rest are split evenly over the other tasks (null: all tasks split evenly)."""
    val_fraction: float = 0.1
    """Share of each class's training images held out for validation, in [0, 1): the validation loss drives the lr
    schedule and picks the best model."""
    fixed_class_order: bool = False
    """True: iCaRL's fixed class order for cifar100 and imagenet100; false: the seed shuffles the classes exactly as
    FACIL does (`np.random.seed(seed)`)."""
    image_size: int | None = None
    """Side of the stored images: file-backed images are decoded once per node into the decoded-image cache
    (data.cache_dir) with the shorter side resized to it, then centre-cropped; in-memory sets are resized once
    (bilinear). Null: the data set's own (224 for imagenet100, 32 for folder, the native size otherwise)."""
    on_device: bool | None = None
    """Where a split's uint8 images live: true on the training device, false on the host (each batch
    copied over), null chosen per split by its size against data.device_memory_budget (cil.data.placement)."""
    augment: str = "facil"
    """Training augmentation: `facil` is FACIL's transform for the data sets FACIL configures, `crop` replaces every
    random-resized crop by a translation-only crop of the padded image (weaker), `none` turns it off. Test images
    are never augmented; the docs compare each data set's transform with FACIL's."""
    device_memory_budget: float | None = None
    """GiB of device memory that resident splits may take when data.on_device is null; a split that does
    not fit stays on the host. null: half of what the trial may still allocate on CUDA (the card's free
    memory, capped by a fractional-GPU trial's share); no limit on the CPU."""
    cache_dir: str | None = None
    """Folder of the decoded-image cache, shared by the trials of a node (cil.data.cache); null:
    $CIL_CACHE_DIR or ~/.cache/cil/decoded on the node where the trial runs."""


@dataclass
class ModelConfig:
    """``network`` None: the data set's default (:data:`DEFAULT_NETWORKS`)."""

    network: str | None = None
    """The backbone, one linear head per task on top (null: the data set's FACIL default, resolved on construction
    so results record it)."""


@dataclass
class TrainConfig:
    """FACIL's schedule: SGD, lr divided by lr_factor after lr_patience epochs without a better
    validation loss, stop below lr_min, best-on-validation model restored.

    FACIL's switches: ``fix_bn`` keeps the backbone's BatchNorm layers in eval mode while training every
    task after the first (statistics frozen at task 0's); ``eval_on_train`` also measures the loss and the
    task-aware accuracy on the (unaugmented) training set after every epoch; ``multi_softmax`` makes the
    task-agnostic prediction the argmax of each head's log-softmax (one softmax per task) instead of the raw
    scores (task-aware accuracy and the training loss do not change, as in FACIL).
    """

    nepochs: int = 200
    """Training epochs per task (fewer when the lr falls below `lr_min`)."""
    lr: float = 0.1
    """Starting learning rate of every task (SGD)."""
    lr_min: float = 1e-4
    """A task's training stops once the lr falls below this."""
    lr_factor: float = 3.0
    """The lr is divided by this (> 1) after `lr_patience` epochs without a better validation loss, and the best
    model so far is restored."""
    lr_patience: int = 5
    """Epochs without a better validation loss before the lr is divided by `lr_factor`."""
    momentum: float = 0.0
    """SGD momentum, in [0, 1)."""
    weight_decay: float = 0.0
    """SGD weight decay."""
    batch_size: int = 64
    """Training and evaluation batch size."""
    clipping: float = 10000.0
    """Gradient-norm clipping threshold (FACIL's 10000; approaches that do not clip, such as LUCIR, ignore it)."""
    warmup_nepochs: int = 0
    """FACIL's warm-up before every task after the first: this many epochs training the new head alone on the new
    task's samples, everything else in eval mode (0: none)."""
    warmup_lr_factor: float = 1.0
    """The warm-up's lr is `lr * warmup_lr_factor`."""
    all_outputs: bool = False
    """Cross-entropy over all heads even without exemplars (FACIL's `--all-outputs`); with exemplars stored it is
    over all heads anyway."""
    amp: bool = False
    """bf16 autocast of the backbone on CUDA, an opt-in speed setting (FACIL and the paper ran fp32): heads, every
    loss term, Grad-CAM and the evaluation scores stay fp32; refused on a GPU without native bf16. Its effect on
    accuracy is unmeasured."""
    tf32: bool = False
    """Allow TF32 in CUDA matmuls and cuDNN convolutions (Ampere and later); false: true fp32 on every card,
    as FACIL and the paper ran (torch's own default would be TF32 convolutions on Ampere+ only)."""
    cudnn_benchmark: bool = False
    """Let cuDNN pick convolution kernels by timing them (faster, not reproducible): needs
    run.deterministic: false."""
    compile: bool = False
    """Run the model through torch.compile (a speed lever: same numbers on the CPU; compile time is paid
    once per task's head layout)."""
    sgd_impl: str = "torch"
    """SGD's implementation: torch (torch's choice: for-loop on the CPU, foreach on CUDA), for-loop,
    foreach or fused (all bit-equal on the CPU)."""
    eval_batch_size: int = 0
    """Batch size of evaluation, validation and exemplar passes (no gradients); 0: train.batch_size."""
    fix_bn: bool = False
    """FACIL's `--fix-bn`: keep the backbone's BatchNorm layers in eval mode while training every task after the
    first (statistics frozen at task 0's)."""
    eval_on_train: bool = False
    """FACIL's `--eval-on-train`: also measure the loss and the task-aware accuracy on the (unaugmented) training
    set after every epoch, in the epoch records."""
    multi_softmax: bool = False
    """FACIL's `--multi-softmax`: the task-agnostic prediction is the argmax of each head's log-softmax (one softmax
    per task) instead of the raw scores; task-aware accuracy and the training loss do not change, as in FACIL."""
    gridsearch_tasks: int = 0
    """Run FACIL's grid search (the `gridsearch.*` keys) inside each of the first N tasks (0: off)."""


@dataclass
class LossConfig:
    """The paper's loss family. ``None`` means "the approach's preset value" (cil.approaches.registry);
    a key the approach does not use stays ``None``.

    ``bce_pred_with_exemplars``: the LwF family keeps its prediction BCE when exemplars are stored
    (old-class samples are negatives of the current head); ``false`` drops it then, as the paper's
    ``lwf-br2`` does.
    """

    lamb: float | None = None
    """Distillation weight `lamb` of the loss family (FACIL's `--lamb`; null: the approach's preset)."""
    T: float | None = None
    """Distillation temperature (null: the approach's preset)."""
    w_joint: float | None = None
    """Weight of `kd_joint`, KD with one softmax over all old classes (null: the preset)."""
    w_task: float | None = None
    """Weight of `kd_task`, KD with one softmax per old task (null: the preset)."""
    w_bce_kd: float | None = None
    """Weight of `bce_kd`, the shift-sensitive BCE distillation of each old head (null: the preset)."""
    w_bce_pred: float | None = None
    """Weight of `bce_pred`, the BCE of the current head's prediction (null: the preset)."""
    bce_pred_with_exemplars: bool = True
    """Keep the prediction BCE when exemplars are stored (old-class samples are negatives of the current head);
    false drops it then, as the paper's `lwf-br2` does."""


@dataclass
class MemoryConfig:
    """FACIL's exemplar budget; ``selection`` left unset is the approach's own (``herding`` for iCaRL,
    else ``random`` as in FACIL)."""

    num_exemplars: int = 0
    """Total exemplar budget, shared by all classes seen (0: none); exclusive with `num_exemplars_per_class`."""
    num_exemplars_per_class: int = 0
    """Exemplars kept per class seen (0: none); exclusive with `num_exemplars`."""
    selection: str | None = None
    """How exemplars are chosen: `random`, `herding`, `entropy` or `distance` (null: the approach's own choice, in
    the approaches table)."""


@dataclass
class GridSearchConfig:
    """FACIL's "realistic" hyper-parameter search (cil.gridsearch), run inside each of the first
    ``train.gridsearch_tasks`` tasks. Names and defaults follow FACIL's gridsearch.py and
    gridsearch_config.py: the finetuning lr with the best validation TAw accuracy among ``lr_first``
    (task 0) or the ``lr_searches`` largest values of ``lr`` below task 0's choice (later tasks); then
    the approach's stability knob (declared in cil.approaches.registry), from ``knob_start`` (null:
    the approach's FACIL value) times ``hparam_decay`` until its validation accuracy is within
    ``acc_drop_thr`` of finetuning's, at most ``max_num_searches`` times. ``nepochs`` is the epochs of
    every candidate training (null: train.nepochs, as FACIL); ``search_knob: false`` searches the lr only.
    """

    lr_first: list[float] = field(default_factory=lambda: [5e-1, 1e-1, 5e-2])
    """Task 0's learning-rate candidates."""
    lr: list[float] = field(default_factory=lambda: [1e-1, 5e-2, 1e-2, 5e-3, 1e-3])
    """Later tasks' learning-rate candidates: the `lr_searches` largest values below task 0's choice are tried."""
    lr_searches: int = 3
    """How many of `lr` later tasks try."""
    knob_start: float | None = None
    """First value of the approach's stability knob (null: the approach's FACIL value); an error for approaches
    without a knob."""
    search_knob: bool = True
    """False: search the lr only."""
    acc_drop_thr: float = 0.2
    """Validation accuracy a knob value may lose, as a fraction of finetuning's, in [0, 1]."""
    hparam_decay: float = 0.5
    """Knob multiplier after each value that loses more, in (0, 1)."""
    max_num_searches: int = 7
    """Knob values tried at most."""
    nepochs: int | None = None
    """Epochs of each candidate training (null: `train.nepochs`, as FACIL)."""
    facil_warmup_lr: bool = False
    """FACIL's warm-up lr: `train.lr * train.warmup_lr_factor` with the configured `train.lr`, whatever lr the search
    chose (FACIL never updates its warm-up lr); false: the chosen lr times the factor."""


@dataclass
class RunConfig:
    """``stop_at_task``: FACIL's early stop, train tasks 0..stop_at_task-1 only (0: every task)."""

    seed: int = 0
    """Seeds everything a run draws: class order, validation split, initialisation, batches and augmentation; same
    config and seed, same numbers."""
    device: str = "auto"
    """Where to train: `auto` (CUDA when there is one, else the CPU), `cpu`, `mps`, `cuda` or `cuda:N`. Not set in a
    sweep spec: a trial uses the GPU Ray assigned it, else the CPU."""
    stop_at_task: int = 0
    """FACIL's `--stop-at-task`: train tasks 0..K-1 only (0: every task); rows keep the scenario's `num_tasks`, and
    `cil.run` continues from its last state with a larger value."""
    deterministic: bool = True
    """Reproducible CUDA numerics, as FACIL runs unless --no-cudnn-deterministic: deterministic cuDNN
    without autotuning, torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG (docs/gpu.md)."""
    threads: int | str = "auto"
    """Intra-op CPU threads the run computes with (torch.set_num_threads); the count changes the bits of a CPU
    result. `auto`: the trial's CPU share (resources.cpu) in a sweep, every core in `python -m cil`. Rows
    record the count in effect (`threads_in_effect`)."""
    cpu_isa: str = "portable"
    """CPU instruction sets the kernels dispatch to: `portable` (torch's kernels capped at AVX2, oneDNN off,
    MKL's reproducible code path: the same bits on any x86-64 CPU with AVX2) or `native` (the libraries'
    fastest path for this CPU; bits may differ between CPU models). Set before the first kernel
    (docs/reproducibility.md)."""


@dataclass
class _CoreConfig:
    """The sections every approach shares; :class:`ExperimentConfig` adds one per approach section."""

    approach: str = "lwf"
    """The approach, one of the names in the approaches table; a loss-family preset name (`lwf-s`) also fills the
    `loss.*` weights it leaves unset."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    run: RunConfig = field(default_factory=RunConfig)
    gridsearch: GridSearchConfig = field(default_factory=GridSearchConfig)

    def __post_init__(self) -> None:
        self._check_types()
        self._resolve_presets()
        if self.model.network is None:
            self.model.network = DEFAULT_NETWORKS.get(_dataset_base(self.data.dataset))
        self.data.data_root = os.path.abspath(os.path.expanduser(self.data.data_root))
        if self.data.cache_dir is not None:
            self.data.cache_dir = os.path.abspath(os.path.expanduser(self.data.cache_dir))
        problems = _validate(self)
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))

    def _check_types(self) -> None:
        """Every leaf's type (also for direct construction), so later checks compare like with like."""
        problems = []
        for key, tp in _LEAVES.items():
            head, _, leaf = key.partition(".")
            owner = getattr(self, head) if leaf else self
            if leaf and not dataclasses.is_dataclass(owner):
                problems.append(f"{head} = {owner!r} has the wrong type: expected {_HINTS[head].__name__}")
                continue
            name = leaf or head
            try:
                setattr(owner, name, _convert(key, getattr(owner, name), tp))
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(dict.fromkeys(problems)))

    def _resolve_presets(self) -> None:
        """Fill what the approach leaves to its preset (loss weights, its section's defaults), so results
        record real values; a key of another approach's section, or a loss key the approach does not
        use, is an error (FACIL silently ignored such keys)."""
        spec = SPECS.get(self.approach)
        if spec is None:
            return  # reported by _validate
        if self.memory.selection is None:
            self.memory.selection = spec.selection
        problems = []
        for name in LOSS_PRESET_KEYS:
            value = getattr(self.loss, name)
            if name not in spec.loss:
                if value is not None:
                    problems.append(f"loss.{name} = {value!r} is set but approach {self.approach!r} "
                                    f"does not use it{_section_hint(spec.section, name)}")
            elif value is None:
                setattr(self.loss, name, float(spec.loss[name]))
        if spec.stability is None and self.gridsearch.knob_start is not None:
            with_knob = ", ".join(s.name for s in SPECS.values() if s.stability is not None)
            problems.append(f"gridsearch.knob_start = {self.gridsearch.knob_start!r} is set but approach "
                            f"{self.approach!r} has no stability knob (its grid search picks the lr only); "
                            f"approaches with one: {with_knob}")
        elif spec.stability is not None and self.gridsearch.knob_start is None:
            self.gridsearch.knob_start = float(spec.stability.start)
        for section in SECTIONS:
            values = getattr(self, section)
            if section == spec.section:
                for f in dataclasses.fields(values):
                    if getattr(values, f.name) is None:
                        setattr(values, f.name, _SECTION_DEFAULTS[section][f.name])
                continue
            for f in dataclasses.fields(values):
                if getattr(values, f.name) is not None:
                    owners = ", ".join(section_users(section))
                    problems.append(f"{section}.{f.name} is set but approach is {self.approach!r} "
                                    f"({section}.* belongs to {owners})")
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))

    def section(self, name: str) -> Any:
        """The resolved values of an approach section, as the section's declared dataclass
        (``cfg.section("lucir").lamb_mr``); only the running approach's section is filled."""
        values = dataclasses.asdict(getattr(self, name))
        if any(v is None for v in values.values()):
            raise ValueError(f"section {name!r} is not filled: approach {self.approach!r} does not use it")
        return SECTIONS[name](**values)

    # ---- dict round trip -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON/YAML-safe)."""
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """Dotted name -> value for every leaf (the Parquet config columns)."""
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from a nested dict, a dotted-key dict, or a mix; unknown keys are errors."""
        flat = flatten(values)
        problems = []
        kwargs: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if key not in _LEAVES:
                problems.append(_unknown_key_message(key))
                continue
            head, _, leaf = key.partition(".")
            try:
                converted = _convert(key, value, _LEAVES[key])
            except ConfigError as err:
                problems.append(str(err))
                continue
            if leaf:
                nested.setdefault(head, {})[leaf] = converted
            else:
                kwargs[head] = converted
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))
        for section, leaves in nested.items():
            kwargs[section] = _HINTS[section](**leaves)
        return cls(**kwargs)

    def replace(self, **dotted: Any) -> ExperimentConfig:
        """A copy with some dotted keys changed (``cfg.replace(**{"loss.lamb": 2})``).

        Every other leaf keeps its value, loss weights and section values filled from a preset
        included: to switch approach, build a new config with ``from_dict`` instead.
        """
        return ExperimentConfig.from_dict(self.to_flat() | dotted)

    def fingerprint(self) -> str:
        """Short stable hash of the config; equal configs give equal trial ids."""
        flat = {k: v for k, v in self.to_flat().items() if k not in MACHINE_KEYS}
        kind = self.device_kind()
        if kind != "cpu":  # CPU runs keep the ids they had before the kind counted
            flat["device_kind"] = kind
        blob = json.dumps(flat, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:10]

    def device_kind(self) -> str:
        """``cpu``, ``cuda`` or ``mps``: the kind of device this config runs on (``auto`` resolved), not
        its index (the same card type at another index computes the same numbers)."""
        if self.run.device != "auto":
            return self.run.device.partition(":")[0]
        return self.resolved_device().partition(":")[0]

    def resolved_device(self) -> str:
        """The device to run on; ``auto`` is CUDA when there is one. A CUDA device that this machine
        does not have is a ConfigError (checked here, at run time: a sweep may be validated elsewhere)."""
        import torch

        if self.run.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.run.device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(self.run.device.partition(":")[2] or 0)
            if index >= count:
                raise ConfigError(f"run.device = {self.run.device!r} is not available: this machine has "
                                  f"{count} CUDA device(s); use auto, cpu" + (", cuda:0.." if count else ""))
        return self.run.device


def _section_hint(section: str | None, name: str) -> str:
    """Where an approach with its own section keeps what ``loss.<name>`` would have set."""
    if section is None:
        return ""
    keys = _SECTION_DEFAULTS[section]
    if name in keys:
        return f" (use {section}.{name})"
    return f" (its own keys: {', '.join(f'{section}.{k}' for k in keys)})"


def _optional_twin(cls: type) -> type:
    """The config tree's view of an approach section: the same leaves, each ``None`` until resolved
    (so a key of another approach's section can be told apart from a default)."""
    hints = typing.get_type_hints(cls)
    fields = [(f.name, hints[f.name] | None, field(default=None, metadata=f.metadata))
              for f in dataclasses.fields(cls)]
    twin = dataclasses.make_dataclass(cls.__name__ + "Values", fields)
    twin.__module__ = __name__
    twin.__doc__ = cls.__doc__
    return twin


_SECTION_TYPES = {name: _optional_twin(cls) for name, cls in SECTIONS.items()}
_SECTION_DEFAULTS = {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}
for _twin in _SECTION_TYPES.values():
    globals()[_twin.__name__] = _twin  # picklable by name

ExperimentConfig = dataclasses.make_dataclass(
    "ExperimentConfig", [(name, tp, field(default_factory=tp)) for name, tp in _SECTION_TYPES.items()],
    bases=(_CoreConfig,))
ExperimentConfig.__module__ = __name__
ExperimentConfig.__doc__ = """The whole experiment: the shared sections plus one section per approach that has
hyper-parameters of its own (declared in cil.approaches.registry). Construct with keywords or
:meth:`from_dict`; invalid values raise :class:`ConfigError` before any work starts."""


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys. Keys that are already dotted pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in _SECTIONS:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def valid_keys() -> list[str]:
    """Every dotted config key, in declaration order."""
    return list(_LEAVES)


def _collect_leaves() -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    hints = typing.get_type_hints(ExperimentConfig)
    leaves: dict[str, Any] = {}
    sections: set[str] = set()
    for f in dataclasses.fields(ExperimentConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sections.add(f.name)
            for sub, sub_tp in typing.get_type_hints(tp).items():
                leaves[f"{f.name}.{sub}"] = sub_tp
        else:
            leaves[f.name] = tp
    return leaves, sections, hints


_LEAVES, _SECTIONS, _HINTS = _collect_leaves()


def _unknown_key_message(key: str) -> str:
    same_leaf = [k for k in _LEAVES if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    if "." in key or not same_leaf:
        close = difflib.get_close_matches(key, list(_LEAVES), n=3, cutoff=0.5) or same_leaf
    else:  # a leaf without its section ("lamb"): every section that has it, in declaration order
        close = same_leaf
    if close:
        return f"unknown config key {key!r}; did you mean {', '.join(repr(c) for c in close)}?"
    return f"unknown config key {key!r} (valid keys: {', '.join(_LEAVES)})"


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check one leaf's type; ints are accepted where floats are expected, bools never as numbers."""
    args = typing.get_args(tp)
    optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # int | str: the first type that takes it
        for arm in typing.get_args(base):
            try:
                return _convert(key, value, arm)
            except ConfigError:
                pass
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected {' or '.join(map(_type_name, args))}")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} = None is not valid: expected {_type_name(base)}")
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        if isinstance(value, list | tuple):
            try:
                return [_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
            except ConfigError:
                pass
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected a list of {item.__name__}")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} = {value!r} has the wrong type: expected {base.__name__}"
                      + (" or null" if optional else ""))


def _dataset_base(name: str) -> str:
    """The data set's name without its parameters (``synthetic:classes=50`` -> ``synthetic``)."""
    return name.partition(":")[0]


def _check_dataset(name: str, choice: Any, problems: list[str]) -> int | None:
    """Check ``data.dataset`` (``synthetic`` may carry parameters: ``synthetic:classes=50,train=40``) and
    return its number of classes where it is known before loading."""
    base, sep, params = name.partition(":")
    if not sep:
        choice("data.dataset", name, DATASETS)
        return KNOWN_NUM_CLASSES.get(name)
    if base != "synthetic":
        problems.append(f"data.dataset = {name!r} is not valid: only synthetic takes parameters after ':' "
                        "(synthetic:classes=..,train=..,test=..,channels=..,size=..,seed=..)")
        return None
    from cil.data.builtin import parse_synthetic  # imports torch: only for a parameterised synthetic set
    from cil.data.errors import DataError

    try:
        return parse_synthetic(params)["classes"]
    except DataError as err:
        problems.append(f"data.dataset = {name!r} is not valid: {err}")
        return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _validate(cfg: ExperimentConfig) -> list[str]:
    """All problems at once, each naming the key, the value and what is valid."""
    p: list[str] = []
    d, t, lo, m = cfg.data, cfg.train, cfg.loss, cfg.memory

    def choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            p.append(f"{key} = {value!r} is not valid{hint}: choose one of {', '.join(valid)}")

    def positive(key: str, value: float | int | None, allow_zero: bool = False) -> None:
        if value is None:
            return
        bad = value < 0 if allow_zero else value <= 0
        if bad or (isinstance(value, float) and not math.isfinite(value)):
            p.append(f"{key} = {value!r} is not valid: must be {'>= 0' if allow_zero else '> 0'}")

    choice("approach", cfg.approach, APPROACHES)
    n_classes = _check_dataset(d.dataset, choice, p)
    # an unknown dataset has its own error; its network default is unknown too
    if cfg.model.network is not None or _dataset_base(d.dataset) in DEFAULT_NETWORKS:
        choice("model.network", cfg.model.network, NETWORKS)
    choice("data.augment", d.augment, AUGMENT_MODES)
    if m.selection is not None:  # None only when the approach is unknown (reported above)
        choice("memory.selection", m.selection, SELECTIONS)
    positive("data.num_tasks", d.num_tasks)
    positive("data.nc_first_task", d.nc_first_task)
    positive("data.image_size", d.image_size)
    positive("data.device_memory_budget", d.device_memory_budget, allow_zero=True)
    if not 0.0 <= d.val_fraction < 1.0:
        p.append(f"data.val_fraction = {d.val_fraction!r} is not valid: must be in [0, 1)")
    if n_classes is not None and d.num_tasks > 0:
        if d.num_tasks > n_classes:
            p.append(f"data.num_tasks = {d.num_tasks} is not valid: {d.dataset} has {n_classes} classes, "
                     f"so at most {n_classes} tasks")
        elif d.nc_first_task is not None and d.nc_first_task > 0:
            left = n_classes - d.nc_first_task
            if left < d.num_tasks - 1 or (d.num_tasks == 1 and left != 0):
                p.append(f"data.nc_first_task = {d.nc_first_task} is not valid: it leaves {left} of "
                         f"{n_classes} classes for the other {d.num_tasks - 1} tasks (each needs at least "
                         f"one; with num_tasks = 1 it must be {n_classes})")
    for name in ("nepochs", "batch_size", "lr_patience"):
        positive(f"train.{name}", getattr(t, name))
    for name in ("lr", "lr_factor", "clipping", "warmup_lr_factor"):
        positive(f"train.{name}", getattr(t, name))
    for name in ("lr_min", "momentum", "weight_decay", "warmup_nepochs"):
        positive(f"train.{name}", getattr(t, name), allow_zero=True)
    choice("train.sgd_impl", t.sgd_impl, SGD_IMPLS)
    positive("train.eval_batch_size", t.eval_batch_size, allow_zero=True)
    if t.cudnn_benchmark and cfg.run.deterministic:
        p.append("train.cudnn_benchmark = true is not valid with run.deterministic = true: autotuned kernels "
                 "are not reproducible; set run.deterministic: false (FACIL's --no-cudnn-deterministic) too")
    if t.momentum >= 1:
        p.append(f"train.momentum = {t.momentum!r} is not valid: must be in [0, 1)")
    if t.lr_factor <= 1 and t.lr_factor > 0:
        p.append(f"train.lr_factor = {t.lr_factor!r} is not valid: must be > 1 (the lr is divided by it)")
    for name in ("lamb", *LOSS_WEIGHT_NAMES):
        positive(f"loss.{name}", getattr(lo, name), allow_zero=True)
    positive("loss.T", lo.T)
    for section in SECTIONS:
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            check, value = f.metadata.get("check"), getattr(values, f.name)
            key = f"{section}.{f.name}"
            if value is None or check is None:
                continue
            if callable(check):
                problem = check(value)
                if problem:
                    p.append(f"{key} = {value!r} is not valid: {problem}")
            elif isinstance(check, tuple):
                choice(key, value, check)
            elif check == ">=1" and value < 1:
                p.append(f"{key} = {value!r} is not valid: must be >= 1")
            elif check == "[0,1]" and not 0 <= value <= 1:
                p.append(f"{key} = {value!r} is not valid: must be in [0, 1]")
            elif check == "-1|>=0" and value != -1 and not value >= 0:
                p.append(f"{key} = {value!r} is not valid: must be -1 or >= 0")
            elif check in (">=0", ">0"):
                positive(key, value, allow_zero=check == ">=0")
    _validate_gridsearch(cfg, p, positive)
    positive("memory.num_exemplars", m.num_exemplars, allow_zero=True)
    positive("memory.num_exemplars_per_class", m.num_exemplars_per_class, allow_zero=True)
    if m.num_exemplars > 0 and m.num_exemplars_per_class > 0:
        p.append(f"memory.num_exemplars = {m.num_exemplars} and memory.num_exemplars_per_class = "
                 f"{m.num_exemplars_per_class} cannot both be set: choose a total or a per-class budget")
    spec = SPECS.get(cfg.approach)
    if spec is not None and spec.needs_exemplars and m.num_exemplars <= 0 and m.num_exemplars_per_class <= 0:
        p.append(f"approach {cfg.approach!r} needs exemplars: set memory.num_exemplars or "
                 "memory.num_exemplars_per_class (FACIL's --num-exemplars / --num-exemplars-per-class) > 0")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.run.device):
        p.append(f"run.device = {cfg.run.device!r} is not valid: use auto, cpu, mps, cuda or cuda:N")
    if not 0 <= cfg.run.stop_at_task <= max(d.num_tasks, 0):
        p.append(f"run.stop_at_task = {cfg.run.stop_at_task!r} is not valid: must be in [0, data.num_tasks = "
                 f"{d.num_tasks}] (0: every task; k: stop after the first k tasks)")
    choice("run.cpu_isa", cfg.run.cpu_isa, CPU_ISA_MODES)
    if cfg.run.threads != "auto" and not (isinstance(cfg.run.threads, int) and cfg.run.threads >= 1):
        p.append(f"run.threads = {cfg.run.threads!r} is not valid: use auto or a count >= 1")
    if not 0 <= cfg.run.seed < 2**32:
        p.append(f"run.seed = {cfg.run.seed!r} is not valid: must be in [0, 2**32)")
    return p


def _validate_gridsearch(cfg: ExperimentConfig, p: list[str], positive: Any) -> None:
    """train.gridsearch_tasks and the gridsearch.* section (checked whether or not the search is on,
    so a sweep that switches it on per trial fails before any trial starts)."""
    g = cfg.gridsearch
    if cfg.train.gridsearch_tasks < 0:
        p.append(f"train.gridsearch_tasks = {cfg.train.gridsearch_tasks} is not valid: must be >= 0 (0: no "
                 f"search; N: the first N tasks; FACIL's default -1 also means no search)")
    for name in ("lr_first", "lr"):
        values = getattr(g, name)
        if not values:
            p.append(f"gridsearch.{name} = [] is not valid: give at least one learning rate")
        elif any(not (math.isfinite(v) and v > 0) for v in values):
            p.append(f"gridsearch.{name} = {values!r} is not valid: every learning rate must be > 0")
    if g.lr_first and g.lr and min(g.lr) >= min(g.lr_first):
        p.append(f"gridsearch.lr = {g.lr!r} is not valid: tasks after the first try the largest values "
                 f"below task 0's choice, so it needs one below min(gridsearch.lr_first) = {min(g.lr_first)}")
    for name in ("lr_searches", "max_num_searches"):
        positive(f"gridsearch.{name}", getattr(g, name))
    positive("gridsearch.nepochs", g.nepochs)
    positive("gridsearch.knob_start", g.knob_start)
    if not 0.0 <= g.acc_drop_thr <= 1.0:
        p.append(f"gridsearch.acc_drop_thr = {g.acc_drop_thr!r} is not valid: must be in [0, 1] (the "
                 f"fraction of finetuning's validation accuracy a knob value may lose)")
    if not 0.0 < g.hparam_decay < 1.0:
        p.append(f"gridsearch.hparam_decay = {g.hparam_decay!r} is not valid: must be in (0, 1) (the knob "
                 f"is multiplied by it after each value that loses too much accuracy)")
    if cfg.train.gridsearch_tasks > 0 and cfg.data.val_fraction <= 0:
        p.append(f"train.gridsearch_tasks = {cfg.train.gridsearch_tasks} needs validation data: "
                 f"data.val_fraction = {cfg.data.val_fraction!r} must be > 0")
