"""Freezing: train everything on the first task, then only each new head on a frozen backbone."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cil.approaches.base import Approach
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet

FREEZE_AFTER = 0  # FACIL's default: the backbone is frozen after task 0


class Freezing(Approach):
    name = "freezing"

    def train_parameters(self, model: IncrementalNet, t: int, memory: ExemplarMemory) -> Iterable[torch.nn.Parameter]:
        if t <= FREEZE_AFTER:
            return model.parameters()
        if self.use_all_outputs(memory):  # FACIL: with exemplars every head is scored, so every head trains
            return model.heads.parameters()
        return model.heads[t].parameters()

    def before_task(self, t: int, model: IncrementalNet) -> None:
        if t > FREEZE_AFTER:
            model.freeze_backbone()  # no gradients computed for weights that will not move

    def set_train_mode(self, model: IncrementalNet, t: int) -> None:
        model.train()
        if t > FREEZE_AFTER:
            model.backbone.eval()  # frozen features: BatchNorm statistics stay as after task 0
