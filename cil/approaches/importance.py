"""Parameter-importance penalties (EWC, MAS, Path Integral, RWalk): what the four share.

Each keeps, for every backbone parameter ``p`` (the heads are never penalised, as in FACIL), its value
``p*`` after the previous task (the anchor) and importance weights ``W``, and trains task t > 0 with

    L = ce_pred + lamb * penalty,        penalty = sum_i W_i (p_i - p*_i)^2

Here: the quadratic penalty, the importance pass over a task's training data (gradients of a
per-approach objective, squared for a Fisher, absolute for MAS), the mixing of old and new importances,
the running path integral ``w = -sum_steps g * delta_p`` (Path Integral, RWalk) and the resumable state.
The approaches themselves only say how their importance is updated after a task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cil.approaches.base import Approach, Loss, Step, TaskContext
from cil.config import ExperimentConfig
from cil.networks import IncrementalNet

if TYPE_CHECKING:
    from cil.training import FitReport

Named = dict[str, Tensor]
#: the seed stream of the importance pass's draws (shuffling, augmentation, sampled labels)
IMPORTANCE_STREAM = 3


# ---- pure parts ---------------------------------------------------------------------------------------

def backbone_parameters(model: IncrementalNet) -> dict[str, nn.Parameter]:
    """The parameters that carry importances: the backbone's trainable ones."""
    return {n: p for n, p in model.backbone.named_parameters() if p.requires_grad}


def detached_copy(params: dict[str, nn.Parameter] | Named) -> Named:
    return {n: p.detach().clone() for n, p in params.items()}


def quadratic_penalty(params: dict[str, nn.Parameter], anchor: Named, weight: Named) -> Tensor:
    """sum over parameters of ``weight * (p - anchor)^2`` (zero at the anchor)."""
    return sum((weight[n] * (p - anchor[n]).pow(2)).sum() for n, p in params.items())


def old_share(alpha: float, model: IncrementalNet, t: int) -> float:
    """FACIL's alpha: the old importance's share; -1 means old classes / classes seen after task t."""
    if alpha == -1:
        return sum(model.task_cls[:t]) / sum(model.task_cls[: t + 1])
    return alpha


def mix(old: Named, new: Named, share: float) -> Named:
    """``share * old + (1 - share) * new`` per parameter: one importance per parameter, not per task."""
    return {n: share * old[n] + (1 - share) * new[n] for n in new}


