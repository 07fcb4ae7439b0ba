"""Learning without Forgetting and the paper's variants, which differ only in loss weights.

L = ce_pred + w_bce_pred * bce_pred + lamb * (w_joint * kd_joint + w_task * kd_task + w_bce_kd * bce_kd)
The weights come from the config (cil.presets fills the ones left unset); terms with weight 0 are skipped.
"""

from __future__ import annotations

import torch

from cil import losses
from cil.approaches.base import Approach
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet


class LwF(Approach):
    name = "lwf"
    needs_old_model = True

    def train_parameters(self, model: IncrementalNet, t: int, memory: ExemplarMemory):
        """FACIL's LwF: without exemplars the old heads are left as they are (backbone + new head only)."""
        if t > 0 and memory.size == 0:
            return [*model.backbone.parameters(), *model.heads[t].parameters()]
        return model.parameters()

    def criterion(self, t: int, outputs: list[torch.Tensor], targets: torch.Tensor,
                  old_outputs: list[torch.Tensor] | None, offset: int, all_outputs: bool) -> torch.Tensor:
        w = self.cfg.loss
        loss = self.prediction_loss(t, outputs, targets, offset, all_outputs)
        if w.w_bce_pred:
            # DESIGN.md: the current head only; with exemplars, old-class samples are negatives for it.
            loss = loss + w.w_bce_pred * losses.bce_pred(outputs[t], targets - offset)
        if t == 0 or old_outputs is None or not w.lamb:
            return loss
        new_old, old = outputs[:t], old_outputs[:t]
        distill = 0.0
        if w.w_joint:
            distill = distill + w.w_joint * losses.kd_joint(new_old, old, w.T)
        if w.w_task:
            distill = distill + w.w_task * losses.kd_task(new_old, old, w.T)
        if w.w_bce_kd:
            distill = distill + w.w_bce_kd * losses.bce_kd(new_old, old)
        return loss + w.lamb * distill
