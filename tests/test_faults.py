"""Fault injection: a sweep killed, interrupted, raced or fed bad data or storage at any moment still
ends with complete, duplicate-free rows (read with plain pandas) and clear errors with exit codes.

Cases without Ray first (merges cut short, checks before Ray starts, the lease), then trials in one
local Ray (a diverging loss, a corrupt image, a full disk), then drivers as processes (Ctrl-C, two
drivers racing, --resume while the first is alive, a kill at the moment a trial merges its files).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import drivers
import fault_hooks
import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

import cil.results
from cil.results import PENDING_PREFIX, compact_trial, discard_tasks_from, write_task
from tune import lease as lease_module
from tune.lease import LEASE_FILE, SweepLease
from tune.paths import SweepError, SweepPaths
from tune.spec import parse_spec

NUM_TASKS = 3
ROWS_PER_TRIAL = NUM_TASKS * (NUM_TASKS + 1) // 2  # tasks 0..T-1, eval tasks 0..t
FAST = {"data.dataset": "digits", "data.num_tasks": NUM_TASKS, "model.network": "convnet", "train.nepochs": 3,
        "train.batch_size": 64}
KEY = ["trial_id", "task", "eval_task"]


def _rows(trial: str, t: int, seconds: float = 1.0) -> tuple[list[dict], list[dict]]:
    base = dict(sweep="s", trial_id=trial, approach="lwf", seed=0, dataset="digits", num_tasks=5,
                network="convnet", task=t, classes_seen=2 * (t + 1), forg_taw=0.0, forg_tag=0.0,
                train_seconds=seconds)
    rows = [base | {"eval_task": u, "acc_taw": 0.9, "acc_tag": 0.5} for u in range(t + 1)]
    heads = [dict(sweep="s", trial_id=trial, approach="lwf", seed=0, task=t, head=h, weight_norm=1.0,
                  bias_mean=0.0) for h in range(t + 1)]
    return rows, heads


def _read(results, table: str = "task_results", filesystem=None) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(results, table), filesystem=filesystem)


def assert_complete(results, trials: int, rows_per_trial: int = ROWS_PER_TRIAL, filesystem=None) -> pd.DataFrame:
    """Every trial's rows once, in ``results`` (a local folder, or a path in ``filesystem``)."""
    df = _read(results, filesystem=filesystem)
    assert not df.duplicated(KEY).any(), df[df.duplicated(KEY, keep=False)].sort_values(KEY)
    assert df["trial_id"].nunique() == trials
    assert (df.groupby("trial_id").size() == rows_per_trial).all(), df.groupby("trial_id").size()
    heads = _read(results, "heads", filesystem)
    assert not heads.duplicated(["trial_id", "task", "head"]).any() and len(heads) == trials * rows_per_trial
    return df


# ---- merges: a resumed trial that merged before keeps every task; a merge cut short loses nothing ----

def test_a_trial_resumed_after_merging_keeps_every_task(tmp_path) -> None:
    """Case 1 without Ray: a trial merged tasks 0-4, then (restored from its task-3 checkpoint) redid
    task 4 and merged again. Before the fix the second merge kept only task 4 (15 rows -> 5)."""
    results = str(tmp_path)
    for t in range(5):
        write_task(*_rows("a", t), results, "a", t)
    compact_trial(results, "a")
    assert discard_tasks_from(results, "a", 4, 5) == 2  # the restored trial drops the rows it redoes
    assert sorted(_read(results)["task"].unique()) == [0, 1, 2, 3]
    write_task(*_rows("a", 4, seconds=2.0), results, "a", 4)
    compact_trial(results, "a")
    df = _read(results)
    assert len(df) == 15 and not df.duplicated(["task", "eval_task"]).any()
    assert (df[df["task"] == 4]["train_seconds"] == 2.0).all()
    assert len(_read(results, "heads")) == 15
    assert os.listdir(tmp_path / "task_results") == ["a.parquet"]


def test_newer_rows_win_per_task_when_a_merge_meets_old_rows(tmp_path) -> None:
    results = str(tmp_path)
    for t in range(3):
        write_task(*_rows("a", t), results, "a", t)
    compact_trial(results, "a")
    write_task(*_rows("a", 2, seconds=5.0), results, "a", 2)  # a redo nobody discarded first
    compact_trial(results, "a")
    df = _read(results)
    assert len(df) == 6 and (df[df["task"] == 2]["train_seconds"] == 5.0).all()


