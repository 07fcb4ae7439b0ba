"""FACIL's grid search: its decisions (by hand and against the trace of a real run), the values carried
across tasks and through a resume, the search leaving the task's own training untouched, its config
checks, CLI flags, Parquet columns and preset."""

from __future__ import annotations

import json
import os
import typing

import pandas as pd
import pytest
import torch
import yaml

from cil import ExperimentConfig, run
from cil.approaches.base import train_task
from cil.approaches.registry import SECTIONS, SPECS
from cil.config import _LEAVES, ConfigError, GridSearchConfig
from cil.gridsearch import decay_knob, finetuning_config, lr_candidates, pick_lr
from cil.loop import Experiment
from cil.results_schema import GRIDSEARCH_COLUMNS as COLUMNS
from cil.results_schema import ROW_COLUMNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"data.dataset": "digits", "model.network": "convnet", "train.nepochs": 1, "train.lr_patience": 1,
         "run.device": "cpu", "approach": "lwf", "gridsearch.lr_first": [0.1, 0.05],
         "gridsearch.lr": [0.05, 0.02, 0.01]}
# acc_drop_thr 0 and a start that swamps the cross-entropy make the decay run (checked); 5 tasks of 2
# classes, of which the tests train the first 2 or 3.
SEARCH = SMALL | {"data.num_tasks": 5, "train.gridsearch_tasks": 3, "gridsearch.lr_searches": 1,
                  "gridsearch.max_num_searches": 2, "gridsearch.acc_drop_thr": 0.0, "gridsearch.knob_start": 1e5}
VOLATILE = ["train_seconds", "gridsearch_seconds"]


# ---- the decisions, by hand ---------------------------------------------------------------------------

def test_decay_keeps_the_first_value_within_the_threshold():
    accs = {10.0: 0.5, 5.0: 0.7, 2.5: 0.81, 1.25: 0.9}
    value, trials = decay_knob(10.0, 0.5, 7, 0.8, accs.__getitem__)
    assert value == 2.5 and [t.value for t in trials] == [10.0, 5.0, 2.5]
    value, trials = decay_knob(10.0, 0.5, 7, 0.5, accs.__getitem__)  # at the floor counts as within
    assert value == 10.0 and len(trials) == 1


def test_decay_after_the_last_search_takes_one_more_step_untested():
    value, trials = decay_knob(8.0, 0.5, 3, 0.9, lambda v: 0.0)
    assert [t.value for t in trials] == [8.0, 4.0, 2.0] and value == 1.0


def test_lr_pick_is_the_best_and_the_first_on_ties_even_at_zero():
    assert pick_lr([0.5, 0.1, 0.05], {0.5: 0.2, 0.1: 0.6, 0.05: 0.6}.__getitem__)[:2] == (0.1, 0.6)
    assert pick_lr([0.5, 0.1], lambda lr: 0.0)[0] == 0.5  # FACIL would train at lr 0


def test_lr_candidates_task_0_then_the_largest_below_task_0s_choice():
    g = GridSearchConfig()
    assert lr_candidates(g, 0, None) == [0.5, 0.1, 0.05]
    assert lr_candidates(g, 3, 0.5) == [0.1, 0.05, 0.01]
    assert lr_candidates(g, 1, 0.1) == [0.05, 0.01, 0.005]  # strictly below
    assert lr_candidates(GridSearchConfig(lr=[0.001, 0.01, 0.05], lr_searches=2), 1, 0.1) == [0.05, 0.01]


# ---- a real run -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched_run(tmp_path_factory):
    """Tasks 0-2 of the uninterrupted run, and its state after task 1 saved and loaded back."""
    path = tmp_path_factory.mktemp("gs") / "state.pt"
    results = _first(run(ExperimentConfig.from_dict(SEARCH)), 3)
    torch.save(results[1].state, path)
    return results, torch.load(path, weights_only=True)


def _first(results, n):
    """The first n tasks of a run (the generator stops there)."""
    return [r for _, r in zip(range(n), results, strict=False)]


