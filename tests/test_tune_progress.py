"""Tune's live table shows a running trial's task, epoch and training loss between its task reports,
while Tune itself (searcher, scheduler, checkpoints) hears of whole tasks only."""

from __future__ import annotations

import os
import re

import pytest

import tune.progress as progress
from tune.paths import SweepPaths
from tune.spec import parse_spec
from tune.sweep import run_sweep

pytestmark = pytest.mark.ray

NEPOCHS = 60
NUM_TASKS = 2


@pytest.fixture(scope="module")
def ray_session():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.delenv("RAY_ADDRESS", raising=False)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        mp.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        import ray

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield
        ray.shutdown()


def live_rows(out: str) -> list[list[str]]:
    """The rows of every live table printed, in order: [trial, tasks_done, task, epoch, train_loss]."""
    rows, inside = [], False
    for line in out.splitlines():
        if line.startswith("Inside the running tasks"):
            inside = True
        elif inside and line.startswith("╰"):
            inside = False
        elif inside and line.startswith("│") and "Trial name" not in line:
            rows.append(line.strip("│ ").split())
    return rows


def test_a_running_trials_epoch_advances_in_the_live_table_between_task_reports(ray_session, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.2)  # a live table every 0.2 s instead of every 30 s
    spec = parse_spec({"base": {"data.dataset": "digits", "data.num_tasks": NUM_TASKS, "model.network": "convnet",
                                "train.nepochs": NEPOCHS, "train.lr_patience": 10 * NEPOCHS,
                                "train.batch_size": 64, "approach": "lwf"},
                       "grid": {"run.seed": [0]}, "resources": {"cpu": 1}})
    outcome = run_sweep(spec, SweepPaths(str(tmp_path), "live"), verbose=1)
    out = capsys.readouterr().out
    (result,) = outcome.grid
    assert result.error is None
    rows = live_rows(out)
    assert rows and all(r[0].endswith(result.metrics["trial_id"]) for r in rows)
    assert all(re.fullmatch(rf"\d+/{NEPOCHS}", r[3]) and float(r[4]) > 0 for r in rows)
    # epochs seen per (tasks reported, task training): some task shows its epoch advancing before its report
    seen: dict[tuple[int, int], list[int]] = {}
    for _, done, task, epoch, _ in rows:
        seen.setdefault((int(done), int(task)), []).append(int(epoch.split("/")[0]))
    # the task in training follows those reported (one behind or ahead while a report is on its way)
    assert all(abs(done - task) <= 1 and 0 <= task < NUM_TASKS for done, task in seen)
    advancing = [epochs for epochs in seen.values() if len(set(epochs)) >= 2]
    assert advancing and all(e == sorted(e) for e in advancing), seen
    # Tune (and so any searcher or scheduler) got one result per task, not one per epoch.
    history = result.metrics_dataframe
    assert list(history["training_iteration"]) == list(range(1, NUM_TASKS + 1))
    assert list(history["tasks_done"]) == list(range(1, NUM_TASKS + 1))


def test_live_cells_name_the_seed_when_a_trial_runs_several():
    one = {"task": 2, "epoch": 7, "nepochs": 200, "train_loss": 0.123456, "run": 0, "runs": 1}
    assert progress.live_cells(one) == [2, "7/200", 0.1235]
    assert progress.live_cells(one | {"run": 1, "runs": 3})[1] == "7/200 (seed 2/3)"
    assert progress.live_cells(None) == ["", "", ""]