@pytest.mark.parametrize("cut", ["after the pending file", "after deleting the parts"])
def test_a_merge_cut_short_shows_no_duplicate_and_is_finished_by_the_next(tmp_path, monkeypatch, cut) -> None:
    """The process dies between writing the merged rows and removing the parts they replace."""
    results = str(tmp_path)
    for t in range(3):
        write_task(*_rows("a", t), results, "a", t)
    before = _read(results)

    def die(fs, folder, pending):
        if cut == "after deleting the parts":
            for name in os.listdir(folder):
                if name.startswith("a_t"):
                    os.remove(os.path.join(folder, name))
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(cil.results, "_commit", die)
        with pytest.raises(KeyboardInterrupt):
            compact_trial(results, "a")
    assert any(n.startswith(PENDING_PREFIX) for n in os.listdir(tmp_path / "task_results"))
    seen = _read(results)  # plain pandas skips the hidden pending file: never a row twice
    assert not seen.duplicated(KEY).any()
    assert len(seen) == (6 if cut == "after the pending file" else 0)
    compact_trial(results, "a")  # the next merge in that folder finishes the cut one first
    after = _read(results)
    pd.testing.assert_frame_equal(before.sort_values(KEY).reset_index(drop=True),
                                  after.sort_values(KEY).reset_index(drop=True))
    assert os.listdir(tmp_path / "task_results") == ["a.parquet"]


# ---- checks before Ray starts: data and storage --------------------------------------------------

def _write_spec(tmp_path, base: dict, **sections) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST | base, "grid": {"run.seed": [0]}, "resources": {"cpu": 1}}
                                   | sections))
    return str(spec)


def _image_folder(root, classes: int = 4, per_class: int = 6, corrupt: str | None = None):
    from PIL import Image

    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(folder / f"{i}.png")
    if corrupt is not None:
        (root / "train" / corrupt).write_bytes(b"not an image")
    return root


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("no test", "has train/ but neither test/ nor val/"),
])
def test_data_errors_stop_the_sweep_before_ray_starts(tmp_path, layout, message) -> None:
    root = tmp_path / "data"
    if layout == "no test":
        _image_folder(root)
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.rmdir()
        (root / "test").rmdir()
    spec = _write_spec(tmp_path, {"data.dataset": "folder", "data.data_root": str(root), "data.num_tasks": 2})
    done = drivers.run(spec, "--storage", str(tmp_path / "runs"), timeout=300)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and str(root) in done.stderr
    assert "Traceback" not in done.stderr and "ray" not in (done.stdout + done.stderr).lower()
    assert not (tmp_path / "runs").exists()  # nothing was written: the check ran before the storage


@pytest.mark.parametrize("storage, message", [
    ("/proc/cil-sweeps", "cannot write to the sweep storage"),
    ("a-file", "cannot write to the sweep storage"),
])
def test_unwritable_storage_is_one_line_before_ray_starts(tmp_path, storage, message) -> None:
    if storage == "a-file":
        storage = str(tmp_path / "a-file")
        (tmp_path / "a-file").write_text("not a folder")
    done = drivers.run(_write_spec(tmp_path, {}), "--storage", storage, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}") and storage in lines[0], done.stderr


# ---- the lease: one driver per sweep --------------------------------------------------------------

@pytest.fixture
def quick_lease(monkeypatch):
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.05)
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.1)


def test_a_held_sweep_is_refused_with_its_holder_and_the_way_to_take_it_over(tmp_path, quick_lease) -> None:
    fs = pafs.LocalFileSystem()
    with SweepLease(fs, str(tmp_path), "s") as first:
        with pytest.raises(SweepError, match=r"being run by another driver \(host .*pid "
                                             rf"{os.getpid()}.*--takeover"):
            SweepLease(fs, str(tmp_path), "s").acquire()
        assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == first.token
    assert not (tmp_path / LEASE_FILE).exists()  # released


def test_a_dead_holders_lease_is_stale(tmp_path, quick_lease) -> None:
    fs = pafs.LocalFileSystem()
    dead = {"token": "x", "host": socket.gethostname(), "pid": 2**22 + 1, "started": time.time(),
            "heartbeat": time.time()}
    (tmp_path / LEASE_FILE).write_text(json.dumps(dead))
    with SweepLease(fs, str(tmp_path), "s"):  # its holder's process is gone: no --takeover needed
        pass
    old = {"token": "y", "host": "elsewhere", "pid": 1, "started": 0.0, "heartbeat": time.time() - 1000}
    (tmp_path / LEASE_FILE).write_text(json.dumps(old))
    with SweepLease(fs, str(tmp_path), "s"):  # no heartbeat for longer than STALE_S
        pass


