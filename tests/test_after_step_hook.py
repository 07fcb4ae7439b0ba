"""The ``after_step`` hook: once per training batch, after the optimizer step, never in the warm-up."""

from __future__ import annotations

import pytest
import torch

import cil.loop as run_module
from cil.approaches.base import Approach
from cil.config import ExperimentConfig
from cil.loop import run


class StepCounter(Approach):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.losses = 0
        self.steps: list[int] = []
        self.moved: list[bool] = []

    def loss(self, ctx, step):
        if torch.is_grad_enabled():  # a training batch (validation runs under inference mode)
            self.losses += 1
            step.extras["before"] = ctx.model.backbone.convs[0].weight.detach().clone()
        return super().loss(ctx, step)

    def after_step(self, ctx, step, loss):
        assert loss.total.requires_grad and "ce_pred" in loss.terms
        self.moved.append(not torch.equal(ctx.model.backbone.convs[0].weight, step.extras["before"]))
        self.steps.append(ctx.t)


@pytest.fixture
def counter(monkeypatch):
    made = []
    monkeypatch.setattr(run_module, "make_approach", lambda cfg: made.append(StepCounter(cfg)) or made[-1])
    return made


def test_after_step_runs_once_per_training_batch_after_the_update(counter):
    cfg = ExperimentConfig.from_dict({"data.dataset": "digits", "data.num_tasks": 2, "train.nepochs": 1,
                                      "train.warmup_nepochs": 1, "run.device": "cpu", "approach": "finetuning",
                                      "train.batch_size": 128})
    list(run(cfg))
    a = counter[0]
    assert a.losses == len(a.steps) > 0          # one per training batch; the warm-up uses warmup_loss
    assert a.steps == sorted(a.steps) and set(a.steps) == {0, 1}
    assert all(a.moved)                          # the optimizer step happened before the hook


def test_after_epoch_sees_every_training_epoch_and_changes_nothing():
    cfg = ExperimentConfig.from_dict({"data.dataset": "digits", "data.num_tasks": 2, "train.nepochs": 3,
                                      "train.warmup_nepochs": 1, "run.device": "cpu", "approach": "lwf",
                                      "train.batch_size": 128, "train.lr_patience": 10})
    seen = []
    with_hook = list(run(cfg, after_epoch=lambda ctx, record: seen.append((ctx.t, record))))
    plain = list(run(cfg))
    assert [(t, r.epoch) for t, r in seen] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]  # no warm-up
    assert [r.train_loss for _, r in seen] == [row["train_loss"] for res in with_hook for row in res.epoch_rows]
    assert [r.metrics for r in with_hook] != [] and all(  # the hook only watches: same numbers
        a.acc_tag.tolist() == b.acc_tag.tolist() for a, b in zip(with_hook, plain, strict=True))
