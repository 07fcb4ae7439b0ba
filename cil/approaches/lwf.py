"""Learning without Forgetting and the paper's variants, which differ only in loss weights.

The loss is the family's (:func:`cil.approaches.family.formula`, with ``lamb`` = ``loss.lamb`` and joint KD
as its own distillation term). The weights come from the config (the registry's presets fill the ones
left unset); terms with weight 0 are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from cil import losses
from cil.approaches.base import Approach, Loss, Step, TaskContext


class LwF(Approach):
    needs_old_model = True

    def train_parameters(self, ctx: TaskContext) -> Iterable[nn.Parameter]:
        """FACIL's LwF: without exemplars the old heads are left as they are (backbone + new head only)."""
        if ctx.t > 0 and ctx.memory.size == 0:
            return [*ctx.model.backbone.parameters(), *ctx.model.heads[ctx.t].parameters()]
        return ctx.model.parameters()

    def distillation_weight(self, ctx: TaskContext) -> float:
        """The weight of the family's distillation terms: LwF's ``loss.lamb`` (LwM's ``lwm.beta``)."""
        return ctx.cfg.loss.lamb

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        w, t, lamb = ctx.cfg.loss, ctx.t, self.distillation_weight(ctx)
        ce = self.prediction_loss(ctx, step)
        terms = {"ce_pred": ce}
        loss = ce
        if w.w_bce_pred and (w.bce_pred_with_exemplars or ctx.memory.size == 0):
            # The current head only; with exemplars, old-class samples are negatives for it.
            terms["bce_pred"] = losses.bce_pred(step.logits[t], step.y - ctx.offset)
            loss = loss + w.w_bce_pred * terms["bce_pred"]
        if t == 0 or step.old_logits is None or not lamb:
            return Loss(loss, terms)
        new_old, old = step.logits[:t], step.old_logits[:t]
        distill = losses.family_distillation(new_old, old, w, ("kd_joint", lambda: losses.kd_joint(new_old, old, w.T)),
                                             terms)
        return Loss(loss + lamb * distill, terms)
