"""FACIL's switches in the shared loop: train.fix_bn, train.eval_on_train, train.multi_softmax, run.stop_at_task."""

import math

import pytest
import torch

from cil import ExperimentConfig, run
from cil.approaches.base import train_task
from cil.config import ConfigError
from cil.loop import Experiment
from cil.metrics import task_accuracies

FAST = {"approach": "finetuning", "data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet",
        "train.nepochs": 2, "train.lr_patience": 2, "run.device": "cpu"}


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items() if "running_" in k or "num_batches" in k}


def _train_two_tasks(**over):
    """Tasks 0 and 1 trained through the loop's hooks, with the BatchNorm buffers and the first conv's weights
    before task 0, before task 1 and after it."""
    exp = Experiment(ExperimentConfig.from_dict(FAST | over))
    bn, conv, reports = [], [], []
    for t in range(2):
        ctx = exp.begin_task(t)
        bn.append(_bn_buffers(exp.model))
        conv.append(exp.model.backbone.convs[0].weight.detach().clone())
        reports.append(train_task(exp.approach, ctx))
    bn.append(_bn_buffers(exp.model))
    conv.append(exp.model.backbone.convs[0].weight.detach().clone())
    return {"exp": exp, "ctx": ctx, "bn": bn, "conv": conv, "reports": reports}


@pytest.fixture(scope="module")
def plain():
    return _train_two_tasks()


@pytest.fixture(scope="module")
def switched():
    return _train_two_tasks(**{"train.fix_bn": True, "train.eval_on_train": True})


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_fix_bn_freezes_batchnorm_statistics_after_the_first_task(plain, switched):
    for r in (plain, switched):  # task 0 always updates them; the backbone trains in task 1 either way
        assert not _same(r["bn"][0], r["bn"][1])
        assert not torch.equal(r["conv"][1], r["conv"][2])
    assert _same(switched["bn"][1], switched["bn"][2])
    assert not _same(plain["bn"][1], plain["bn"][2])


def test_switches_leave_the_first_task_unchanged(plain, switched):
    """fix_bn starts at task 1 and eval_on_train only measures: task 0 trains to the same numbers."""
    a, b = plain["reports"][0].records, switched["reports"][0].records
    assert [(r.train_loss, r.val_loss, r.val_acc_taw) for r in a] == [(r.train_loss, r.val_loss, r.val_acc_taw)
                                                                       for r in b]
    assert torch.equal(plain["conv"][1], switched["conv"][1])


def test_eval_on_train_records_training_set_loss_and_accuracy(plain, switched):
    for report in plain["reports"]:
        assert all(math.isnan(r.train_eval_loss) and math.isnan(r.train_eval_acc_taw) for r in report.records)
    for report in switched["reports"]:
        assert len(report.records) == 2
        assert all(math.isfinite(r.train_eval_loss) and 0 <= r.train_eval_acc_taw <= 1 for r in report.records)
    assert switched["reports"][0].records[-1].train_eval_acc_taw > 0.8
    # the restored (best-on-validation) model measured again on the training set gives that epoch's record
    exp, ctx, report = switched["exp"], switched["ctx"], switched["reports"][1]
    best = next(r for r in report.records if r.val_loss == report.best_val_loss)
    train = exp.approach.training_set(ctx)
    loss_sum, hits = exp.trainer.validate(exp.approach, ctx, train).tolist()
    assert loss_sum / len(train[1]) == pytest.approx(best.train_eval_loss, rel=1e-5)
    assert hits / len(train[1]) == pytest.approx(best.train_eval_acc_taw)


def test_multi_softmax_compares_heads_by_their_log_softmax():
    """Head 0 is confident in class 0; head 1 has the largest raw score (6.0) but is unsure between its two
    classes: raw scores pick class 2, one softmax per task picks class 0."""
    logits = [torch.tensor([[5.0, 0.0]]), torch.tensor([[6.0, 5.9]])]
    target, offsets = torch.tensor([0]), [0, 2]
    assert [int(v) for v in task_accuracies(logits, target, offsets, 0)] == [1, 0]
    assert [int(v) for v in task_accuracies(logits, target, offsets, 0, multi_softmax=True)] == [1, 1]


