"""IL2M, class-incremental learning with dual memory (Belouadah & Popescu, ICCV 2019), FACIL's semantics.

Training is finetuning with exemplars. After fitting task t (before the memory update) the model
scores its training data (task t's samples and the old classes' exemplars, eval transform):

- ``init_means[c]``: the mean score of class c on its own samples, for task t's classes (kept from the
  task that learned them);
- ``current_means[c]``: the same for the old classes, on their exemplars, with the current model;
- ``confidence[t]``: the mean top score over task t's samples.

Task-agnostic prediction (``acc_tag``): when a sample's top class is a new one (task t's), every old
class o (of task u) is rectified ``s_o * init_means[o] / current_means[o] * confidence[t] / confidence[u]``
and the argmax is taken again; a sample whose top class is old keeps its scores. Task-aware prediction
(``acc_taw``) uses the heads as they are (as FACIL). ``acc_tag_heads`` is the unrectified task-agnostic
accuracy. The statistics are the resumable state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cil.approaches.base import Approach, Scores, Step, TaskContext
from cil.config import ExperimentConfig


def rectify(scores: Tensor, factors: Tensor) -> Tensor:
    """``scores`` ``[batch, classes]`` with the first ``len(factors)`` (old) columns multiplied by
    ``factors`` in the rows whose top class is not old (IL2M's Eq. 1, as FACIL applies it)."""
    n_old = len(factors)
    old = scores[:, :n_old]
    new_top = (scores.argmax(dim=1) >= n_old).unsqueeze(1)
    rectified = torch.where(new_top, old * factors.to(scores.device, scores.dtype), old)
    return torch.cat([rectified, scores[:, n_old:]], dim=1)


def class_sums(values: Tensor, labels: Tensor, n: int) -> Tensor:
    """Per-class sums ``[n]`` of ``values`` ``[N]`` by ``labels``: a masked column sum, deterministic on CUDA
    (``index_add_`` is not) and, on the CPU, equal to ``index_add_``'s sample-by-sample sums."""
    mask = labels.unsqueeze(1) == torch.arange(n, device=labels.device)
    return torch.where(mask, values.unsqueeze(1), torch.zeros((), dtype=values.dtype, device=values.device)).sum(0)


class IL2M(Approach):
    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.init_means = torch.zeros(0, dtype=torch.float64)     # [classes seen]
        self.current_means = torch.zeros(0, dtype=torch.float64)  # [old classes of the last task]
        self.confidence = torch.zeros(0, dtype=torch.float64)     # [tasks seen]
        self._factors: tuple[tuple, Tensor] | None = None  # (heads, device) -> factors on that device

    @torch.inference_mode()
    def after_fit(self, ctx: TaskContext) -> None:
        """The class statistics of task t, from the training data as the model now scores it."""
        x, y = self.training_set(ctx)
        seen, offset = ctx.offset + ctx.num_new_classes, ctx.offset
        ctx.model.eval()
        own: list[Tensor] = []    # each sample's score for its own class
        labels: list[Tensor] = []
        top = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # sum of top scores, samples
        for idx in torch.arange(len(y), device=x.device).split(ctx.cfg.train.batch_size):  # where the data is
            yb = y[idx].to(ctx.device)
            with ctx.trainer.autocast():
                scores = torch.cat(ctx.model(ctx.trainer.inputs(x[idx])), dim=1).double()
            own.append(scores.gather(1, yb.unsqueeze(1)).squeeze(1))
            labels.append(yb)
            new = yb >= offset
            top += torch.stack([scores.max(dim=1).values[new].sum(), new.sum().double()])
        y_all = torch.cat(labels)
        sums = class_sums(torch.cat(own), y_all, seen)
        counts = class_sums(torch.ones_like(y_all, dtype=torch.float64), y_all, seen)
        means = (sums / counts).cpu()
        self.init_means = torch.cat([self.init_means[:offset], means[offset:]])
        self.current_means = means[:offset]
        self.confidence = torch.cat([self.confidence[: ctx.t], (top[0] / top[1]).cpu().view(1)])
        self._factors = None

    def factors(self, task_cls: list[int]) -> Tensor:
        """The rectification factor of every old class (the classes before the last task)."""
        t = len(task_cls) - 1
        n_old = sum(task_cls[:-1])
        task_of = torch.repeat_interleave(torch.arange(t), torch.tensor(task_cls[:-1], dtype=torch.long))
        return (self.init_means[:n_old] / self.current_means[:n_old]) * (self.confidence[t] / self.confidence[task_of])

    def eval_scores(self, ctx: TaskContext, step: Step) -> dict[str, Scores | tuple[Scores, Scores]]:
        task_cls = list(ctx.model.task_cls)
        if len(task_cls) == 1:
            return {"il2m": step.logits, "heads": step.logits}
        key = (tuple(task_cls), step.logits[0].device)
        if self._factors is None or self._factors[0] != key:  # once per evaluation, not per batch
            self._factors = (key, self.factors(task_cls).to(key[1], torch.float32))
        scores = [z.float() for z in step.logits]
        if ctx.cfg.train.multi_softmax:  # FACIL: each head's log-softmax first, then the rectification
            scores = [torch.log_softmax(z, dim=1) for z in scores]
        rectified = rectify(torch.cat(scores, dim=1), self._factors[1])
        return {"il2m": (step.logits, list(rectified.split(task_cls, dim=1))), "heads": step.logits}

    def multi_softmax_applies(self, name: str) -> bool:
        """IL2M applies ``train.multi_softmax`` itself, before its rectification (FACIL's order)."""
        return name != "il2m"

    def state_dict(self) -> dict[str, Any]:
        return {"init_means": self.init_means.clone(), "current_means": self.current_means.clone(),
                "confidence": self.confidence.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_means = state["init_means"].clone()
        self.current_means = state["current_means"].clone()
        self.confidence = state["confidence"].clone()
        self._factors = None
