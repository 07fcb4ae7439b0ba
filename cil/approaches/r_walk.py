"""Riemannian Walk (Chaudhry et al., ECCV 2018) with FACIL's semantics.

    L = ce_pred + r_walk.lamb * sum_i (F_i + s_i) (p_i - p*_i)^2

over the backbone's parameters: ``F`` a diagonal Fisher merged over tasks as in EWC (``r_walk.alpha``,
``fim_sampling_type``, ``fim_num_samples``) and ``s`` path scores: during task t,
``w_i = -sum_steps g_i * delta_p_i`` as in Path Integral; after it
``s <- (s + relu(w / (F (p - p*)^2 + damping))) / 2``. FACIL takes ``g`` from the cross-entropy over all
heads even where the model trains on the current head alone (no exemplars, task > 0);
here it is the cross-entropy the model trains with, and ``r_walk.facil_path_loss`` restores FACIL's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cil.approaches.base import Loss, Step, TaskContext
from cil.approaches.importance import (
    Named,
    PathIntegralPenalty,
    fisher_objective,
    mix,
    old_share,
    task_importance,
)


class RWalk(PathIntegralPenalty):
    section = "r_walk"
    groups = ("fisher", "scores")

    def penalty_weight(self) -> Named:
        return {n: f + self.store["scores"][n] for n, f in self.store["fisher"].items()}

    def path_loss(self, ctx: TaskContext, step: Step, loss: Loss) -> Tensor:
        if self.settings(ctx).facil_path_loss:
            return F.cross_entropy(torch.cat(step.logits, dim=1).float(), step.y)
        return super().path_loss(ctx, step, loss)

    def update_importance(self, ctx: TaskContext) -> None:
        s = self.settings(ctx)
        current = task_importance(ctx, s.fim_num_samples, lambda g: fisher_objective(s.fim_sampling_type, g),
                                  lambda grad: grad.pow(2))
        fisher = mix(self.store["fisher"], current, old_share(s.alpha, ctx.model, ctx.t))
        moved = self.parameter_change(ctx)
        self.store["fisher"] = fisher
        self.store["scores"] = {n: (v + torch.relu(self.w[n] / (fisher[n] * moved[n] + s.damping))) / 2
                                for n, v in self.store["scores"].items()}