def test_decisions_follow_the_protocol_on_the_recorded_trace(searched_run):
    results, _ = searched_run
    g = ExperimentConfig.from_dict(SEARCH).gridsearch
    lr_first = None
    for r in results:
        s, t = r.gridsearch, r.task
        assert s.searched and s.knob == "loss.lamb"
        assert [tr.value for tr in s.lr_trials] == lr_candidates(g, t, lr_first)
        best = max(tr.val_acc for tr in s.lr_trials)
        assert s.lr == next(tr.value for tr in s.lr_trials if tr.val_acc == best) and s.ft_acc == best
        lr_first = lr_first or s.lr
        if t == 0:  # nothing to forget: the knob keeps its config value
            assert s.knob_trials == [] and s.knob_value == 1.0
            continue
        floor = (1 - g.acc_drop_thr) * s.ft_acc
        values = [tr.value for tr in s.knob_trials]
        assert values == [g.knob_start * g.hparam_decay ** i for i in range(len(values))]
        assert all(tr.val_acc < floor for tr in s.knob_trials[:-1])
        if s.knob_trials[-1].val_acc >= floor:
            assert s.knob_value == values[-1]
        else:
            assert len(values) == g.max_num_searches and s.knob_value == values[-1] * g.hparam_decay
    decays = [len(r.gridsearch.knob_trials) for r in results[1:]]
    assert max(decays) > 1, "the test config should make the decay run"
    rows = pd.DataFrame([row for r in results for row in r.task_rows])
    per_task = rows.groupby("task")[["gridsearch_lr", "gridsearch_knob_value"]].first()
    assert per_task["gridsearch_lr"].tolist() == [r.gridsearch.lr for r in results]
    assert per_task["gridsearch_knob_value"].tolist() == [r.gridsearch.knob_value for r in results]
    trace = json.loads(rows.loc[rows["task"] == 1, "gridsearch_trace"].iloc[0])
    assert trace["knob"] == [list(tr) for tr in results[1].gridsearch.knob_trials]
    assert set(COLUMNS) <= set(rows.columns) and set(COLUMNS) <= set(ROW_COLUMNS)


def test_resume_after_task_1_repeats_the_search_and_the_numbers(searched_run):
    results, state = searched_run
    assert state["gridsearch"]["lr_first"] == results[0].gridsearch.lr
    resumed = _first(run(ExperimentConfig.from_dict(SEARCH), state=state), 1)
    assert [r.task for r in resumed] == [2]
    full, again = results[-1], resumed[-1]
    assert (again.acc_taw == full.acc_taw).all() and (again.acc_tag == full.acc_tag).all()
    assert again.gridsearch.lr_trials == full.gridsearch.lr_trials
    assert again.gridsearch.knob_trials == full.gridsearch.knob_trials
    pd.testing.assert_frame_equal(pd.DataFrame(again.task_rows).drop(columns=VOLATILE),
                                  pd.DataFrame(full.task_rows).drop(columns=VOLATILE))


# ---- config, registry, CLI, preset ------------------------------------------------------------------------

