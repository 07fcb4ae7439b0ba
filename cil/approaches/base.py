"""The approach interface: what an approach adds to the shared loop (cil.run, cil.training).

The loop calls an approach's hooks in this order for task ``t`` (see cil.run):

``prepare_model`` (once, on the fresh model) -> ``make_head`` (task t's head; on resume, every head
again) -> ``before_task`` -> ``training_set`` / ``validation_set`` -> ``fit`` (FACIL's schedule:
``warmup_loss`` per warm-up batch, then ``set_train_mode`` per epoch and ``train_parameters`` once,
``forward`` + ``loss`` + ``after_step`` per batch, ``forward`` + ``validation_loss`` per validation batch) ->
``after_fit`` -> ``update_memory`` -> ``after_memory_update`` -> ``forward`` + ``eval_scores`` per test
batch -> ``state_dict`` (into the resumable state; ``load_state_dict`` on resume).

Every hook receives one :class:`TaskContext`. Hyper-parameters are read from ``ctx.cfg`` inside the
hooks (not cached at construction), so a caller can re-run a task's fit with another config (e.g. a
grid search over ``train.lr`` and the approach's ``lamb``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cil.config import ExperimentConfig
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet

Phase = Literal["train", "val", "test"]
Split = tuple[Tensor, Tensor]
#: one score tensor ``[batch, classes of head u]`` per head u
Scores = list[Tensor]


@dataclass
class EpochRecord:
    """One training epoch of a task: sample means of the loss and of each named term, the validation
    loss and the heads' task-aware validation accuracy, the lr it trained with, its wall time.

    ``train_eval_loss`` / ``train_eval_acc_taw``: with ``train.eval_on_train``, the validation loss and
    task-aware accuracy measured on the training set (unaugmented, model in eval mode) after the epoch,
    as FACIL's ``--eval-on-train`` logs them; NaN when it is off.
    """

    epoch: int
    train_loss: float
    terms: dict[str, float]
    val_loss: float
    val_acc_taw: float
    lr: float
    seconds: float
    train_eval_loss: float = math.nan
    train_eval_acc_taw: float = math.nan


@dataclass
class FitReport:
    """What :meth:`Approach.fit` returns: the epochs trained, the best validation loss, the time, each
    epoch's record."""

    epochs: int
    best_val_loss: float
    seconds: float
    records: list[EpochRecord] = field(default_factory=list)


