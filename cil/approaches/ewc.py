"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017) with FACIL's semantics.

    L = ce_pred + ewc.lamb * sum_i F_i (p_i - p*_i)^2 / 2

over the backbone's parameters, ``p*`` the parameters after the previous task and ``F`` a diagonal Fisher
merged over tasks: ``F <- alpha * F + (1 - alpha) * F_t`` (``ewc.alpha``; -1: old classes / classes
seen), ``F_t`` the squared gradients of the cross-entropy over all heads on task t's training data
against the labels ``ewc.fi_sampling_type`` picks (see :func:`cil.approaches.importance.fisher_objective`).
"""

from __future__ import annotations

from cil.approaches.base import TaskContext
from cil.approaches.importance import ImportancePenalty, Named, fisher_objective, mix, old_share, task_importance


class EWC(ImportancePenalty):
    section = "ewc"
    groups = ("fisher",)

    def penalty_weight(self) -> Named:
        return {n: f / 2 for n, f in self.store["fisher"].items()}

    def update_importance(self, ctx: TaskContext) -> None:
        s = self.settings(ctx)
        current = task_importance(ctx, s.fi_num_samples, lambda g: fisher_objective(s.fi_sampling_type, g),
                                  lambda grad: grad.pow(2))
        self.store["fisher"] = mix(self.store["fisher"], current, old_share(s.alpha, ctx.model, ctx.t))
