"""Freezing: train everything on the first task, then only each new head on a frozen backbone."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from cil.approaches.base import Approach, TaskContext

FREEZE_AFTER = 0  # FACIL's default: the backbone is frozen after task 0


class Freezing(Approach):
    def train_parameters(self, ctx: TaskContext) -> Iterable[nn.Parameter]:
        if ctx.t <= FREEZE_AFTER:
            return ctx.model.parameters()
        if self.use_all_outputs(ctx):  # FACIL: with exemplars every head is scored, so every head trains
            return ctx.model.heads.parameters()
        return ctx.model.heads[ctx.t].parameters()

    def before_task(self, ctx: TaskContext) -> None:
        if ctx.t > FREEZE_AFTER:
            ctx.model.freeze_backbone()  # no gradients computed for weights that will not move

    def set_train_mode(self, ctx: TaskContext) -> None:
        ctx.model.train()
        if ctx.t > FREEZE_AFTER:
            ctx.model.backbone.eval()  # frozen features: BatchNorm statistics stay as after task 0
