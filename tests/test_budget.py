"""The spec's stop: budget: parsed and checked before Ray starts, counted with an injected clock, and a
sweep stopped by it resumes (with a larger budget) to the rows of an uninterrupted sweep."""

from __future__ import annotations

import datetime as dt
import glob
import os
import time

import pandas as pd
import pyarrow.fs as pafs
import pytest

from tune.budget import Budget, BudgetWatch, Spent, device_share, parse_stop
from tune.spec import SpecError, parse_spec


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_stop_section_is_checked_with_the_spec():
    spec = parse_spec({"base": {"approach": "lwf"},
                       "stop": {"max_device_hours": 2, "deadline": "2030-01-02T09:00:00+00:00"}})
    assert spec.stop.max_device_hours == 2.0 and spec.stop.max_wall_hours is None
    assert spec.stop.deadline == dt.datetime(2030, 1, 2, 9, tzinfo=dt.UTC).timestamp()
    with pytest.raises(SpecError) as err:
        parse_spec({"base": {"approach": "lwf"},
                    "stop": {"max_device_hours": -1, "deadline": "friday", "max_hours": 3}})
    text = str(err.value)
    assert "stop.max_device_hours = -1 is not valid" in text and "stop.deadline is not valid" in text
    assert "unknown key stop.max_hours" in text


def test_device_hours_count_each_running_trials_share(tmp_path):
    clock = Clock()
    fs = pafs.LocalFileSystem()
    watch = BudgetWatch(Budget(max_device_hours=1.0), device_share(cpu=1, gpu=0.25), fs, str(tmp_path), clock)
    clock.now += 3600
    assert watch.tick(running=2) is None  # 2 trials x 0.25 GPU x 1 h
    clock.now += 3600
    assert "stop.max_device_hours = 1 reached (1 device-hours)" == watch.tick(running=2)
    assert watch.tick(running=2) is None  # said once
    watch.save()
    again = Spent.load(fs, str(tmp_path))  # a resumed sweep goes on counting from here
    assert again.device_seconds == 2 * 3600 * 0.5 and again.wall_seconds == 2 * 3600


def test_wall_hours_and_deadline(tmp_path):
    clock = Clock()
    fs = pafs.LocalFileSystem()
    wall = BudgetWatch(Budget(max_wall_hours=0.5), 1.0, fs, str(tmp_path / "a"), clock)
    deadline = BudgetWatch(Budget(deadline=clock.now + 60), 1.0, fs, str(tmp_path / "b"), clock)
    clock.now += 59
    assert wall.tick(0) is None and deadline.tick(0) is None
    clock.now += 1
    assert deadline.tick(0).startswith("stop.deadline ")
    clock.now += 1800
    assert wall.tick(0).startswith("stop.max_wall_hours = 0.5 reached")


def test_an_unreadable_ledger_starts_from_nothing(tmp_path):
    (tmp_path / "budget.json").write_text("{not json")
    assert Spent.load(pafs.LocalFileSystem(), str(tmp_path)) == Spent()
    assert parse_stop(None, []) == Budget() and not Budget().any


SPEC = {"base": {"data.dataset": "synthetic:classes=6,channels=1,size=8,train=12,test=3", "data.num_tasks": 3,
                 "model.network": "convnet", "train.nepochs": 2, "train.batch_size": 16},
        "grid": {"approach": ["finetuning", "lwf-s", "lwf-br2"], "run.seed": [0]},
        "resources": {"cpu": 1}, "max_concurrent": 1}
DROP = ["sweep", "trial_id", "train_seconds", "seconds", "shared_from", "data.data_root", "data.cache_dir"]


def _rows(storage, name: str, table: str) -> pd.DataFrame:
    df = pd.read_parquet(os.path.join(storage, name, "results", table))
    points = pd.read_parquet(os.path.join(storage, name, "results", "task_results"))
    sampled = [c for c in ("loss.lamb", "train.lr") if c in points]
    if sampled and sampled[0] not in df:  # heads and epochs: the trial's point, for a fixed order
        df = df.merge(points[["trial_id", *sampled]].drop_duplicates("trial_id"), on="trial_id")
    keys = ["approach", "seed", *sampled, "task",
            *[c for c in ("eval_task", "head", "epoch") if c in df]]
    return df.drop(columns=[c for c in DROP if c in df]).sort_values(keys).reset_index(drop=True)


@pytest.mark.slow  # three small Ray sweeps
@pytest.mark.ray
def test_a_sweep_stopped_by_its_budget_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    import ray

    from tune.paths import SweepPaths
    from tune.sweep import run_sweep

    storage = str(tmp_path / "storage")
    files = os.path.join(storage, "budget", "results", "task_results", "*.parquet")

    def clock() -> float:  # ten hours pass as soon as the first task's rows are written
        return time.time() + (36000.0 if glob.glob(files) else 0.0)

    try:
        stopped = run_sweep(parse_spec(SPEC | {"stop": {"max_device_hours": 1}}), SweepPaths(storage, "budget"),
                            verbose=0, clock=clock)
        assert stopped.budget_reached.startswith("stop.max_device_hours = 1 reached"), stopped.statuses
        assert stopped.unfinished
        done = run_sweep(parse_spec(SPEC | {"stop": {"max_device_hours": 100}}), SweepPaths(storage, "budget"),
                         verbose=0, resume=True, clock=clock)
        assert not done.unfinished and not done.errored and done.budget_reached is None
        whole = run_sweep(parse_spec(SPEC), SweepPaths(storage, "whole"), verbose=0, share=False)
        assert not whole.unfinished and not whole.errored
    finally:
        ray.shutdown()
    for table in ("task_results", "heads", "epochs"):
        a, b = _rows(storage, "budget", table), _rows(storage, "whole", table)
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_like=True)
    assert not _rows(storage, "budget", "task_results").duplicated(["approach", "task", "eval_task"]).any()


