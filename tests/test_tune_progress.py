"""The sweep's table shows a running trial's task, epoch and training loss between its task reports,
and an ETA, while Tune itself (searcher, scheduler, checkpoints) hears of whole tasks only."""

from __future__ import annotations

import os
import re

import pytest

import tune.progress as progress
from tune.console import read_snapshot
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


def live_rows(out: str) -> tuple[list[str], list[list[str]]]:
    """The headers and the rows of every table printed: [trial, approach, seed, task, epoch, loss, state]."""
    headers, rows = [], []
    for line in out.splitlines():
        if line.startswith("sweep live: "):
            headers.append(line)
        elif re.match(r"\w+_\d{5} ", line):
            rows.append(line.split())
    return headers, rows


@pytest.mark.slow  # waits for epochs of a real trial inside one task (about 60 s)
def test_a_running_trials_epoch_advances_in_the_live_table_between_task_reports(ray_session, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.2)  # the table every 0.2 s instead of every 30 s
    spec = parse_spec({"base": {"data.dataset": "digits", "data.num_tasks": NUM_TASKS, "model.network": "convnet",
                                "train.nepochs": NEPOCHS, "train.lr_patience": 10 * NEPOCHS,
                                "train.batch_size": 64, "approach": "lwf"},
                       "grid": {"run.seed": [0]}, "resources": {"cpu": 1}})
    outcome = run_sweep(spec, SweepPaths(str(tmp_path), "live"), verbose=1)
    out = capsys.readouterr().out
    (result,) = outcome.grid
    assert result.error is None
    headers, rows = live_rows(out)
    assert rows and all(r[:3] == [result.metrics["trial_id"], "lwf", "0"] and r[-1] == "running" for r in rows)
    # before its first epoch reaches the board a running trial has no epoch and loss yet; between a task's
    # report and the next task's first epoch it shows the tasks done and the last loss, with no epoch
    assert all(len(r) == 5 or (len(r) == 6 and float(r[4]) > 0) for r in rows if len(r) != 7), \
        [r for r in rows if len(r) not in (5, 6, 7)]
    rows = [r for r in rows if len(r) == 7]
    assert rows and all(re.fullmatch(rf"\d+/{NEPOCHS}", r[4]) and float(r[5]) > 0 for r in rows)
    # epochs seen per task in training (counted from 1): some task shows its epoch advancing before its report
    seen: dict[int, list[int]] = {}
    for r in rows:
        task, num_tasks = map(int, r[3].split("/"))
        assert 1 <= task <= num_tasks == NUM_TASKS
        seen.setdefault(task, []).append(int(r[4].split("/")[0]))
    advancing = [epochs for epochs in seen.values() if len(set(epochs)) >= 2]
    assert advancing and all(e == sorted(e) for e in advancing), seen
    # the header counts the trial and, once epochs were measured, estimates the time left
    assert all(re.fullmatch(r"sweep live: [01]/1 done, [01] running, [01] pending \| elapsed \S+ \| ETA \S+", h)
               for h in headers), headers
    assert any(re.search(r"\| ETA \d+(s|m\d\ds)$", h) for h in headers), headers
    assert max(len(line) for line in out.splitlines()) <= 120
    # Tune (and so any searcher or scheduler) got one result per task, not one per epoch.
    history = result.metrics_dataframe
    assert list(history["training_iteration"]) == list(range(1, NUM_TASKS + 1))
    assert list(history["tasks_done"]) == list(range(1, NUM_TASKS + 1))
    # what `python -m tune status` reads: the table as the driver last saw it, the trial done
    saved = read_snapshot(SweepPaths(str(tmp_path), "live").experiment)
    assert saved is not None and [(t.trial_id, t.state, t.task) for t in saved.trials] == [
        (result.metrics["trial_id"], "done", NUM_TASKS)]