def test_a_takeover_is_seen_at_the_holders_next_heartbeat(tmp_path, quick_lease, monkeypatch) -> None:
    """Driven beat by beat: the holder's own thread never beats during the test (an hour apart)."""
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 3600.0)
    fs = pafs.LocalFileSystem()
    lost = []
    holder = SweepLease(fs, str(tmp_path), "s", on_lost=lambda: lost.append(True))
    holder.acquire()
    try:
        assert holder.beat() and not lost  # still ours: renewed
        with SweepLease(fs, str(tmp_path), "s", takeover=True) as taker:
            assert not holder.beat() and lost == [True]
            assert holder.lost_to is not None and holder.lost_to.token == taker.token
    finally:
        holder.release()


def test_the_heartbeat_thread_reports_a_takeover(tmp_path, quick_lease) -> None:
    fs = pafs.LocalFileSystem()
    lost = threading.Event()
    holder = SweepLease(fs, str(tmp_path), "s", on_lost=lost.set)
    holder.acquire()
    try:
        # The taker may lose its settle window to one of the holder's beats (it then refuses, as two
        # drivers started together do); it tries again until its write stands.
        deadline = time.monotonic() + 120
        while True:
            try:
                taker = SweepLease(fs, str(tmp_path), "s", takeover=True)
                taker.acquire()
                break
            except SweepError:
                assert time.monotonic() < deadline, "the takeover never settled"
        try:
            assert lost.wait(timeout=120), "the holder's heartbeat never saw the takeover"
            assert holder.lost_to.token == taker.token
        finally:
            taker.release()
    finally:
        holder.release()


def test_losing_the_lease_interrupts_the_main_thread_by_default(tmp_path, quick_lease, monkeypatch) -> None:
    """The default on_lost raises KeyboardInterrupt in the main thread, which Tune turns into a saved stop."""
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 3600.0)
    fs = pafs.LocalFileSystem()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    holder = SweepLease(fs, str(tmp_path), "s")
    holder.acquire()
    try:
        with SweepLease(fs, str(tmp_path), "s", takeover=True):
            with pytest.raises(KeyboardInterrupt):
                holder.beat()
                deadline = time.monotonic() + 60  # the pending interrupt is raised at the next bytecode
                while time.monotonic() < deadline:
                    pass
    finally:
        holder.release()
        signal.signal(signal.SIGINT, previous)


# ---- trials in a local Ray: permanent errors fail once ----------------------------------------------

@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """Workers run tests/fault_hooks.install; the sweep named 'full' finds its disk full once."""
    markers = tmp_path_factory.mktemp("markers")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in drivers.env().items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv(fault_hooks.ENV, json.dumps({"storage_full_at_task": 1, "markers": str(markers),
                                               "sweep": "full"}))
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": fault_hooks.HOOK})
        yield
        ray.shutdown()


def _sweep(tmp_path, name: str, base: dict, max_failures: int = 1, resume: bool = False):
    from tune.sweep import run_sweep

    spec = parse_spec({"base": FAST | base, "grid": {"run.seed": [0]}, "resources": {"cpu": 1},
                       "failure": {"max_failures": max_failures}})
    paths = SweepPaths(str(tmp_path), name)
    return paths, run_sweep(spec, paths, verbose=0, resume=resume)


@pytest.mark.ray
def test_a_diverging_loss_fails_its_trial_once_naming_task_epoch_and_term(ray_session, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "nan", {"train.lr": 1e12, "train.clipping": 1e30})
    [trial_id] = outcome.errored
    message = outcome.failures[trial_id]
    assert "DivergedError: loss diverged in task 0, epoch 1: term 'ce_pred' is nan" in message
    assert "not retried" not in message  # the first failure is what was recorded
    [result] = outcome.grid
    assert "not retried" in str(result.error)  # the retries ended at once with the recorded error


@pytest.mark.slow  # one more Ray trial (about 25 s); the diverging-loss case keeps the rule in the default run
@pytest.mark.ray
def test_a_corrupt_image_fails_its_trial_once_naming_the_file(ray_session, tmp_path) -> None:
    root = _image_folder(tmp_path / "data", corrupt="c3/5.png")
    paths, outcome = _sweep(tmp_path, "corrupt", {"data.dataset": "folder", "data.data_root": str(root),
                                                  "data.num_tasks": 2, "data.image_size": 8})
    [trial_id] = outcome.errored
    assert f"cannot decode image {str(root / 'train' / 'c3' / '5.png')!r}" in outcome.failures[trial_id]


@pytest.mark.slow
@pytest.mark.ray
def test_a_full_disk_fails_once_and_resume_recovers_everything(ray_session, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "full", {})
    [trial_id] = outcome.errored
    assert "refuses writes" in outcome.failures[trial_id] and "No space left" in outcome.failures[trial_id]
    assert "--resume" in outcome.failures[trial_id]
    paths, outcome = _sweep(tmp_path, "full", {}, resume=True)  # space freed (the fault fires once)
    assert outcome.errored == [] and outcome.unfinished == []
    assert_complete(paths.results, trials=1)


