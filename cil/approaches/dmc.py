"""Deep Model Consolidation (Zhang et al., WACV 2020) with FACIL's semantics.

Task 0 trains as finetuning. For task t > 0, in ``fit`` (both stages are FACIL's schedule in the shared
trainer, without warm-up, as FACIL's DMC calls its trainers' loops directly):

1. the model is re-initialised (every module's ``reset_parameters``, seeded by (seed, t)); a copy of it,
   with the old heads zeroed and frozen, learns task t alone (cross-entropy on its head) on task t's
   data: the new-task specialist;
2. the re-initialised model (the student) learns, on the unlabelled auxiliary data, to regress the
   concatenation of the old model's old heads and the specialist's head t, each column centred over the
   batch as FACIL centres it (``targets - targets.mean(0)``; the paper's Eq. 4 instead subtracts from
   each sample's logits of a teacher their mean over that teacher's classes), the loss of Eq. 3:
   ``mean((z_student - (z_teachers - mean_batch(z_teachers)))^2)`` over every head. Its validation set is
   the auxiliary data's test split (as FACIL's), with the same loss.

The auxiliary data (``dmc.aux_dataset``) is loaded with cil.data at the main data set's image size,
converted to its channel count (RGB to grey by luminance, grey to RGB by repetition), augmented and
normalised as the main data set's training images. DMC uses no exemplars (FACIL refuses them too).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from cil.approaches.base import Approach, Loss, Phase, Split, Step, TaskContext, task_seed
from cil.approaches.finetuning import Finetuning
from cil.approaches.registry import DmcSection
from cil.approaches.stages import chain_reports, fit_stage
from cil.config import ConfigError, ExperimentConfig
from cil.data import DataError, load_dataset
from cil.networks import IncrementalNet
from cil.training import FitReport

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, RGB to grey
UNLABELLED = -1  # the label the auxiliary samples carry (no class: no validation hit)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 images ``[N, C, H, W]`` with ``channels`` channels: RGB to grey by luminance, grey to RGB by
    repetition; any other conversion is a DataError."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    raise DataError(f"auxiliary images have {have} channels, the model takes {channels}: only 1 <-> 3 converts")


def reinitialise(model: IncrementalNet, seed: int) -> None:
    """FACIL's DMC re-initialisation: ``reset_parameters`` of every module that has one, seeded."""
    torch.manual_seed(seed)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


class DoubleDistillation(Approach):
    """The consolidation stage: the student regresses the centred logits of the two teachers."""

    uses_memory = False

    def __init__(self, cfg: ExperimentConfig, new_model: IncrementalNet) -> None:
        super().__init__(cfg)
        self.new_model = new_model

    def train_parameters(self, ctx: TaskContext):
        return ctx.model.parameters()  # every head of the student

    def targets(self, ctx: TaskContext, x: Tensor) -> Tensor:
        """The old model's old heads and the specialist's head t, each column centred over the batch
        (FACIL's centring, not the paper's per-sample one: docs/fidelity.md)."""
        with torch.no_grad():
            old = ctx.old_model(x)[: ctx.t]
            new = self.new_model(x)[ctx.t]
            target = torch.cat([*old, new], dim=1).float()
            return target - target.mean(dim=0)

    def forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        logits, features = ctx.model(x, return_features=True)
        step = Step(x, y, logits, features)
        step.extras["target"] = self.targets(ctx, x)
        return step

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        mse = F.mse_loss(torch.cat(step.logits, dim=1).float(), step.extras["target"])
        return Loss(mse, {"double_distillation": mse})


class DMC(Approach):
    needs_old_model = True
    uses_memory = False

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        m = cfg.memory
        if m.num_exemplars or m.num_exemplars_per_class:
            raise ConfigError("approach 'dmc' uses no exemplars (its auxiliary data replaces them; FACIL refuses "
                              "them too): set memory.num_exemplars and memory.num_exemplars_per_class to 0")
        self._aux: tuple[Tensor, Tensor] | None = None  # train and test images, uint8 on the host

    def params(self, ctx: TaskContext) -> DmcSection:
        return ctx.cfg.section("dmc")

    # ---- auxiliary data ------------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        if ctx.scenario.num_tasks > 1:
            self.aux_data(ctx)  # a bad path fails before the first task trains

    def aux_data(self, ctx: TaskContext) -> tuple[Split, Split]:
        """The auxiliary train and test images on the device, shaped like the main data, unlabelled."""
        if self._aux is None:
            p = self.params(ctx)
            shape = ctx.scenario.task_split(0, "test")[0].shape
            ds = load_dataset(p.aux_dataset, p.aux_data_root or ctx.cfg.data.data_root, image_size=shape[-1])
            self._aux = tuple(match_channels(s.take(torch.arange(len(s))), shape[1]) for s in (ds.train, ds.test))

        def split(x: Tensor) -> Split:
            return x.to(ctx.device), torch.full((len(x),), UNLABELLED, dtype=torch.long, device=ctx.device)

        return split(self._aux[0]), split(self._aux[1])

    # ---- the two stages ----------------------------------------------------------------------------------
    def fit(self, ctx: TaskContext, train: Split, val: Split) -> FitReport:
        if ctx.t == 0:
            return super().fit(ctx, train, val)
        reinitialise(ctx.model, task_seed(ctx.cfg.run.seed, ctx.t, 3))
        new_model, first = self.train_new_model(ctx, train, val)
        return chain_reports(first, self.consolidate(ctx, new_model))

    def train_new_model(self, ctx: TaskContext, train: Split, val: Split) -> tuple[IncrementalNet, FitReport]:
        """Stage 1: a copy of the (re-initialised) model learns task t alone; old heads zero and frozen."""
        new_model = copy.deepcopy(ctx.model)
        with torch.no_grad():
            for head in new_model.heads[: ctx.t]:
                for param in head.parameters():
                    param.zero_()
                    param.requires_grad_(False)
        stage = dataclasses.replace(ctx, model=new_model, old_model=None, generator=ctx.new_generator(4))
        report = fit_stage(Finetuning(ctx.cfg), stage, train, val, **{"train.warmup_nepochs": 0})
        new_model.eval()
        for param in new_model.parameters():
            param.requires_grad_(False)
        return new_model, report

    def consolidate(self, ctx: TaskContext, new_model: IncrementalNet) -> FitReport:
        """Stage 2: double distillation of the old model and the specialist into ``ctx.model``."""
        aux_train, aux_val = self.aux_data(ctx)
        stage = dataclasses.replace(ctx, generator=ctx.new_generator(5))
        return fit_stage(DoubleDistillation(ctx.cfg, new_model), stage, aux_train, aux_val,
                         **{"train.warmup_nepochs": 0, "train.batch_size": self.params(ctx).aux_batch_size})
