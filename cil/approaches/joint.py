"""Joint training: the upper bound, all data of the tasks seen so far, scored over all heads."""

from __future__ import annotations

import torch

from cil.approaches.base import Approach, Split, TaskContext


def _union(ctx: TaskContext, split: str) -> Split:
    parts = [ctx.scenario.task_split(u, split) for u in range(ctx.t + 1)]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


class Joint(Approach):
    uses_memory = False

    def use_all_outputs(self, ctx: TaskContext) -> bool:
        return True

    def training_set(self, ctx: TaskContext) -> Split:
        return _union(ctx, "train")

    def validation_set(self, ctx: TaskContext) -> Split:
        return _union(ctx, "val")
