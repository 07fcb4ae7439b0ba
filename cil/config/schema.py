"""The shared config sections, declared once: each key's type, default, ``check`` (valid values or range),
FACIL flag (``flag``, with ``sets`` for a flag that takes no value) and, as the attribute docstring on the
line after the field, its description. The CLI's flag table (cil.cli), the range checks
(cil.config.validation) and the config reference (docs/hooks/reference.py) are generated from these
declarations, as they are from the approach sections' in cil.approaches.registry.

Adding a shared key: one field with its metadata and docstring below (``docs/development.md``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cil.approaches.family import TERMS
from cil.catalog import AUGMENT_MODES, NETWORK_NAMES, dataset_problem

SELECTIONS = ("random", "herding", "entropy", "distance")
SGD_IMPLS = ("torch", "for-loop", "foreach", "fused")
CPU_ISA_MODES = ("portable", "native")  # run.cpu_isa: what each sets is cil.numerics.CPU_MODES
# Keys that say where a run happens, not what it computes: left out of the fingerprint (the device's
# kind counts: a CUDA run gets other numbers than a CPU run, see ExperimentConfig.device_kind).
MACHINE_KEYS = ("data.data_root", "data.on_device", "data.device_memory_budget", "data.cache_dir", "run.device")


def default_data_root() -> str:
    """Absolute data root: ``$CIL_DATA_ROOT`` or ``~/.cache/cil/data`` (never relative to the code)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("CIL_DATA_ROOT", "~/.cache/cil/data")))


def _search_tasks(value: int) -> str | None:
    """≥ 0 (0: no search)"""
    return None if value >= 0 else ("must be >= 0 (0: no search; N: the first N tasks; FACIL's default -1 also "
                                    "means no search)")


def _learning_rates(values: list[float]) -> str | None:
    """a non-empty list of learning rates, each > 0"""
    if not values:
        return "give at least one learning rate"
    return None if all(math.isfinite(v) and v > 0 for v in values) else "every learning rate must be > 0"


def _seed(value: int) -> str | None:
    """in [0, 2**32)"""
    return None if 0 <= value < 2**32 else "must be in [0, 2**32)"


def _threads(value: int | str) -> str | None:
    """`auto` or a count >= 1"""
    ok = value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    return None if ok else "use auto or a count >= 1"


def _device(value: str) -> str | None:
    """`auto`, `cpu`, `mps`, `cuda` or `cuda:N`"""
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) else "use auto, cpu, mps, cuda or cuda:N"


@dataclass
class DataConfig:
    """Which data, and how it is cut into tasks (FACIL's scenario)."""

    dataset: str = field(default="digits", metadata={"check": dataset_problem, "flag": "--datasets"})
    """The data set, a row of the data-set catalog (`cil/catalog.py`, listed on the data sets page of the docs):
    `digits` and `synthetic` need no files and no network, `cifar100`, `mnist` and `svhn` are downloaded by
    torchvision into `data_root` on first use, `imagenet100` and `folder` are read from `data_root`. `synthetic`
    takes parameters after `:`, e.g. `synthetic:classes=50,channels=1,size=8,train=40` (also `test`, `seed`)."""
    data_root: str = field(default_factory=default_data_root, metadata={"flag": "--data-root"})
    """Where the data sets live, made absolute: downloads land here and folders are read from here."""
    num_tasks: int = field(default=5, metadata={"check": ">0", "flag": "--num-tasks"})
    """Tasks the classes are split into (FACIL's scenario); at most the data set's number of classes."""
    nc_first_task: int | None = field(default=None, metadata={"check": ">0", "flag": "--nc-first-task"})
    """Classes of the first task; the rest are split evenly over the other tasks (null: all tasks split evenly)."""
    val_fraction: float = field(default=0.1, metadata={"check": "[0,1)"})
    """Share of each class's training images held out for validation, in [0, 1): the validation loss drives the lr
    schedule and picks the best model."""
    fixed_class_order: bool = False
    """True: iCaRL's fixed class order for cifar100 and imagenet100; false: the seed shuffles the classes exactly as
    FACIL does (`np.random.seed(seed)`)."""
    image_size: int | None = field(default=None, metadata={"check": ">0"})
    """Side of the stored images: file-backed images are decoded once per node into the decoded-image cache
    (data.cache_dir) with the shorter side resized to it, then centre-cropped; in-memory sets are resized once
    (bilinear). Null: the data set's own (224 for imagenet100, 32 for folder, the native size otherwise)."""
    on_device: bool | None = None
    """Where a split's uint8 images live: true on the training device, false on the host (each batch
    copied over), null chosen per split by its size against data.device_memory_budget (cil.data.placement)."""
    augment: str = field(default="facil", metadata={"check": AUGMENT_MODES})
    """Training augmentation: `facil` is FACIL's transform for the data sets FACIL configures, `crop` replaces every
    random-resized crop by a translation-only crop of the padded image (weaker), `none` turns it off. Test images
    are never augmented; the docs compare each data set's transform with FACIL's."""
    device_memory_budget: float | None = field(default=None, metadata={"check": ">=0"})
    """GiB of device memory that resident splits may take when data.on_device is null; a split that does
    not fit stays on the host. null: half of what the trial may still allocate on CUDA (the card's free
    memory, capped by a fractional-GPU trial's share); no limit on the CPU."""
    cache_dir: str | None = None
    """Folder of the decoded-image cache, shared by the trials of a node (cil.data.cache); null:
    $CIL_CACHE_DIR or ~/.cache/cil/decoded on the node where the trial runs."""


