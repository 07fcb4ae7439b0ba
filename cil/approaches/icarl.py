"""iCaRL (Rebuffi et al., CVPR 2017) with FACIL's semantics.

Training: cross-entropy over every head, plus, from task 1 on, a BCE distillation of every old class's
sigmoid towards the old model's (FACIL's iCaRL; the paper's single BCE over all outputs is not what its
code does):

    L = CE(all heads) + icarl.lamb * sum over old classes c of mean_batch BCE(sigmoid(z_c), sigmoid(z_old_c))

Exemplars are chosen by herding (the registry makes ``herding`` iCaRL's ``memory.selection`` when it is
unset). Classification is nearest-mean-of-exemplars (NME): after the memory update, each class's mean
is the re-normalised mean of the L2-normalised features of its exemplars (eval transform, no flipped
copies, as FACIL); a sample's score for class c is ``-|| f / |f| - mu_c ||^2``. The NME scores are the
approach's accuracy (``acc_taw``/``acc_tag``, as FACIL reports), the heads' argmax is kept as
``acc_taw_heads``/``acc_tag_heads``. Without exemplars there are no means and NME falls back to the
heads (FACIL does the same).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cil.approaches.base import Approach, Loss, Scores, Step, TaskContext, warn_without_exemplars
from cil.config import ExperimentConfig


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[num_classes, D]``: per class, the mean of the L2-normalised features, re-normalised (iCaRL's
    "all feature vectors are L2-normalized, and averages are re-normalized"). A class without samples
    gets a NaN row (it is never predicted)."""
    f = F.normalize(features.float(), dim=1)
    means = torch.full((num_classes, f.shape[1]), float("nan"), device=f.device)
    for c in range(num_classes):
        members = f[labels == c]
        if len(members):
            means[c] = F.normalize(members.mean(0), dim=0)
    return means


def nme_scores(features: Tensor, means: Tensor, task_cls: list[int]) -> Scores:
    """Per head, ``-(squared distance)`` between each L2-normalised feature and each class mean: the
    argmax within a head / over all heads is the nearest mean there (FACIL's ``classify``)."""
    f = F.normalize(features.float(), dim=1)
    m = means.to(f.device)
    dist = (f * f).sum(1, keepdim=True) + (m * m).sum(1) - 2 * f @ m.T
    scores = (-dist).nan_to_num(nan=float("-inf"))
    return list(scores.split(task_cls, dim=1))


def distill_bce(outputs: list[Tensor], old_outputs: list[Tensor]) -> Tensor:
    """FACIL's iCaRL distillation: the sum over old classes of the batch-mean BCE between the two models'
    sigmoids."""
    z, z_old = torch.cat(outputs, dim=1).float(), torch.cat(old_outputs, dim=1).float()
    per_class = F.binary_cross_entropy_with_logits(z, torch.sigmoid(z_old), reduction="none").mean(0)
    return per_class.sum()


class ICaRL(Approach):
    needs_old_model = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        warn_without_exemplars(cfg, "iCaRL", "; without them it classifies with the heads")
        self.means: Tensor | None = None  # [classes seen, D] after the last memory update

    def use_all_outputs(self, ctx: TaskContext) -> bool:
        return True  # FACIL's iCaRL: cross-entropy over every head, with or without exemplars

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        ce = F.cross_entropy(torch.cat(step.logits, dim=1).float(), step.y)
        terms = {"ce_pred": ce}
        if ctx.t == 0 or step.old_logits is None:
            return Loss(ce, terms)
        t = ctx.t
        terms["bce_distill"] = distill_bce(step.logits[:t], step.old_logits[:t])
        return Loss(ce + ctx.cfg.icarl.lamb * terms["bce_distill"], terms)

    @torch.inference_mode()
    def after_memory_update(self, ctx: TaskContext) -> None:
        """The class means of the exemplars just chosen, from the model as it will be evaluated."""
        mem = ctx.memory
        if mem.size == 0:
            self.means = None
            return
        ctx.model.eval()
        feats = []
        for start in range(0, mem.size, ctx.cfg.train.batch_size):
            x = ctx.trainer.inputs(mem.x[start:start + ctx.cfg.train.batch_size].to(ctx.device))
            with ctx.trainer.autocast():
                feats.append(ctx.model(x, return_features=True)[1].float())
        num_classes = ctx.offset + ctx.num_new_classes
        self.means = class_means(torch.cat(feats), mem.y.to(ctx.device), num_classes)

    def eval_scores(self, ctx: TaskContext, step: Step) -> dict[str, Scores]:
        nme = step.logits if self.means is None else nme_scores(step.features, self.means, ctx.model.task_cls)
        return {"nme": nme, "heads": step.logits}

    def multi_softmax_applies(self, name: str) -> bool:
        """FACIL's iCaRL classifies by the nearest mean whatever ``--multi-softmax`` says; the plain heads'
        extra columns get it."""
        return name != "nme"

    def state_dict(self) -> dict[str, Any]:
        return {"means": torch.empty(0) if self.means is None else self.means.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        means = state["means"]
        self.means = None if means.numel() == 0 else means.clone()