SEARCH = {"base": {"data.dataset": "synthetic:classes=8,channels=1,size=8,train=12,test=3", "data.num_tasks": 4,
                   "model.network": "convnet", "train.nepochs": 2, "train.batch_size": 16, "approach": "lwf",
                   "run.seed": 0},
          "search": {"metric": "avg_acc_tag", "num_samples": 6, "seed": 3,
                     "space": {"loss.lamb": {"type": "float", "low": 0.01, "high": 100, "log": True},
                               "train.lr": {"type": "float", "low": 0.005, "high": 0.5, "log": True}}},
          "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
          "resources": {"cpu": 1}, "max_concurrent": 1}


def _decisions(storage, name: str) -> list[tuple[float, float, int]]:
    """Per trial: its point and how many tasks it trained (fewer than data.num_tasks: ASHA stopped it),
    sorted by point (Ray's trial ids in search mode are random, so they give no order)."""
    df = pd.read_parquet(os.path.join(storage, name, "results", "task_results"))
    trials = df.groupby("trial_id").agg(lamb=("loss.lamb", "first"), lr=("train.lr", "first"),
                                        tasks=("task", "nunique"))
    return sorted((r.lamb, r.lr, r.tasks) for r in trials.itertuples())


@pytest.mark.slow  # three small Ray sweeps
@pytest.mark.ray
def test_a_search_stopped_by_its_budget_resumes_to_the_decisions_of_an_uninterrupted_one(tmp_path):
    """Optuna's points and ASHA's early stops after --resume are those of one uninterrupted search. With
    max_concurrent 1 both are deterministic (a point is sampled once the one before it has ended, so no
    timing decides what Optuna or ASHA has seen): the resumed search can only match if the study and
    ASHA's rungs were restored (Tune restores the study; tune.sweep.SchedulerState the rungs)."""
    import ray

    from tune.paths import SweepPaths
    from tune.sweep import run_sweep

    storage = str(tmp_path / "storage")
    files = os.path.join(storage, "stopped", "results", "task_results", "*.parquet")

    def clock() -> float:  # ten hours pass once the third trial has started its tasks
        return time.time() + (36000.0 if len(glob.glob(files)) >= 7 else 0.0)

    try:
        stopped = run_sweep(parse_spec(SEARCH | {"stop": {"max_device_hours": 1}}), SweepPaths(storage, "stopped"),
                            verbose=0, clock=clock)
        assert stopped.budget_reached and stopped.unfinished, stopped.statuses
        done = run_sweep(parse_spec(SEARCH | {"stop": {"max_device_hours": 100}}), SweepPaths(storage, "stopped"),
                         verbose=0, resume=True, clock=clock)
        assert not done.unfinished and not done.errored
        whole = run_sweep(parse_spec(SEARCH), SweepPaths(storage, "whole"), verbose=0)
        assert not whole.unfinished and not whole.errored
    finally:
        ray.shutdown()
    expected = _decisions(storage, "whole")
    assert len(expected) == 6 and any(tasks < 4 for *_, tasks in expected)  # ASHA stopped trials early
    assert _decisions(storage, "stopped") == expected
    for table in ("task_results", "heads", "epochs"):
        a, b = _rows(storage, "stopped", table), _rows(storage, "whole", table)
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_like=True)


def test_asha_rungs_travel_in_the_snapshot_of_tunes_callbacks(tmp_path):
    """What a resumed search relies on, without starting Ray: Tune's CallbackList saves the first
    callback's state (tune.sweep.SchedulerState) in the experiment snapshot, and restoring it gives a
    fresh ASHA the rungs it had, so it stops a trial the afresh one would let run."""
    from types import SimpleNamespace

    from ray.tune.callback import CallbackList
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from tune.sweep import SchedulerState

    def asha() -> ASHAScheduler:
        return ASHAScheduler(time_attr="tasks_done", metric="avg_acc_tag", mode="max", max_t=4, grace_period=1,
                             reduction_factor=2)

    before = asha()
    for i, acc in enumerate((0.9, 0.8, 0.7, 0.6)):
        trial = SimpleNamespace(trial_id=f"t{i}")
        before.on_trial_add(None, trial)
        before.on_trial_result(None, trial, {"tasks_done": 1, "avg_acc_tag": acc})  # the rung: 0.9 ... 0.6
    CallbackList([SchedulerState(before), tune_callback()]).save_to_dir(str(tmp_path), session_str="first")
    restored, afresh = asha(), asha()
    CallbackList([SchedulerState(restored), tune_callback()]).restore_from_dir(str(tmp_path))
    late = SimpleNamespace(trial_id="t4")
    for scheduler in (restored, afresh):
        scheduler.on_trial_add(None, late)
    result = {"tasks_done": 1, "avg_acc_tag": 0.65}
    assert restored.on_trial_result(None, late, result) == TrialScheduler.STOP  # below the rung's median
    assert afresh.on_trial_result(None, late, result) == TrialScheduler.CONTINUE  # an empty rung


def tune_callback():
    from ray import tune

    return tune.Callback()