def gradient_importance(model: nn.Module, params: dict[str, nn.Parameter], batches: Iterable[tuple[Tensor, Tensor]],
                        objective: Callable[[list[Tensor], Tensor], Tensor], reduce: Callable[[Tensor], Tensor]
                        ) -> Named:
    """FACIL's importance estimate: ``reduce`` (square: a diagonal Fisher; abs: MAS) of each batch's
    gradient of ``objective(logits, y)`` (a batch mean), weighted by the batch size and averaged over the
    samples used. The model runs in training mode, as in FACIL (BatchNorm on batch statistics, its
    running statistics updated). Nothing is read back to the host."""
    model.train()
    names = list(params)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in batches:
        loss = objective(model(x), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                sums[n] += reduce(g.float()) * len(y)
        count += len(y)
    return {n: s / max(count, 1) for n, s in sums.items()}


def fisher_objective(sampling: str, generator: torch.Generator | None = None
                     ) -> Callable[[list[Tensor], Tensor], Tensor]:
    """Cross-entropy over all heads against: the true labels (``true``, FACIL's name; the empirical
    Fisher), the model's top class (``max_pred``), or one class drawn from the model's softmax per sample
    with ``generator`` (``multinomial``; the true Fisher)."""
    def objective(logits: list[Tensor], y: Tensor) -> Tensor:
        scores = torch.cat(logits, dim=1).float()
        if sampling == "true":
            labels = y
        elif sampling == "max_pred":
            labels = scores.detach().argmax(dim=1)
        elif sampling == "multinomial":
            labels = torch.multinomial(scores.detach().softmax(dim=1), 1, generator=generator).squeeze(1)
        else:
            raise ValueError(f"Fisher sampling {sampling!r} is not valid: choose max_pred, true or multinomial")
        return F.cross_entropy(scores, labels)
    return objective


def output_norm(logits: list[Tensor], y: Tensor) -> Tensor:
    """MAS's objective: the L2 norm of each sample's outputs (all heads), averaged over the batch."""
    return torch.linalg.vector_norm(torch.cat(logits, dim=1).float(), dim=1).mean()


def importance_batches(ctx: TaskContext, num_samples: int, generator: torch.Generator
                       ) -> Iterator[tuple[Tensor, Tensor]]:
    """The importance pass's batches: task t's own training samples (no exemplars), shuffled and
    augmented with ``generator``. ``num_samples`` -1: every full batch, as FACIL (all samples when there
    is less than one batch); n > 0: the first n shuffled samples. A trailing batch of one sample is
    dropped (BatchNorm in training mode cannot normalise it)."""
    x, y = ctx.task_data("train")
    bs = ctx.cfg.train.batch_size
    n = len(y)
    keep = (n // bs * bs or n) if num_samples == -1 else min(num_samples, n)
    order = torch.randperm(n, generator=generator, device=ctx.device)[:keep].to(x.device)  # where the data is
    batches = list(order.split(bs))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches.pop()
    for idx in batches:
        yield ctx.trainer.inputs(x[idx], generator), y[idx].to(ctx.device)


def task_importance(ctx: TaskContext, num_samples: int, objective: Callable[[torch.Generator], Callable],
                    reduce: Callable[[Tensor], Tensor]) -> Named:
    """:func:`gradient_importance` over task t's training data, drawn with the task's importance
    generator (deterministic per seed and task). ``objective`` builds the objective from that generator."""
    generator = ctx.new_generator(IMPORTANCE_STREAM)
    model = ctx.model
    with ctx.trainer.autocast():
        return gradient_importance(model, backbone_parameters(model), importance_batches(ctx, num_samples, generator),
                                   objective(generator), reduce)


# ---- the approaches' shared behaviour --------------------------------------------------------------------

class ImportancePenalty(Approach):
    """Finetuning plus ``lamb * sum_i W_i (p_i - p*_i)^2`` on the backbone from task 1 on.

    Subclasses name their config section, the importance groups they keep (``groups``), the penalty
    weights ``W`` derived from them (:meth:`penalty_weight`) and how they are updated after a task
    (:meth:`update_importance`, called after the memory update, as FACIL's ``post_train_process``
    runs after its exemplar selection). Groups and anchor are the resumable state.
    """

    section: str = ""
    #: named importance tensors kept across tasks (zeros before task 0)
    groups: tuple[str, ...] = ("importance",)

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.anchor: Named = {}
        self.store: dict[str, Named] = {g: {} for g in self.groups}
        self._weight: Named = {}
        self._settings: tuple[ExperimentConfig, Any] | None = None

    def settings(self, ctx: TaskContext) -> Any:
        """The approach's config section for ctx's config (built once per config, not per batch)."""
        if self._settings is None or self._settings[0] is not ctx.cfg:
            self._settings = (ctx.cfg, ctx.cfg.section(self.section))
        return self._settings[1]

    # ---- what subclasses define ----------------------------------------------------------------------
    def penalty_weight(self) -> Named:
        """W of the penalty, from the stored groups."""
        return self.store["importance"]

    def update_importance(self, ctx: TaskContext) -> None:
        """After task t: update ``self.store`` (the anchor still holds the parameters before task t)."""
        raise NotImplementedError

    # ---- hooks ---------------------------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        params = backbone_parameters(ctx.model)
        if not self.anchor:  # before task 0, as FACIL: the initial parameters, zero importance
            self.anchor = detached_copy(params)
            self.store = {g: {n: torch.zeros_like(p) for n, p in self.anchor.items()} for g in self.groups}
        elif set(self.anchor) != set(params):
            raise ValueError(f"{type(self).__name__}: the stored importances are for parameters "
                             f"{sorted(set(self.anchor) ^ set(params))} the backbone does not match")
        self.anchor = {n: v.to(ctx.device) for n, v in self.anchor.items()}
        self.store = {g: {n: v.to(ctx.device) for n, v in named.items()} for g, named in self.store.items()}
        self._weight = self.penalty_weight()

    def penalised(self, ctx: TaskContext, step: Step) -> Loss:
        ce = self.prediction_loss(ctx, step)
        if ctx.t == 0:
            return Loss(ce, {"ce_pred": ce})
        penalty = quadratic_penalty(backbone_parameters(ctx.model), self.anchor, self._weight)
        return Loss(ce + self.settings(ctx).lamb * penalty, {"ce_pred": ce, "penalty": penalty})

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        return self.penalised(ctx, step)

    def validation_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        return self.penalised(ctx, step).total

    def after_memory_update(self, ctx: TaskContext) -> None:
        self.update_importance(ctx)
        self.anchor = detached_copy(backbone_parameters(ctx.model))

    # ---- resumable state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def cpu(named: Named) -> Named:
            return {n: v.detach().cpu().clone() for n, v in named.items()}
        return {"anchor": cpu(self.anchor), **{g: cpu(self.store[g]) for g in self.groups}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {"anchor", *self.groups}
        if set(state) != expected:
            raise ValueError(f"{type(self).__name__} state must hold {sorted(expected)}, got {sorted(state)}")
        self.anchor = dict(state["anchor"])
        self.store = {g: dict(state[g]) for g in self.groups}


class PathIntegralPenalty(ImportancePenalty):
    """An importance penalty that also integrates, over every training step of a task, minus the
    gradient of the unpenalised loss times the parameter update: ``w -= g * (p_after - p_before)``
    (Path Integral's and RWalk's per-parameter contribution to the loss decrease). The gradient comes
    from a second backward pass of the unpenalised loss alone, as in FACIL; ``w`` restarts with every fit."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.w: Named = {}

    def path_loss(self, ctx: TaskContext, step: Step, loss: Loss) -> Tensor:
        """The loss whose decrease the path integral measures: the cross-entropy the model trains with."""
        return loss.terms["ce_pred"]

    def reset_path(self, ctx: TaskContext) -> None:
        self.w = {n: torch.zeros_like(p) for n, p in backbone_parameters(ctx.model).items()}

    def fit(self, ctx: TaskContext, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor]) -> FitReport:
        self.reset_path(ctx)
        return super().fit(ctx, train, val)

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        loss = self.penalised(ctx, step)
        params = list(backbone_parameters(ctx.model).values())
        grads = torch.autograd.grad(self.path_loss(ctx, step, loss), params, retain_graph=True, allow_unused=True)
        step.extras["path_grads"] = [torch.zeros_like(p) if g is None else g.detach() for p, g in
                                     zip(params, grads, strict=True)]
        step.extras["path_before"] = [p.detach().clone() for p in params]
        return loss

    def after_step(self, ctx: TaskContext, step: Step, loss: Loss) -> None:
        params = [p.detach() for p in backbone_parameters(ctx.model).values()]
        delta = torch._foreach_sub(params, step.extras.pop("path_before"))
        torch._foreach_mul_(delta, step.extras.pop("path_grads"))
        torch._foreach_sub_(list(self.w.values()), delta)

    def parameter_change(self, ctx: TaskContext) -> Named:
        """``(p - p*)^2`` over task t: how far each parameter moved from the anchor."""
        return {n: (p.detach() - self.anchor[n]).pow(2) for n, p in backbone_parameters(ctx.model).items()}