@dataclass
class ModelConfig:
    """``network`` None: the data set's default (its ``network`` in cil.catalog.DATASETS)."""

    network: str | None = field(default=None, metadata={"check": NETWORK_NAMES, "flag": "--network"})
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

    nepochs: int = field(default=200, metadata={"check": ">0", "flag": "--nepochs"})
    """Training epochs per task (fewer when the lr falls below `lr_min`)."""
    lr: float = field(default=0.1, metadata={"check": ">0", "flag": "--lr"})
    """Starting learning rate of every task (SGD)."""
    lr_min: float = field(default=1e-4, metadata={"check": ">=0", "flag": "--lr-min"})
    """A task's training stops once the lr falls below this."""
    lr_factor: float = field(default=3.0, metadata={"check": ">1", "flag": "--lr-factor"})
    """The lr is divided by this (> 1) after `lr_patience` epochs without a better validation loss, and the best
    model so far is restored."""
    lr_patience: int = field(default=5, metadata={"check": ">0", "flag": "--lr-patience"})
    """Epochs without a better validation loss before the lr is divided by `lr_factor`."""
    momentum: float = field(default=0.0, metadata={"check": "[0,1)", "flag": "--momentum"})
    """SGD momentum, in [0, 1)."""
    weight_decay: float = field(default=0.0, metadata={"check": ">=0", "flag": "--weight-decay"})
    """SGD weight decay."""
    batch_size: int = field(default=64, metadata={"check": ">0", "flag": "--batch-size"})
    """Training and evaluation batch size."""
    clipping: float = field(default=10000.0, metadata={"check": ">0", "flag": "--clipping"})
    """Gradient-norm clipping threshold (FACIL's 10000; approaches that do not clip, such as LUCIR, ignore it)."""
    warmup_nepochs: int = field(default=0, metadata={"check": ">=0", "flag": "--warmup-nepochs"})
    """FACIL's warm-up before every task after the first: this many epochs training the new head alone on the new
    task's samples, everything else in eval mode (0: none)."""
    warmup_lr_factor: float = field(default=1.0, metadata={"check": ">0", "flag": "--warmup-lr-factor"})
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
    sgd_impl: str = field(default="torch", metadata={"check": SGD_IMPLS})
    """SGD's implementation: torch (torch's choice: for-loop on the CPU, foreach on CUDA), for-loop,
    foreach or fused (all bit-equal on the CPU)."""
    eval_batch_size: int = field(default=0, metadata={"check": ">=0"})
    """Batch size of evaluation, validation and exemplar passes (no gradients); 0: train.batch_size."""
    fix_bn: bool = field(default=False, metadata={"flag": "--fix-bn", "sets": True})
    """FACIL's `--fix-bn`: keep the backbone's BatchNorm layers in eval mode while training every task after the
    first (statistics frozen at task 0's)."""
    eval_on_train: bool = field(default=False, metadata={"flag": "--eval-on-train", "sets": True})
    """FACIL's `--eval-on-train`: also measure the loss and the task-aware accuracy on the (unaugmented) training
    set after every epoch, in the epoch records."""
    multi_softmax: bool = field(default=False, metadata={"flag": "--multi-softmax", "sets": True})
    """FACIL's `--multi-softmax`: the task-agnostic prediction is the argmax of each head's log-softmax (one softmax
    per task) instead of the raw scores; task-aware accuracy and the training loss do not change, as in FACIL."""
    gridsearch_tasks: int = field(default=0, metadata={"check": _search_tasks, "flag": "--gridsearch-tasks"})
    """Run FACIL's grid search (the `gridsearch.*` keys) inside each of the first N tasks (0: off)."""


def _loss_fields() -> list[tuple[str, Any, Any]]:
    """``lamb`` and ``T``, one weight per weighted term of the family's table, then the switch."""
    def key(name: str, tp: Any, default: Any, doc: str, **metadata: Any) -> tuple[str, Any, Any]:
        return name, tp, field(default=default, metadata={**metadata, "doc": doc})

    return [
        key("lamb", float | None, None, "Distillation weight `lamb` of the loss family (FACIL's `--lamb`; null: the "
            "approach's preset).", check=">=0", flag="--lamb"),
        key("T", float | None, None, "Distillation temperature (null: the approach's preset).", check=">0",
            flag="--T"),
        *(key(t.weight, float | None, None, t.summary, check=">=0") for t in TERMS if t.weight),
        key("bce_pred_with_exemplars", bool, True, "Keep the prediction BCE when exemplars are stored (old-class "
            "samples are negatives of the current head); false drops it then, as the paper's `lwf-br2` does."),
    ]