@pytest.mark.parametrize("values, fragment", [
    ({"gridsearch.acc_drop_th": 0.1}, "did you mean 'gridsearch.acc_drop_thr'"),
    ({"gridsearch.hparam_decy": 0.1}, "did you mean 'gridsearch.hparam_decay'"),
    ({"approach": "finetuning", "gridsearch.knob_start": 3}, "approach 'finetuning' has no stability knob"),
    ({"gridsearch.hparam_decay": 1.5}, "gridsearch.hparam_decay = 1.5 is not valid"),
    ({"gridsearch.acc_drop_thr": -0.1}, "gridsearch.acc_drop_thr = -0.1 is not valid"),
    ({"gridsearch.lr": [0.1, 0.05]}, "needs one below min\\(gridsearch.lr_first\\) = 0.05"),
    ({"gridsearch.lr_first": "0.1"}, "gridsearch.lr_first = '0.1' has the wrong type: expected a list of float"),
    ({"gridsearch.max_num_searches": 0}, "gridsearch.max_num_searches = 0 is not valid"),
    ({"train.gridsearch_tasks": -1}, "train.gridsearch_tasks = -1 is not valid"),
    ({"train.gridsearch_tasks": 2, "data.val_fraction": 0.0}, "needs validation data"),
])
def test_config_errors(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ExperimentConfig.from_dict(SMALL | values)


def test_knob_start_defaults_to_the_approachs_facil_value():
    assert ExperimentConfig.from_dict({"approach": "lwf-s"}).gridsearch.knob_start == 10.0
    assert ExperimentConfig.from_dict({"approach": "lucir"}).gridsearch.knob_start == 10.0
    assert ExperimentConfig.from_dict({"approach": "joint"}).gridsearch.knob_start is None


def test_every_stability_knob_is_a_float_key_its_approach_uses():
    for spec in SPECS.values():
        if spec.stability is None:
            continue
        head, _, leaf = spec.stability.key.partition(".")
        assert (head == "loss" and leaf in spec.loss) or head == spec.section, spec.name
        tp = _LEAVES[spec.stability.key]
        assert float in (typing.get_args(tp) or (tp,)), spec.name
        assert spec.stability.start > 0 and (head == "loss" or head in SECTIONS)


@pytest.mark.parametrize("name", sorted({spec.impl: name for name, spec in SPECS.items() if spec.stability}.values()))
def test_each_knob_reaches_the_loss_through_the_tasks_config(name):
    """The search changes the knob through ``ctx.cfg`` only: an approach that read it elsewhere (its
    constructor's config) would be searched without effect. One name per implementation."""
    key = SPECS[name].stability.key
    cfg = ExperimentConfig.from_dict(SMALL | {"approach": name, "data.num_tasks": 5, "memory.num_exemplars": 20})
    exp = Experiment(cfg)
    train_task(exp.approach, exp.begin_task(0))
    ctx = exp.begin_task(1)
    exp.approach.before_task(ctx)
    torch.manual_seed(0)
    with torch.no_grad():  # away from the old model, so that every stability term is non-zero
        for p in ctx.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = exp.approach.training_set(ctx)

    def loss(c):
        step = exp.approach.forward(c, exp.trainer.inputs(x[:64]), y[:64], "train")
        return exp.approach.loss(c, step).total.item()

    value = cfg.to_flat()[key]
    assert loss(ctx.with_cfg(cfg.replace(**{key: 2 * value + 1}))) != pytest.approx(loss(ctx), rel=1e-6)


@pytest.mark.parametrize("facil", [False, True])
def test_the_warm_up_lr_follows_the_chosen_lr_or_facils_configured_one(facil):
    from cil.gridsearch import GridSearch

    cfg = ExperimentConfig.from_dict(SMALL | {"data.num_tasks": 5, "train.gridsearch_tasks": 1, "train.lr": 0.07,
                                              "train.warmup_lr_factor": 0.5, "gridsearch.facil_warmup_lr": facil})
    exp = Experiment(cfg)
    ctx, report = GridSearch(cfg).run_task(exp, exp.begin_task(0))
    assert ctx.cfg.train.lr == report.lr != 0.07
    warmup = ctx.cfg.train.lr * ctx.cfg.train.warmup_lr_factor
    assert warmup == pytest.approx(0.07 * 0.5 if facil else report.lr * 0.5, rel=1e-12)


def test_finetuning_twin_drops_the_approachs_keys_and_the_exemplars():
    cfg = ExperimentConfig.from_dict({"approach": "lucir", "memory.num_exemplars": 20, "lucir.lamb": 3})
    ft = finetuning_config(cfg, **{"train.lr": 0.01})
    assert ft.approach == "finetuning" and ft.memory.num_exemplars == 0 and ft.train.lr == 0.01
    assert ft.lucir.lamb is None and ft.loss.lamb == 0.0 and ft.data == cfg.data


def test_cli_search_of_task_0_carries_its_lr_and_leaves_the_training_untouched(tmp_path, capsys):
    """FACIL's flags through ``python -m cil`` (in process); searching task 0 only, the later tasks keep
    its lr and the config's lamb, so tasks 0-1 must equal a plain run at that lr: the search did not
    shift the task's own random draws."""
    from cil.cli import main

    argv = ["--approach", "lwf", "--datasets", "digits", "--num-tasks", "5", "--nepochs", "1", "--device", "cpu",
            "--lr-patience", "1", "--gridsearch-tasks", "1", "--gridsearch-acc-drop-thr", "0.1",
            "--set", "gridsearch.lr_first=[0.1, 0.05]", "--set", "gridsearch.lr=[0.05, 0.02, 0.01]",
            "--results-path", str(tmp_path), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    df = pd.read_parquet(tmp_path / "digits_lwf" / "results" / "task_results").sort_values(["task", "eval_task"])
    per_task = df.groupby("task").first()
    lr = per_task["gridsearch_lr"].iloc[0]
    assert lr in (0.1, 0.05) and (df["gridsearch_lr"] == lr).all()
    assert per_task["gridsearch_searched"].tolist() == [True, False, False, False, False]
    assert (df["gridsearch_knob"] == "loss.lamb").all() and (df["gridsearch_knob_value"] == 1.0).all()
    assert (df["train.gridsearch_tasks"] == 1).all() and (df["gridsearch.acc_drop_thr"] == 0.1).all()
    assert df["gridsearch.lr"].map(list).tolist() == [[0.05, 0.02, 0.01]] * len(df)
    plain = _first(run(ExperimentConfig.from_dict(SMALL | {"data.num_tasks": 5, "train.lr": lr})), 2)[-1]
    searched = df[df["task"] <= 1]
    assert searched["acc_taw"].tolist() == [plain.acc_taw[t, u] for t in range(2) for u in range(t + 1)]
    assert searched["acc_tag"].tolist() == [plain.acc_tag[t, u] for t in range(2) for u in range(t + 1)]
    assert "gridsearch_lr" not in plain.task_rows[0]


def test_preset_runs_facils_table_protocol():
    from tune.spec import load_spec

    spec = load_spec(os.path.join(ROOT, "tune", "presets", "cifar100_facil_gridsearch.yaml"))
    b = spec.base
    assert (b["data.dataset"], b["data.num_tasks"], b["model.network"], b["data.fixed_class_order"]) == (
        "cifar100", 10, "resnet32", True)
    assert b["train.gridsearch_tasks"] == 10 and b["memory.num_exemplars"] == 2000
    assert (b["train.momentum"], b["train.weight_decay"], b["train.lr_patience"]) == (0.9, 2e-4, 10)
    assert spec.grid["run.seed"] == list(range(10)) and {"finetuning", "lwf", "lucir"} <= set(spec.grid["approach"])
    with open(os.path.join(ROOT, "tune", "presets", "cifar100_facil_gridsearch.yaml")) as f:
        assert yaml.safe_load(f)["base"]["gridsearch.acc_drop_thr"] == 0.2
