"""EEIL: the second stage fine-tunes on a class-balanced set at lr * lr_finetuning_factor; which heads are
distilled in each stage (and FACIL's off-by-one); the gradient noise."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from cil.approaches.base import Step, train_task
from cil.approaches.eeil import EEIL, softmax_bce
from cil.config import ExperimentConfig
from cil.loop import Experiment, run
from cil.training import Trainer

CFG = {"approach": "eeil", "data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet",
       "train.nepochs": 1, "eeil.nepochs_finetuning": 2, "memory.num_exemplars": 60, "run.device": "cpu"}


def _fits(**over):
    """Run EEIL, recording every call of the shared trainer: task, class counts, lr, epochs, warm-up."""
    calls = []
    real = Trainer.fit

    def recording(self, approach, ctx, train, val):
        tc = ctx.cfg.train
        calls.append((ctx.t, Counter(train[1].tolist()), tc.lr, tc.nepochs, tc.warmup_nepochs, approach.balanced))
        return real(self, approach, ctx, train, val)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "fit", recording)
        results = list(run(ExperimentConfig.from_dict(CFG | over)))
    return calls, results


PUBLISHED = {"train.warmup_nepochs": 1}


@pytest.fixture(scope="module")
def published():
    return _fits(**PUBLISHED)


def test_balanced_finetuning_stage(published):
    calls, results = published
    assert [(t, balanced) for t, *_, balanced in calls] == [(0, False), (1, False), (1, True), (2, False), (2, True)]
    for t, counts, lr, nepochs, warmup, balanced in calls:
        seen = results[t].metrics["classes_seen"]
        if not balanced:
            assert (lr, nepochs, warmup) == (0.1, 1, 1)
            continue
        assert (lr, nepochs, warmup) == (pytest.approx(0.1 * 0.01), 2, 0)
        assert sorted(counts) == list(range(seen))  # old and new classes
        assert len(set(counts.values())) == 1, counts  # all equally represented
    # the stages' epochs are chained in the task's report
    assert [r.epoch for r in results[2].fit.records] == [1, 2, 3]
    assert [r.lr for r in results[2].fit.records] == [0.1, pytest.approx(0.001), pytest.approx(0.001)]


def test_facil_finetuning_set_is_unbalanced_and_first_stage_skips_the_last_old_head(published):
    calls, results = _fits(**{"eeil.facil_finetuning": True})
    counts = calls[-1][1]  # task 2: memory of 7 classes, 9 each; 63 random samples of 3 new classes
    assert sum(counts.values()) == 2 * 63 and len(set(counts.values())) > 1
    assert "kd" not in results[1].fit.records[0].terms  # FACIL: no distillation at all in task 1's stage 1
    assert "kd" in published[1][1].fit.records[0].terms


@pytest.mark.parametrize("facil, balanced, heads", [
    (False, False, [0, 1]), (False, True, [0, 1, 2]), (True, False, [0]), (True, True, [0, 1])])
def test_distilled_heads(facil, balanced, heads):
    cfg = ExperimentConfig.from_dict(CFG | {"eeil.facil_finetuning": facil})
    approach = EEIL(cfg)
    approach.balanced = balanced

    class Ctx:
        t = 2

    Ctx.cfg = cfg
    logits = [torch.full((4, 3), float(h)) for h in range(3)]
    step = Step(torch.zeros(4), torch.zeros(4), logits, torch.zeros(4, 2), old_logits=logits[:2])
    if balanced and not facil:
        step.extras["stage1_logits"] = logits[2]
    pairs = approach.distillation_pairs(Ctx, step)
    assert [int(student[0, 0]) for student, _ in pairs] == heads


def test_softmax_bce_matches_torch():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    expected = torch.nn.functional.binary_cross_entropy(torch.softmax(a / 2, 1), torch.softmax(b / 2, 1))
    assert float(softmax_bce(a, b, 2.0)) == pytest.approx(float(expected), rel=1e-5)


def _first_task(**over):
    exp = Experiment(ExperimentConfig.from_dict(CFG | over))
    train_task(exp.approach, exp.begin_task(0))
    return exp.model


def test_noise_grad_changes_training_deterministically_and_leaves_no_hooks():
    noise = {"eeil.noise_grad": True}
    plain, noisy, again = _first_task(), _first_task(**noise), _first_task(**noise)
    assert not torch.equal(plain.backbone.fc.weight, noisy.backbone.fc.weight)
    assert torch.equal(noisy.backbone.fc.weight, again.backbone.fc.weight)
    assert not any(p._backward_hooks for p in noisy.parameters())


def test_resume_after_task_1_gives_the_uninterrupted_matrices(published, tmp_path):
    results = published[1]
    torch.save(results[1].state, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = list(run(ExperimentConfig.from_dict(CFG | PUBLISHED), state=state))
    assert [r.task for r in resumed] == [2]
    assert (resumed[-1].acc_taw == results[-1].acc_taw).all() and (resumed[-1].acc_tag == results[-1].acc_tag).all()


def test_balanced_herding_picks_each_new_classs_herding_order():
    from cil.memory import herding_order

    exp = Experiment(ExperimentConfig.from_dict(CFG | {"eeil.balanced_herding": True, "eeil.nepochs_finetuning": 0}))
    train_task(exp.approach, exp.begin_task(0))
    ctx = exp.begin_task(1)
    x, y = ctx.task_data("train")
    bx, by = exp.approach.balanced_set(ctx)
    m = min(ctx.memory.class_counts().values())
    feats = EEIL._features(ctx, x)
    for c in range(ctx.offset, ctx.offset + ctx.num_new_classes):
        idx = torch.nonzero(y == c).flatten()
        assert torch.equal(bx[by == c], x[idx[herding_order(feats[idx], m)]])


def _balanced_stage(**over):
    """Task 1's balanced stage: (val loss, lr, model state) after each of its epochs, and the model it left."""
    epochs, left = [], []
    real = Trainer.fit

    def after_epoch(ctx, record):
        epochs.append((record.val_loss, record.lr, {k: v.clone() for k, v in ctx.model.state_dict().items()}))

    def recording(self, approach, ctx, train, val):
        start = len(epochs)
        report = real(self, approach, ctx, train, val)
        if approach.balanced:
            left.append((epochs[start:], {k: v.clone() for k, v in ctx.model.state_dict().items()}))
        return report

    # a set where the new task's CE gets worse during the balanced stage, as on the ordering preset's
    cfg = CFG | {"data.dataset": "synthetic:classes=20,channels=1,size=8,train=40", "data.num_tasks": 2,
                 "train.nepochs": 12, "memory.num_exemplars": 20, "eeil.nepochs_finetuning": 5,
                 "train.lr_patience": 1} | over
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "fit", recording)
        list(run(ExperimentConfig.from_dict(cfg), after_epoch=after_epoch))
    assert len(left) == 1
    return left[0]


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_balanced_stage_runs_every_epoch_and_keeps_the_last_and_facils_selection_its_best():
    """The paper's fixed schedule by default; FACIL's (lr decay on a plateau of the new task's CE, the
    best epoch restored) with eeil.balanced_model_selection, which keeps an earlier, less balanced model."""
    epochs, kept = _balanced_stage()
    assert len(epochs) == 5 and len({lr for _, lr, _ in epochs}) == 1
    assert _same(kept, epochs[-1][2])

    facil_epochs, facil_kept = _balanced_stage(**{"eeil.balanced_model_selection": True})
    losses = [loss for loss, _, _ in facil_epochs]
    assert losses[0] == epochs[0][0]  # the same first epoch: only the schedule differs
    assert len({lr for _, lr, _ in facil_epochs}) > 1  # a plateau decayed the lr and reloaded the best model
    assert _same(facil_kept, facil_epochs[losses.index(min(losses))][2])
    assert not _same(facil_kept, kept)
