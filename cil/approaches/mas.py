"""Memory Aware Synapses (Aljundi et al., ECCV 2018; the global version) with FACIL's semantics.

    L = ce_pred + mas.lamb * sum_i Omega_i (p_i - p*_i)^2 / 2

over the backbone's parameters, ``p*`` the parameters after the previous task and ``Omega`` merged over
tasks like EWC's Fisher (``mas.alpha``), ``Omega_t`` the absolute gradients of the L2 norm of the outputs
(all heads; no labels needed) on task t's training data. As in FACIL, the norm itself, not its square.
"""

from __future__ import annotations

from cil.approaches.base import TaskContext
from cil.approaches.importance import ImportancePenalty, Named, mix, old_share, output_norm, task_importance


class MAS(ImportancePenalty):
    section = "mas"

    def penalty_weight(self) -> Named:
        return {n: v / 2 for n, v in self.store["importance"].items()}

    def update_importance(self, ctx: TaskContext) -> None:
        s = self.settings(ctx)
        current = task_importance(ctx, s.fi_num_samples, lambda g: output_norm, lambda grad: grad.abs())
        self.store["importance"] = mix(self.store["importance"], current, old_share(s.alpha, ctx.model, ctx.t))
