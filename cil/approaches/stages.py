"""Second training stages (EEIL's balanced fine-tuning, DMC's new-task model and consolidation) as runs of
the shared trainer under a changed config, not as copies of the training loop."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cil.approaches.base import Approach, Split, TaskContext

if TYPE_CHECKING:
    from cil.training import FitReport


def fit_stage(approach: Approach, ctx: TaskContext, train: Split, val: Split, **overrides: Any) -> FitReport:
    """FACIL's schedule (``ctx.trainer.fit``) with some dotted config keys changed for this stage only,
    e.g. ``fit_stage(a, ctx, data, val, **{"train.lr": 0.001, "train.warmup_nepochs": 0})``; extra
    context fields (another model, generator...) go in ``ctx`` itself (``dataclasses.replace``)."""
    if overrides:
        ctx = ctx.with_cfg(ctx.cfg.replace(**overrides))
    return ctx.trainer.fit(approach, ctx, train, val)


def chain_reports(first: FitReport, second: FitReport) -> FitReport:
    """One report for two stages run one after the other: the second stage's epochs numbered on from the
    first's, its best validation loss (the model it leaves is the one kept), the time of both."""
    records = [*first.records, *(dataclasses.replace(r, epoch=first.epochs + r.epoch) for r in second.records)]
    return dataclasses.replace(second, epochs=first.epochs + second.epochs, seconds=first.seconds + second.seconds,
                               records=records)