# ---- drivers as processes: Ctrl-C, races, resume while alive, kill at the merge ------------------

def _spec(tmp_path, trials: int = 2) -> str:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST | {"train.nepochs": 6},
                                    "grid": {"approach": ["lwf", "lwf-sr"][:trials], "run.seed": [0]},
                                    "resources": {"cpu": 1}}))
    return str(spec)


@pytest.mark.slow  # a real driver, interrupted twice, then resumed (about 90 s); run by `python -m pytest -m slow`
@pytest.mark.ray
def test_ctrl_c_twice_exits_130_with_the_resume_command_and_resume_completes(tmp_path) -> None:
    """Cases 2 and 3: Ctrl-C mid-sweep, and again while the sweep saves its state (an impatient user; the
    terminal signals the driver's whole process group, Ray's processes too): exit 130, the --resume
    command, no traceback or Ray noise; nothing interrupted is merged, so the resume adds no duplicate."""
    spec, storage = _spec(tmp_path), tmp_path / "runs"
    args = (spec, "--storage", str(storage), "--name", "ctrlc")
    results = storage / "ctrlc" / "results"
    log = tmp_path / "driver.log"
    driver = drivers.start(log, *args)
    try:
        drivers.wait_for(lambda: list((results / "task_results").glob("*_t000.parquet")), driver, log)
        os.killpg(driver.pid, signal.SIGINT)
        drivers.wait_for(lambda: "interrupted: saving" in log.read_text(), driver, log, timeout=60)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        drivers.kill_group(driver)
    text = log.read_text()
    assert "interrupted" in text and f"--name ctrlc --storage {storage} --resume" in text
    for noise in ("Traceback", "KeyboardInterrupt", "Tuner.restore", "Failed to fetch metrics"):
        assert noise not in text, text
    assert not _read(results).duplicated(KEY).any()

    done = drivers.run(*args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 trials, 2 finished, 0 errored, 0 unfinished" in done.stdout
    assert "Failed to fetch metrics" not in done.stdout + done.stderr
    assert_complete(results, trials=2)


@pytest.mark.ray
@pytest.mark.slow  # two real drivers; the lease's rules are tested in-process above, beat by beat
def test_two_drivers_on_one_name_and_a_resume_while_alive_are_refused(tmp_path) -> None:
    """Cases 4 and 5: two drivers started together run the sweep once; a --resume while the first is
    alive is refused with its holder and the way to take it over."""
    spec, storage = _spec(tmp_path), tmp_path / "runs"
    args = (spec, "--storage", str(storage), "--name", "race")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    racers = [drivers.start(log, *args) for log in logs]
    try:
        deadline = time.monotonic() + 300
        while all(r.poll() is None for r in racers):
            assert time.monotonic() < deadline, "neither racer was refused"
            time.sleep(0.1)
        loser = next(i for i, r in enumerate(racers) if r.poll() is not None)
        winner = racers[1 - loser]
        assert racers[loser].returncode == 2
        assert "being run by another driver" in logs[loser].read_text() or \
               "claimed sweep 'race' at the same moment" in logs[loser].read_text()
        alive = drivers.run(*args, "--resume", timeout=120)
        assert alive.returncode == 2 and f"pid {winner.pid}" in alive.stderr and "--takeover" in alive.stderr
        assert winner.wait(timeout=240) == 0, logs[1 - loser].read_text()[-3000:]
    finally:
        for r in racers:
            drivers.kill_group(r)
    assert_complete(storage / "race" / "results", trials=2)


@pytest.mark.slow
@pytest.mark.ray
def test_driver_killed_the_moment_a_trial_merged_resumes_complete(tmp_path) -> None:
    """Case 1: SIGKILL the driver (and its Ray) right after a trial merged its files, then --resume."""
    spec, storage = _spec(tmp_path, trials=1), tmp_path / "runs"
    args = (spec, "--storage", str(storage), "--name", "merge")
    merged = tmp_path / "merged"
    log = tmp_path / "driver.log"
    driver = drivers.start(log, *args, hooks=True, CIL_TEST_FAULTS=json.dumps({"hang_after_merge": str(merged)}))
    try:
        drivers.wait_for(lambda: merged.exists() and list(merged.iterdir()), driver, log, timeout=240)
    finally:
        drivers.kill_group(driver)
    results = storage / "merge" / "results"
    assert len(_read(results)) == ROWS_PER_TRIAL
    done = drivers.run(*args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete(results, trials=1)