def test_multi_softmax_reaches_the_evaluation(plain):
    exp, ctx = plain["exp"], plain["ctx"]
    tests = [exp.scenario.task_split(u, "test") for u in range(2)]
    multi = ctx.with_cfg(ctx.cfg.replace(**{"train.multi_softmax": True}))
    taw, tag = exp.trainer.evaluate(exp.approach, ctx, tests)
    taw_m, tag_m = exp.trainer.evaluate(exp.approach, multi, tests)
    assert taw_m == taw  # argmax within a head does not change
    exp.model.eval()
    with torch.inference_mode():
        for u, (x, y) in enumerate(tests):
            heads = exp.model(exp.trainer.inputs(x))
            pred = torch.cat([torch.log_softmax(h.float(), dim=1) for h in heads], dim=1).argmax(dim=1)
            assert tag_m[u] == pytest.approx((pred == y).float().mean().item())


@pytest.mark.parametrize("approach", ["icarl", "il2m"])
def test_multi_softmax_follows_facil_for_icarl_and_il2m(approach):
    """FACIL's iCaRL classifies by the nearest mean whatever --multi-softmax says; FACIL's IL2M takes
    each head's log-softmax first, then rectifies. Both approaches' plain-heads columns get the flag."""
    from cil.approaches.il2m import rectify

    run = _train_two_tasks(approach=approach, **{"memory.num_exemplars": 40})
    exp, ctx = run["exp"], run["ctx"]
    tests = [exp.scenario.task_split(u, "test") for u in range(2)]
    multi = ctx.with_cfg(ctx.cfg.replace(**{"train.multi_softmax": True}))
    plain = exp.trainer.evaluate_named(exp.approach, ctx, tests)
    soft = exp.trainer.evaluate_named(exp.approach, multi, tests)
    own = "nme" if approach == "icarl" else "il2m"
    exp.model.eval()
    with torch.inference_mode():
        for u, (x, y) in enumerate(tests):
            heads = [h.float() for h in exp.model(exp.trainer.inputs(x))]
            logsm = torch.cat([torch.log_softmax(h, dim=1) for h in heads], dim=1)
            assert soft["heads"][1][u] == pytest.approx((logsm.argmax(dim=1) == y).float().mean().item())
            if approach == "il2m":
                factors = exp.approach.factors(list(exp.model.task_cls))
                pred = rectify(logsm, factors).argmax(dim=1)
                assert soft[own][1][u] == pytest.approx((pred == y).float().mean().item())
    if approach == "icarl":
        assert soft[own] == plain[own]  # the nearest-mean scores are left alone


def test_stop_at_task_yields_the_first_k_tasks_and_a_later_run_continues():
    cfg = ExperimentConfig.from_dict(FAST | {"data.num_tasks": 3, "train.nepochs": 1, "run.stop_at_task": 2})
    results = list(run(cfg))
    assert [r.task for r in results] == [0, 1]
    assert {row["num_tasks"] for r in results for row in r.task_rows} == {3}  # the scenario's, not the stop
    assert results[-1].metrics["num_tasks"] == 3 and results[-1].state["next_task"] == 2
    rest = list(run(cfg.replace(**{"run.stop_at_task": 0}), state=results[-1].state))
    assert [r.task for r in rest] == [2]


@pytest.mark.parametrize("value", [-1, 3])
def test_stop_at_task_outside_the_scenario_is_a_config_error(value):
    with pytest.raises(ConfigError, match=rf"run.stop_at_task = {value} is not valid: must be in \[0, "
                                          r"data.num_tasks = 2\]"):
        ExperimentConfig.from_dict(FAST | {"run.stop_at_task": value})


def test_a_sweep_trial_stopped_early_reports_its_last_task_as_final():
    """Tune's searcher and ASHA read ``final_task``: with run.stop_at_task it is the stop, not num_tasks."""
    from tune.trainable import seed_mean

    cfg = ExperimentConfig.from_dict(FAST | {"data.num_tasks": 3, "run.stop_at_task": 2, "train.nepochs": 1})
    reports = [seed_mean((r,)) for r in run(cfg)]
    assert [r["final_task"] for r in reports] == [False, True] and reports[-1]["num_tasks"] == 3
