"""A sweep whose driver is killed part-way finishes with ``--resume``: no duplicate or missing rows."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TASKS = 3
SPEC = {"base": {"data.dataset": "digits", "data.num_tasks": NUM_TASKS, "model.network": "convnet",
                 "train.nepochs": 2, "train.batch_size": 64},
        "grid": {"approach": ["lwf", "lwf-sr"], "run.seed": [0]},
        "resources": {"cpu": 1}}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tune", "sweep", *args, "--quiet"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return e | {"RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "1", "PYTHONPATH": ROOT}


@pytest.mark.slow  # SIGKILL of the driver; its SIGINT twin is test_faults' ctrl-c case (slow too); the default
# run resumes a failed trial in test_tune_sweep
def test_killed_driver_resumes_without_duplicate_or_missing_rows(tmp_path) -> None:
    spec = tmp_path / "resume.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    storage = tmp_path / "storage"
    args = (str(spec), "--storage", str(storage), "--name", "resume")
    task_files = storage / "resume" / "results" / "task_results"

    # The driver starts its own local Ray (the embedded default); its own session lets us clean up
    # every process it started once it has been killed.
    log = open(tmp_path / "driver.log", "w")  # a file, not a pipe: a full pipe would stall the driver
    driver = subprocess.Popen(cli(*args), cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not glob.glob(str(task_files / "*.parquet")):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no results appeared"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # Ray processes the killed driver left behind
        except ProcessLookupError:
            pass
        log.close()
    written = len(glob.glob(str(task_files / "*.parquet")))
    assert 1 <= written < 2 * NUM_TASKS, "the driver was not killed part-way"

    done = subprocess.run(cli(*args, "--resume"), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=240, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep resume: 2 trials, 2 finished, 0 errored, 0 unfinished" in done.stdout

    df = pd.read_parquet(task_files)
    assert not df.duplicated(["trial_id", "task", "eval_task"]).any()
    assert df["trial_id"].nunique() == 2
    per_trial = df.groupby("trial_id").size()
    assert (per_trial == NUM_TASKS * (NUM_TASKS + 1) // 2).all()  # tasks 0..T-1, eval tasks 0..t
    assert sorted(df.groupby("trial_id")["approach"].first()) == ["lwf", "lwf-sr"]
    heads = pd.read_parquet(storage / "resume" / "results" / "heads")
    assert not heads.duplicated(["trial_id", "task", "head"]).any() and len(heads) == 2 * 6
