"""BiC, Bias Correction (Wu et al., CVPR 2019) with FACIL's semantics.

Each class's exemplar quota is split: ``ceil(bic.val_exemplar_percentage * quota)`` samples per class are
held out (for a new class: its first training samples, which leave its training data; old classes keep
the first ones they had), the rest are the training exemplars. With a total budget the quota is
``floor(num_exemplars / classes seen)`` (FACIL's BiC rounds down).

Stage 1 trains the model on the new data plus the training exemplars, with every head's scores passed
through its task's bias layer (fixed; the new task's is the identity), in the old model too:

    L = (1 - l) * CE(all heads) + l * KD_T(old heads, old model's old heads),   l = n_old / n_seen
    (bic.lamb = -1, the paper's), or CE + bic.lamb * KD_T otherwise

Stage 2 (``after_fit``, from task 1 on): the model frozen in eval mode, only the new task's bias layer
``alpha_t * z + beta_t`` trains, for ``bic.num_bias_epochs`` epochs of SGD (``train.lr``, momentum 0.9,
the training augmentation, as FACIL) on the held-out set of every class: CE over all heads plus
``0.1 * beta_t^2 / 2``. Evaluation scores are the bias-corrected heads (``acc_taw``/``acc_tag``); the
uncorrected heads are kept as ``acc_taw_heads``/``acc_tag_heads``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cil import losses
from cil.approaches.base import Approach, Loss, Scores, Split, Step, TaskContext
from cil.config import ConfigError, ExperimentConfig
from cil.memory import ExemplarMemory

#: FACIL (after BiC's code): the L2 penalty on beta in the bias stage, 0.1 * beta^2 / 2
BETA_PENALTY = 0.1
#: FACIL: the bias stage's SGD momentum
BIAS_MOMENTUM = 0.9


def exemplar_quotas(memory: ExemplarMemory, num_classes: int, held_fraction: float) -> tuple[int, int]:
    """(held-out, training) exemplars per class once ``num_classes`` classes are seen."""
    if memory.num_exemplars > 0:
        per_class = memory.num_exemplars // num_classes  # FACIL's BiC: floor, not the memory's ceil
    else:
        per_class = memory.num_exemplars_per_class
    held = math.ceil(held_fraction * per_class)
    return held, per_class - held


def first_per_class(y: Tensor, k: int, classes: range) -> tuple[Tensor, Tensor]:
    """Indices of the first ``k`` samples of each class (class by class), and of all the others."""
    picked = [torch.nonzero(y == c).flatten()[:k] for c in classes]
    chosen = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long, device=y.device)
    rest = torch.ones(len(y), dtype=torch.bool, device=y.device)
    rest[chosen] = False
    return chosen, torch.nonzero(rest).flatten()


def apply_bias(logits: Scores, alpha: Tensor, beta: Tensor) -> Scores:
    """Head u's scores through task u's bias layer: ``alpha[u] * z_u + beta[u]``."""
    return [alpha[u].to(z.device) * z.float() + beta[u].to(z.device) for u, z in enumerate(logits)]


class BiC(Approach):
    needs_old_model = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.alpha = torch.ones(0)  # [tasks so far]
        self.beta = torch.zeros(0)
        self.held_x = torch.empty(0, dtype=torch.uint8)  # held-out exemplars, grouped by class
        self.held_y = torch.empty(0, dtype=torch.long)
        self._train_idx: Tensor | None = None  # task t's training samples left after the hold-out

    # ---- the split of the exemplars ------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        """Task t's bias layer (identity), and the held-out set of every class seen after task t."""
        t, dev = ctx.t, ctx.device
        self.alpha = torch.cat([self.alpha[:t].to(dev), torch.ones(1, device=dev)])  # kept on the device:
        self.beta = torch.cat([self.beta[:t].to(dev), torch.zeros(1, device=dev)])  # no copy per batch
        num_seen = ctx.offset + ctx.num_new_classes
        held, _ = exemplar_quotas(ctx.memory, num_seen, ctx.cfg.bic.val_exemplar_percentage)
        x, y = ctx.task_data("train")
        counts = torch.bincount(y - ctx.offset, minlength=ctx.num_new_classes)
        if held > int(counts.min()):
            c = int(counts.argmin()) + ctx.offset
            raise ConfigError(f"bic.val_exemplar_percentage = {ctx.cfg.bic.val_exemplar_percentage}: class {c} "
                              f"has {int(counts.min())} training samples, fewer than the {held} to hold out; "
                              "lower the percentage or the exemplar budget")
        old_y = self.held_y[self.held_y < ctx.offset]  # classes of earlier tasks keep their first ones
        keep_old, _ = first_per_class(old_y, held, range(ctx.offset))
        new_held, self._train_idx = first_per_class(y, held, range(ctx.offset, num_seen))
        old_x = self.held_x[self.held_y < ctx.offset].to(x.device)
        self.held_x = torch.cat([old_x[keep_old.to(x.device)], x[new_held]])
        self.held_y = torch.cat([old_y.to(y.device)[keep_old.to(y.device)], y[new_held]])

    def _task_train(self, ctx: TaskContext) -> Split:
        x, y = ctx.task_data("train")
        idx = self._train_idx.to(y.device)
        return x[idx], y[idx]

    def training_set(self, ctx: TaskContext) -> Split:
        """Task t's samples that were not held out, plus the training exemplars."""
        x, y = self._task_train(ctx)
        if ctx.memory.size > 0:
            x, y = torch.cat([x, ctx.memory.x.to(x.device)]), torch.cat([y, ctx.memory.y.to(y.device)])
        return x, y

    def update_memory(self, ctx: TaskContext) -> None:
        """The training exemplars, chosen from what was not held out, at the training quota."""
        num_seen = ctx.offset + ctx.num_new_classes
        _, quota = exemplar_quotas(ctx.memory, num_seen, ctx.cfg.bic.val_exemplar_percentage)
        x, y = self._task_train(ctx)
        ctx.memory.update(ctx.model, x, y, transform=ctx.trainer.inputs, device=ctx.device,
                          generator=ctx.new_generator(2), batch_size=ctx.cfg.train.batch_size, quota=quota)

    # ---- stage 1: distillation ----------------------------------------------------------------------
    def use_all_outputs(self, ctx: TaskContext) -> bool:
        return True  # FACIL's BiC: cross-entropy over every head

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        p, t = ctx.cfg.bic, ctx.t
        out = apply_bias(step.logits, self.alpha, self.beta)
        ce = F.cross_entropy(torch.cat(out, dim=1), step.y)
        terms = {"ce_pred": ce}
        if t == 0 or step.old_logits is None:
            return Loss(ce, terms)
        old = apply_bias(step.old_logits, self.alpha, self.beta)
        terms["kd_joint"] = losses.kd_joint(out[:t], old[:t], p.T)
        if p.lamb == -1:  # the paper's l = n_old / (n_old + n_new)
            lamb = ctx.num_old_classes / (ctx.num_old_classes + ctx.num_new_classes)
            return Loss((1 - lamb) * ce + lamb * terms["kd_joint"], terms)
        return Loss(ce + p.lamb * terms["kd_joint"], terms)

    # ---- stage 2: the new task's bias layer ---------------------------------------------------------
    def after_fit(self, ctx: TaskContext) -> None:
        t, p = ctx.t, ctx.cfg.bic
        if t == 0 or len(self.held_y) == 0 or p.num_bias_epochs == 0:
            return
        model, trainer = ctx.model, ctx.trainer
        model.eval()
        alpha = torch.ones(1, device=ctx.device, requires_grad=True)
        beta = torch.zeros(1, device=ctx.device, requires_grad=True)
        fixed_a, fixed_b = self.alpha[:t].to(ctx.device), self.beta[:t].to(ctx.device)
        optimizer = torch.optim.SGD([alpha, beta], lr=ctx.cfg.train.lr, momentum=BIAS_MOMENTUM)
        gen = ctx.new_generator(3)
        x, y = self.held_x.to(ctx.device), self.held_y.to(ctx.device)
        bs = ctx.cfg.train.batch_size

        def scores(idx: Tensor, generator: torch.Generator | None) -> list[Tensor]:
            with torch.no_grad(), trainer.autocast():
                return [z.float() for z in model(trainer.inputs(x[idx], generator))]

        cached = None  # without augmentation the frozen model's scores are the same every epoch
        if not trainer.augment_spec.active:
            parts = [scores(idx, None) for idx in torch.arange(len(y), device=ctx.device).split(bs)]
            cached = [torch.cat(heads) for heads in zip(*parts, strict=True)]
        for _ in range(p.num_bias_epochs):
            order = torch.randperm(len(y), generator=gen, device=gen.device).to(ctx.device)
            for idx in order.split(bs):
                logits = [c[idx] for c in cached] if cached is not None else scores(idx, gen)
                out = [*apply_bias(logits[:t], fixed_a, fixed_b), alpha * logits[t].float() + beta]
                loss = F.cross_entropy(torch.cat(out, dim=1), y[idx]) + BETA_PENALTY * beta.pow(2).sum() / 2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.alpha[t], self.beta[t] = alpha.detach().item(), beta.detach().item()
        if ctx.log:
            ctx.log(f"  task {t} bias layer: alpha {self.alpha[t]:.4f} beta {self.beta[t]:.4f} "
                    f"({len(y)} held-out exemplars, last batch loss {loss.item():.4f})")

    # ---- evaluation and state -----------------------------------------------------------------------
    def eval_scores(self, ctx: TaskContext, step: Step) -> dict[str, Scores]:
        return {"bic": apply_bias(step.logits, self.alpha, self.beta), "heads": step.logits}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.detach().cpu().clone(), "beta": self.beta.detach().cpu().clone(),
                "held_x": self.held_x.detach().cpu().clone(), "held_y": self.held_y.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha, self.beta = state["alpha"].clone(), state["beta"].clone()
        self.held_x, self.held_y = state["held_x"].clone(), state["held_y"].clone()
