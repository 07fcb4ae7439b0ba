"""Joint training: the upper bound, all data of the tasks seen so far, scored over all heads."""

from __future__ import annotations

from cil.approaches.base import Approach, Split, TaskContext


def _union(ctx: TaskContext, split: str) -> Split:
    """Tasks 0..t's samples as one split, taken at once (earlier tasks come from the decoded-image cache)
    and placed by its total size: the whole training set of a large data set stays on the host."""
    return ctx.scenario.union_split(range(ctx.t + 1), split)


class Joint(Approach):
    uses_memory = False

    def use_all_outputs(self, ctx: TaskContext) -> bool:
        return True

    def training_set(self, ctx: TaskContext) -> Split:
        return _union(ctx, "train")

    def validation_set(self, ctx: TaskContext) -> Split:
        return _union(ctx, "val")
