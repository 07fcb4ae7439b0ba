"""End-to-End Incremental Learning (Castro et al., ECCV 2018) with FACIL's loss.

Task t > 0 trains in two stages in the shared trainer:

1. all of task t's training data plus the exemplars, ``CE(all heads) + eeil.lamb * kd``, on FACIL's
   schedule (lr decay on a validation plateau, the best epoch kept);
2. balanced fine-tuning: ``eeil.nepochs_finetuning`` epochs at ``train.lr * eeil.lr_finetuning_factor``
   (no warm-up) on a class-balanced set: every old class's exemplars and as many random samples of each
   new class (chosen by herding with ``eeil.balanced_herding``, the paper's choice), ``m`` per class
   (``m`` = the fewest exemplars any old class has). The new classes are distilled too, from the model
   as stage 1 left it (the paper's temporary distillation loss). The stage runs all its epochs at that
   lr and keeps the last, as the paper's fixed schedule does; ``eeil.balanced_model_selection: true``
   gives FACIL's plateau decay and best-epoch restore, which judge the stage by the new task's
   cross-entropy and so keep its first, least balanced epoch (docs/fidelity.md has the measurement).

``kd`` sums, over the distilled heads, FACIL's ``BCE(softmax(z/T), softmax(z_teacher/T))`` (mean over
samples and classes); the old heads' teacher is the model after task t - 1. The validation loss is the
cross-entropy alone, as in FACIL. The data augmentation is the data set's own (FACIL's EEIL adds none:
the paper's brightness/contrast augmentation is not in it).

``eeil.facil_finetuning: true`` reproduces FACIL's stages (with ``eeil.balanced_model_selection: true``,
FACIL's schedule too), which differ in three ways: stage 1 distils
heads 0..t-2 only (an off-by-one: nothing at t = 1), stage 2 distils the old heads but not the new ones,
and its "balanced" set is the exemplars plus as many random new-task samples as there are exemplars in
total (balanced only when old and new tasks have as many classes).

``eeil.noise_grad`` adds ``N(0, 1) * 0.3 / (1 + e) ** 0.55`` to every gradient, ``e`` the epoch within
the stage, as FACIL does (it cites the paper's code). The noise is added as the gradient is computed,
i.e. before FACIL's gradient-norm clipping rather than after (identical unless the clipping bites).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cil.approaches.base import Approach, Loss, Phase, Split, Step, TaskContext, warn_without_exemplars
from cil.approaches.registry import EeilSection
from cil.approaches.stages import chain_reports, fit_stage
from cil.config import ExperimentConfig
from cil.memory import herding_order
from cil.networks import IncrementalNet
from cil.training import FitReport, frozen_copy

NOISE_ETA, NOISE_GAMMA = 0.3, 0.55  # FACIL's (from the paper's code)


def softmax_bce(logits: Tensor, teacher: Tensor, T: float) -> Tensor:
    """FACIL's EEIL distillation for one head: mean over samples and classes of
    ``BCE(softmax(logits/T), softmax(teacher/T))``, logs clamped at -100 as ``F.binary_cross_entropy``
    does (written out: that function refuses to run under autocast)."""
    q = F.softmax(logits.float() / T, dim=1)
    p = F.softmax(teacher.float() / T, dim=1)
    return -(p * q.log().clamp(min=-100) + (1 - p) * torch.log1p(-q).clamp(min=-100)).mean()


class EEIL(Approach):
    needs_old_model = True
    old_model_phases = ("train",)  # FACIL validates EEIL on the cross-entropy alone

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        warn_without_exemplars(cfg, "EEIL", "; without them the balanced fine-tuning is skipped")
        self.balanced = False  # in stage 2
        self._stage1_model: IncrementalNet | None = None  # stage 2's teacher for the new head
        self._noise: tuple[torch.Generator, list] | None = None
        self._epoch = -1

    def params(self, ctx: TaskContext) -> EeilSection:
        return ctx.cfg.section("eeil")

    def use_all_outputs(self, ctx: TaskContext) -> bool:
        return True  # FACIL's EEIL: cross-entropy over every head, exemplars or not

    # ---- the two stages -----------------------------------------------------------------------------
    def fit(self, ctx: TaskContext, train: Split, val: Split) -> FitReport:
        p = self.params(ctx)
        self.balanced = False
        report = self._stage(ctx, train, val, stream=4)
        if ctx.t == 0 or p.nepochs_finetuning == 0 or ctx.memory.size == 0:
            return report
        data = self.balanced_set(ctx)
        self.balanced = True
        self._stage1_model = None if p.facil_finetuning else frozen_copy(ctx.model)
        try:
            second = self._stage(ctx, data, val, stream=5, **{
                "train.lr": ctx.cfg.train.lr * p.lr_finetuning_factor,
                "train.nepochs": p.nepochs_finetuning, "train.warmup_nepochs": 0})
        finally:
            self.balanced, self._stage1_model = False, None
        return chain_reports(report, second)

    def _stage(self, ctx: TaskContext, train: Split, val: Split, stream: int, **overrides) -> FitReport:
        self._epoch = -1
        if self.params(ctx).noise_grad:
            self._noise = (ctx.new_generator(stream), [])
        try:
            return fit_stage(self, ctx, train, val, **overrides)
        finally:
            if self._noise is not None:
                for handle in self._noise[1]:
                    handle.remove()
            self._noise = None

    def balanced_set(self, ctx: TaskContext) -> Split:
        """Stage 2's data: ``m`` exemplars of each old class (the first ones selected) and ``m`` random
        training samples of each new class, ``m`` the fewest exemplars of an old class (FACIL's set with
        ``eeil.facil_finetuning``)."""
        x, y = ctx.task_data("train")
        mem_x, mem_y = ctx.memory.x.to(x.device), ctx.memory.y.to(y.device)
        gen = ctx.new_generator(3)
        if self.params(ctx).facil_finetuning:
            pick = torch.randperm(len(y), generator=gen, device=gen.device)[: len(mem_y)].to(y.device)
            return torch.cat([mem_x, x[pick]]), torch.cat([mem_y, y[pick]])
        m = min(ctx.memory.class_counts().values())
        old = [torch.nonzero(mem_y == c).flatten()[:m] for c in range(ctx.num_old_classes)]
        feats = self._features(ctx, x) if self.params(ctx).balanced_herding else None
        new = []
        for c in range(ctx.offset, ctx.offset + ctx.num_new_classes):
            idx = torch.nonzero(y == c).flatten()
            if feats is not None:
                new.append(idx[herding_order(feats[idx.cpu()], m).to(idx.device)])
            else:
                new.append(idx[torch.randperm(len(idx), generator=gen, device=gen.device)[:m].to(idx.device)])
        old_idx, new_idx = torch.cat(old), torch.cat(new)
        return torch.cat([mem_x[old_idx], x[new_idx]]), torch.cat([mem_y[old_idx], y[new_idx]])

    @staticmethod
    @torch.inference_mode()
    def _features(ctx: TaskContext, x: Tensor) -> Tensor:
        """The model's features of un-augmented images, in eval mode, on the CPU (for herding)."""
        ctx.model.eval()
        bs = ctx.cfg.train.batch_size
        return torch.cat([ctx.model(ctx.trainer.inputs(x[i:i + bs]), return_features=True)[1].float().cpu()
                          for i in range(0, len(x), bs)])

    # ---- gradient noise -----------------------------------------------------------------------------
    def train_parameters(self, ctx: TaskContext) -> Iterable[nn.Parameter]:
        params = [p for p in super().train_parameters(ctx) if p.requires_grad]
        if self._noise is not None:  # after the warm-up: FACIL's warm-up adds no noise
            gen, handles = self._noise
            for param in params:
                handles.append(param.register_hook(lambda g, gen=gen: g + self._noise_std() * torch.randn(
                    g.shape, generator=gen, device=g.device, dtype=g.dtype)))
        return params

    def _noise_std(self) -> float:
        return NOISE_ETA / (1 + max(self._epoch, 0)) ** NOISE_GAMMA

    def set_train_mode(self, ctx: TaskContext) -> None:
        self._epoch += 1
        super().set_train_mode(ctx)

    # ---- forward and loss ---------------------------------------------------------------------------
    def forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        step = super().forward(ctx, x, y, phase)
        if self._stage1_model is not None and phase == "train":
            with torch.no_grad():
                step.extras["stage1_logits"] = self._stage1_model(x)[ctx.t]
        return step

    def distillation_pairs(self, ctx: TaskContext, step: Step) -> list[tuple[Tensor, Tensor]]:
        """(student logits, teacher logits) per distilled head."""
        if ctx.t == 0 or step.old_logits is None:
            return []
        if self.params(ctx).facil_finetuning:
            heads = range(ctx.t if self.balanced else ctx.t - 1)
        else:
            heads = range(ctx.t)
        pairs = [(step.logits[i], step.old_logits[i]) for i in heads]
        if "stage1_logits" in step.extras:
            pairs.append((step.logits[ctx.t], step.extras["stage1_logits"]))
        return pairs

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        ce = self.prediction_loss(ctx, step)
        terms = {"ce_pred": ce}
        pairs = self.distillation_pairs(ctx, step)
        if not pairs:
            return Loss(ce, terms)
        p = self.params(ctx)
        terms["kd"] = torch.stack([softmax_bce(a, b, p.T) for a, b in pairs]).sum()
        return Loss(ce + p.lamb * terms["kd"], terms)

    def selects_best_epoch(self, ctx: TaskContext) -> bool:
        """The balanced stage is judged by the new task's cross-entropy, a loss that prefers the
        new-class bias the stage removes: FACIL's selection there keeps its first epoch."""
        return not self.balanced or self.params(ctx).balanced_model_selection

    def validation_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        return self.prediction_loss(ctx, step)