class TaskTrainer(Protocol):
    """What an approach uses of the shared trainer (cil.training.Trainer), declared here so that the
    interface does not import the trainer that calls it."""

    def inputs(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

    def autocast(self) -> Any: ...

    def fit(self, approach: Approach, ctx: TaskContext, train: Split, val: Split) -> FitReport: ...

    def evaluate(self, approach: Approach, ctx: TaskContext, tests: list[Split],
                 tasks: list[int] | None = None) -> tuple[list[float], list[float]]: ...


def task_seed(seed: int, task: int, stream: int) -> int:
    """A distinct, stable seed per (experiment seed, task, use)."""
    return (seed * 1_000_003 + task * 7_919 + stream * 104_729) % (2**63 - 1)


def warn_without_exemplars(cfg: ExperimentConfig, approach: str, consequence: str = "") -> None:
    """FACIL warns when an approach meant to replay exemplars runs with no exemplar budget."""
    m = cfg.memory
    if m.num_exemplars == 0 and m.num_exemplars_per_class == 0:
        warnings.warn(f"{approach} is expected to use exemplars: set memory.num_exemplars or "
                      f"memory.num_exemplars_per_class (FACIL warns the same){consequence}", UserWarning, stacklevel=3)


@dataclass
class TaskContext:
    """What every hook sees about the task being learned.

    ``scenario.task_split(u, split)`` gives any task's uint8 images and global labels, on ``device`` or,
    for a split too large for it, on the host (cil.data.placement; ``trainer.inputs`` moves a batch over);
    ``generator`` is the task's training generator (shuffling, augmentation); ``old_model`` is the
    frozen model after task ``t - 1`` when the approach asks for one (``Approach.needs_old_model``).
    """

    t: int
    cfg: ExperimentConfig
    model: IncrementalNet
    old_model: IncrementalNet | None
    memory: ExemplarMemory
    scenario: Any
    device: torch.device
    generator: torch.Generator
    trainer: TaskTrainer
    log: Callable[[str], None] | None = None
    #: called after each training epoch of the task (not the warm-up) with its record: a runner's
    #: progress display (a sweep's live table), never part of what the run computes
    after_epoch: Callable[[TaskContext, EpochRecord], None] | None = None

    @property
    def offset(self) -> int:
        """Global label of task t's first class."""
        return self.model.task_offsets[self.t]

    @property
    def num_old_classes(self) -> int:
        return self.offset

    @property
    def num_new_classes(self) -> int:
        return self.model.task_cls[self.t]

    def task_data(self, split: str = "train") -> Split:
        """Task t's own samples of a split (no exemplars)."""
        return self.scenario.task_split(self.t, split)

    def new_generator(self, stream: int) -> torch.Generator:
        """A generator seeded by (seed, t, stream): extra random draws that do not shift the others'."""
        return torch.Generator(device=self.device).manual_seed(task_seed(self.cfg.run.seed, self.t, stream))

    def with_cfg(self, cfg: ExperimentConfig) -> TaskContext:
        """The same task under another config (hooks read hyper-parameters from ``ctx.cfg``)."""
        return dataclasses.replace(self, cfg=cfg)


@dataclass
class Step:
    """One batch through the models: what ``loss``, ``validation_loss`` and ``eval_scores`` see.

    ``x`` is the normalised (and, in training, augmented) input, ``y`` the global labels. ``old_*`` are
    set when the old model ran (training and validation of an approach with an old model). ``extras``
    holds whatever an approach's own ``forward`` adds (e.g. LUCIR's unscaled cosines).
    """

    x: Tensor
    y: Tensor
    logits: list[Tensor]
    features: Tensor
    old_logits: list[Tensor] | None = None
    old_features: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Loss(NamedTuple):
    """A batch's loss: ``total`` is minimised; ``terms`` are its named parts (unweighted values),
    averaged per epoch and checked for NaN/inf so a diverging run names the term."""

    total: Tensor
    terms: dict[str, Tensor]


class Approach:
    """FACIL's finetuning behaviour; subclasses override the hooks they change."""

    #: exemplars join the training data when the memory holds some
    uses_memory = True
    #: a frozen copy of the model after the previous task runs beside the model (``ctx.old_model``)
    needs_old_model = False
    #: the old model's forward keeps autograd (gradients w.r.t. its activations, e.g. Grad-CAM) and its
    #: BatchNorm is not folded into the convolutions; its parameters never train
    old_model_grad = False
    #: the phases whose ``forward`` runs the old model
    old_model_phases: tuple[Phase, ...] = ("train", "val")
    #: FACIL clips the gradient norm at ``train.clipping`` (its LUCIR does not)
    clip_gradients = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    # ---- the model's structure ---------------------------------------------------------------------
    def prepare_model(self, model: IncrementalNet) -> None:
        """Structure changes made once on the fresh model, before any head (and before a saved state
        is loaded on resume): e.g. LUCIR removes the backbone's last ReLU."""

    def make_head(self, model: IncrementalNet, t: int, n_classes: int) -> nn.Module:
        """Task t's new head (``model.heads`` holds the heads of tasks 0..t-1)."""
        return nn.Linear(model.out_dim, n_classes)

    # ---- before training -----------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        """Runs once the new head exists, before the data and the optimizer are built."""

    def training_set(self, ctx: TaskContext) -> Split:
        """Task t's training samples plus the stored exemplars (FACIL)."""
        x, y = ctx.task_data("train")
        if self.uses_memory and ctx.memory.size > 0:
            x, y = torch.cat([x, ctx.memory.x.to(x.device)]), torch.cat([y, ctx.memory.y.to(y.device)])
        return x, y

    def validation_set(self, ctx: TaskContext) -> Split:
        return ctx.task_data("val")

    def use_all_outputs(self, ctx: TaskContext) -> bool:
        """FACIL: cross-entropy over every head once exemplars are stored (or when asked)."""
        return ctx.cfg.train.all_outputs or (self.uses_memory and ctx.memory.size > 0)

    def train_parameters(self, ctx: TaskContext) -> Iterable[nn.Parameter]:
        """What the optimizer updates (parameters without ``requires_grad`` are dropped).
        FACIL's finetuning leaves old heads out when only the new head is scored."""
        if ctx.t > 0 and not self.use_all_outputs(ctx):
            return [*ctx.model.backbone.parameters(), *ctx.model.heads[ctx.t].parameters()]
        return ctx.model.parameters()

    def selects_best_epoch(self, ctx: TaskContext) -> bool:
        """FACIL's schedule: the validation loss decays the lr on a plateau (reloading the best epoch's
        model) and the best epoch's model is kept. False: every epoch at the stage's lr, the last kept
        (a stage whose validation loss would undo it, e.g. EEIL's balanced fine-tuning)."""
        return True

    def set_train_mode(self, ctx: TaskContext) -> None:
        """Called at the start of every training epoch."""
        ctx.model.train()

    # ---- training ------------------------------------------------------------------------------------
    def fit(self, ctx: TaskContext, train: Split, val: Split) -> FitReport:
        """Train task t: FACIL's schedule in the shared trainer."""
        return ctx.trainer.fit(self, ctx, train, val)

    def forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        """The model on a batch, and the old model when this phase uses it."""
        old_logits = old_features = None
        if ctx.old_model is not None and phase in self.old_model_phases:
            if self.old_model_grad:
                old_logits, old_features = ctx.old_model(x, return_features=True)
            else:
                with torch.no_grad():
                    old_logits, old_features = ctx.old_model(x, return_features=True)
        logits, features = ctx.model(x, return_features=True)
        return Step(x, y, logits, features, old_logits, old_features)

    def prediction_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        """ce_pred: CE on the current head, or on all heads with exemplars / ``train.all_outputs``."""
        if self.use_all_outputs(ctx):
            return F.cross_entropy(torch.cat(step.logits, dim=1).float(), step.y)
        return F.cross_entropy(step.logits[ctx.t].float(), step.y - ctx.offset)

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        ce = self.prediction_loss(ctx, step)
        return Loss(ce, {"ce_pred": ce})

    def after_step(self, ctx: TaskContext, step: Step, loss: Loss) -> None:
        """After each training batch's optimizer step (not in the warm-up), with that batch's ``step``
        and ``loss``: e.g. Path Integral's running sum of gradient times parameter update. Runs per
        batch: keep it on the device (no reads back to the host)."""

    def validation_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        """The loss FACIL's schedule watches (lr decay, best model)."""
        return self.loss(ctx, step).total

    def warmup_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        """FACIL's warm-up of the new head: CE on its classes."""
        return F.cross_entropy(step.logits[ctx.t].float(), step.y - ctx.offset)

    def after_fit(self, ctx: TaskContext) -> None:
        """After training, before the memory update: a second training stage, parameter importances."""

    # ---- memory ----------------------------------------------------------------------------------------
    def update_memory(self, ctx: TaskContext) -> None:
        """Re-select the exemplars from the stored ones and task t's training samples."""
        if not (self.uses_memory and ctx.memory.enabled):
            return
        x, y = ctx.task_data("train")
        ctx.memory.update(ctx.model, x, y, transform=ctx.trainer.inputs, device=ctx.device,
                          generator=ctx.new_generator(2), batch_size=ctx.cfg.train.batch_size)

    def after_memory_update(self, ctx: TaskContext) -> None:
        """After the exemplars are chosen: e.g. iCaRL's class means."""

    # ---- evaluation ------------------------------------------------------------------------------------
    def eval_scores(self, ctx: TaskContext, step: Step) -> Scores | dict[str, Scores | tuple[Scores, Scores]]:
        """Per-head class scores for TAw/TAg accuracy (argmax within a head / over all heads).

        An approach with more than one classifier returns them by name, its own first (iCaRL:
        ``{"nme": ..., "heads": ...}``): the first gives ``acc_taw``/``acc_tag``, each other one ``name``
        gives ``acc_taw_<name>``/``acc_tag_<name>``. A pair ``(taw_scores, tag_scores)`` in place of one
        score list scores the task-aware and the task-agnostic prediction apart (IL2M rectifies only
        the latter).
        """
        return step.logits

    def multi_softmax_applies(self, name: str) -> bool:
        """Whether ``train.multi_softmax`` (a log-softmax per head before the task-agnostic argmax) is
        applied by the evaluation to the score set ``name`` of ``eval_scores``. An approach whose own
        scores are not logits (iCaRL's distances), or that applies the flag itself at its own place in
        the pipeline (IL2M, before its rectification), says no for that set, as in FACIL."""
        return True

    # ---- resumable state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the approach keeps across tasks outside the model (tensors, numbers, strings,
        lists and dicts of them: loadable with ``torch.load(weights_only=True)``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")


def train_task(approach: Approach, ctx: TaskContext) -> FitReport:
    """Every hook of task ``ctx.t`` up to the memory update (the part before evaluation), in the order
    every runner uses: the run's loop, and the grid search training copies on copies of the context."""
    approach.before_task(ctx)
    train = approach.training_set(ctx)
    val = approach.validation_set(ctx)
    if ctx.log:
        ctx.log(f"task {ctx.t}: training on {len(train[1])} samples, classes {ctx.num_new_classes}")
    report = approach.fit(ctx, train, val)
    approach.after_fit(ctx)
    approach.update_memory(ctx)
    approach.after_memory_update(ctx)
    return report
