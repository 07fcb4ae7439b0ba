"""BiC: the bias layers, the held-out split of the exemplars, the adaptive weight, config checks, resume."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cil.approaches.base import Step
from cil.approaches.bic import BiC, exemplar_quotas
from cil.config import ConfigError, ExperimentConfig
from cil.loop import Experiment, run
from cil.memory import ExemplarMemory

FAST = {"approach": "bic", "data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet",
        "train.nepochs": 1, "memory.num_exemplars": 60, "bic.num_bias_epochs": 30, "run.device": "cpu"}
TIMING = ["train_seconds"]


def test_a_bias_layer_changes_only_its_own_tasks_scores():
    approach = BiC(ExperimentConfig.from_dict(FAST))
    approach.alpha, approach.beta = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([0.0, 0.5, 0.0])
    logits = [torch.randn(4, 3), torch.randn(4, 2), torch.randn(4, 3)]
    step = Step(torch.zeros(4), torch.zeros(4, dtype=torch.long), logits, torch.zeros(4, 8))
    scores = approach.eval_scores(None, step)
    assert list(scores) == ["bic", "heads"] and scores["heads"] is logits
    assert torch.equal(scores["bic"][0], logits[0]) and torch.equal(scores["bic"][2], logits[2])
    assert torch.allclose(scores["bic"][1], 2 * logits[1] + 0.5)


def test_quotas_follow_facil():
    total = ExemplarMemory(num_exemplars=60)
    assert exemplar_quotas(total, 4, 0.1) == (2, 13)   # floor(60 / 4) = 15: ceil(1.5) held out
    assert exemplar_quotas(total, 7, 0.1) == (1, 7)    # floor(60 / 7) = 8
    assert exemplar_quotas(ExemplarMemory(num_exemplars_per_class=20), 9, 0.25) == (5, 15)
    assert exemplar_quotas(total, 4, 0.0) == (0, 15)


def test_adaptive_lamb_weighs_ce_by_new_and_kd_by_old_classes():
    cfg = ExperimentConfig.from_dict(FAST)
    approach = BiC(cfg)
    approach.alpha, approach.beta = torch.tensor([1.5, 1.0]), torch.tensor([0.2, 0.0])
    logits, old = [torch.randn(5, 4), torch.randn(5, 3)], [torch.randn(5, 4), torch.randn(5, 3)]
    y = torch.tensor([0, 4, 5, 6, 2])
    ctx = SimpleNamespace(t=1, cfg=cfg, num_old_classes=4, num_new_classes=3)
    loss = approach.loss(ctx, Step(torch.zeros(5), y, logits, torch.zeros(5, 8), old_logits=old))
    ce = F.cross_entropy(torch.cat([1.5 * logits[0] + 0.2, logits[1]], 1), y)
    p_old = F.softmax((1.5 * old[0] + 0.2) / 2, 1)
    p_new = F.softmax((1.5 * logits[0] + 0.2) / 2, 1)
    p_new = (p_new + 1e-5 / 4) / (p_new + 1e-5 / 4).sum(1, keepdim=True)
    kd = -(p_old * p_new.log()).sum(1).mean()
    assert torch.allclose(loss.total, 3 / 7 * ce + 4 / 7 * kd, atol=1e-6)
    fixed = BiC(cfg.replace(**{"bic.lamb": 2.0}))
    fixed.alpha, fixed.beta = approach.alpha, approach.beta
    loss2 = fixed.loss(SimpleNamespace(t=1, cfg=cfg.replace(**{"bic.lamb": 2.0}), num_old_classes=4,
                                       num_new_classes=3), Step(torch.zeros(5), y, logits, torch.zeros(5, 8),
                                                                old_logits=old))
    assert torch.allclose(loss2.total, ce + 2 * kd, atol=1e-6)


@pytest.mark.parametrize("over, fragment", [
    ({"memory.num_exemplars": 0}, "needs exemplars"),
    ({"bic.lamb": -0.5}, "bic.lamb = -0.5 is not valid: must be -1 or >= 0"),
    ({"bic.val_exemplar_percentage": 1.5}, "must be in [0, 1]"),
    ({"bic.num_bias_epochs": -1}, "bic.num_bias_epochs = -1"),
])
def test_bad_bic_config_is_refused_before_work(over, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ExperimentConfig.from_dict(FAST | over)


def test_held_out_exemplars_leave_training_and_only_the_new_bias_layer_trains():
    exp = Experiment(ExperimentConfig.from_dict(FAST))
    alphas = []
    for t in range(3):
        ctx = exp.begin_task(t)
        a = exp.approach
        a.before_task(ctx)
        train_x, train_y = a.training_set(ctx)
        task_x, task_y = ctx.task_data("train")
        seen = ctx.offset + ctx.num_new_classes
        held, quota = exemplar_quotas(exp.memory, seen, 0.1)
        assert a.held_y.tolist() == [c for c in range(seen) for _ in range(held)]
        assert len(train_y) == len(task_y) - held * ctx.num_new_classes + exp.memory.size
        # the new classes' held-out samples are their first training samples, absent from training
        new_held = a.held_x[a.held_y >= ctx.offset].flatten(1)
        first = torch.cat([task_x[task_y == c][:held] for c in range(ctx.offset, seen)]).flatten(1)
        assert torch.equal(new_held, first)
        assert not (train_x[: len(task_y) - held * ctx.num_new_classes].flatten(1)[:, None]
                    == new_held[None]).all(-1).any()
        report = a.fit(ctx, (train_x, train_y), a.validation_set(ctx))
        assert ("kd_joint" in report.records[-1].terms) == (t > 0)
        a.after_fit(ctx)
        a.update_memory(ctx)
        assert exp.memory.class_counts() == {c: quota for c in range(seen)}
        alphas.append((a.alpha.clone(), a.beta.clone()))
    assert alphas[0] == (torch.ones(1), torch.zeros(1))  # no bias stage after task 0
    for t in (1, 2):
        alpha, beta = alphas[t]
        assert torch.equal(alpha[:t], alphas[t - 1][0]) and torch.equal(beta[:t], alphas[t - 1][1])
        assert alpha[t] != 1 and beta[t] != 0  # trained on the held-out set


def test_stop_after_task_1_and_resume_gives_the_uninterrupted_matrices(tmp_path):
    cfg = ExperimentConfig.from_dict(FAST)
    full = list(run(cfg))
    torch.save(full[1].state, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["approach"]["alpha"].shape == (2,) and len(state["approach"]["held_y"]) == 7
    resumed = list(run(cfg, state=state))
    assert len(resumed) == 1
    for name in ("acc_taw", "acc_tag"):
        assert (getattr(resumed[0], name) == getattr(full[2], name)).all()
    for name, mat in full[2].acc_other.items():
        assert (resumed[0].acc_other[name] == mat).all()
    assert torch.equal(resumed[0].state["approach"]["alpha"], full[2].state["approach"]["alpha"])
    rows = pd.DataFrame([*full[0].task_rows, *full[1].task_rows, *resumed[0].task_rows]).drop(columns=TIMING)
    pd.testing.assert_frame_equal(rows, pd.DataFrame([r for x in full for r in x.task_rows]).drop(columns=TIMING))