LossConfig = dataclasses.make_dataclass("LossConfig", _loss_fields())
LossConfig.__module__ = __name__
LossConfig.__doc__ = """The paper's loss family. ``None`` means "the approach's preset value" (cil.approaches.registry);
a key the approach does not use stays ``None``. One weight per term of the family's table
(cil.approaches.family.TERMS), so its fields are generated; each key's description is its ``doc`` metadata."""


@dataclass
class MemoryConfig:
    """FACIL's exemplar budget; ``selection`` left unset is the approach's own (``herding`` for iCaRL,
    else ``random`` as in FACIL)."""

    num_exemplars: int = field(default=0, metadata={"check": ">=0", "flag": "--num-exemplars"})
    """Total exemplar budget, shared by all classes seen (0: none); exclusive with `num_exemplars_per_class`."""
    num_exemplars_per_class: int = field(default=0, metadata={"check": ">=0", "flag": "--num-exemplars-per-class"})
    """Exemplars kept per class seen (0: none); exclusive with `num_exemplars`."""
    selection: str | None = field(default=None, metadata={"check": SELECTIONS, "flag": "--exemplar-selection"})
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

    lr_first: list[float] = field(default_factory=lambda: [5e-1, 1e-1, 5e-2], metadata={"check": _learning_rates})
    """Task 0's learning-rate candidates."""
    lr: list[float] = field(default_factory=lambda: [1e-1, 5e-2, 1e-2, 5e-3, 1e-3], metadata={"check": _learning_rates})
    """Later tasks' learning-rate candidates: the `lr_searches` largest values below task 0's choice are tried."""
    lr_searches: int = field(default=3, metadata={"check": ">0"})
    """How many of `lr` later tasks try."""
    knob_start: float | None = field(default=None, metadata={"check": ">0"})
    """First value of the approach's stability knob (null: the approach's FACIL value); an error for approaches
    without a knob."""
    search_knob: bool = True
    """False: search the lr only."""
    acc_drop_thr: float = field(default=0.2, metadata={"check": "[0,1]", "flag": "--gridsearch-acc-drop-thr"})
    """Validation accuracy a knob value may lose, as a fraction of finetuning's, in [0, 1]."""
    hparam_decay: float = field(default=0.5, metadata={"check": "(0,1)", "flag": "--gridsearch-hparam-decay"})
    """Knob multiplier after each value that loses more, in (0, 1)."""
    max_num_searches: int = field(default=7, metadata={"check": ">0", "flag": "--gridsearch-max-num-searches"})
    """Knob values tried at most."""
    nepochs: int | None = field(default=None, metadata={"check": ">0"})
    """Epochs of each candidate training (null: `train.nepochs`, as FACIL)."""
    facil_warmup_lr: bool = False
    """FACIL's warm-up lr: `train.lr * train.warmup_lr_factor` with the configured `train.lr`, whatever lr the search
    chose (FACIL never updates its warm-up lr); false: the chosen lr times the factor."""


@dataclass
class RunConfig:
    """``stop_at_task``: FACIL's early stop, train tasks 0..stop_at_task-1 only (0: every task)."""

    seed: int = field(default=0, metadata={"check": _seed, "flag": "--seed"})
    """Seeds everything a run draws: class order, validation split, initialisation, batches and augmentation; same
    config and seed, same numbers."""
    device: str = field(default="auto", metadata={"check": _device, "flag": "--device"})
    """Where to train: `auto` (CUDA when there is one, else the CPU), `cpu`, `mps`, `cuda` or `cuda:N`. Not set in a
    sweep spec: a trial uses the GPU Ray assigned it, else the CPU."""
    stop_at_task: int = field(default=0, metadata={"check": ">=0", "flag": "--stop-at-task"})
    """FACIL's `--stop-at-task`: train tasks 0..K-1 only (0: every task); rows keep the scenario's `num_tasks`, and
    `cil.run` continues from its last state with a larger value."""
    deterministic: bool = field(default=True, metadata={"flag": "--no-cudnn-deterministic", "sets": False})
    """Reproducible CUDA numerics, as FACIL runs unless --no-cudnn-deterministic: deterministic cuDNN
    without autotuning, torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG (docs/gpu.md)."""
    threads: int | str = field(default="auto", metadata={"check": _threads})
    """Intra-op CPU threads the run computes with (torch.set_num_threads); the count changes the bits of a CPU
    result. `auto`: the trial's CPU share (resources.cpu) in a sweep, every core in `python -m cil`. Rows
    record the count in effect (`threads_in_effect`)."""
    cpu_isa: str = field(default="portable", metadata={"check": CPU_ISA_MODES})
    """CPU instruction sets the kernels dispatch to: `portable` (torch's kernels capped at AVX2, oneDNN off,
    MKL's reproducible code path: the same bits on any x86-64 CPU with AVX2) or `native` (the libraries'
    fastest path for this CPU; bits may differ between CPU models). Set before the first kernel
    (docs/reproducibility.md)."""



#: the sections every approach shares, in the config's order (cil.config.ExperimentConfig adds one per
#: approach section of cil.approaches.registry)
SHARED_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "loss": LossConfig,
                                    "memory": MemoryConfig, "run": RunConfig, "gridsearch": GridSearchConfig}
