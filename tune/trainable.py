"""The function trainable: a Tune trial runs ``cil.run`` and reports after every task with a checkpoint.

A trial resumes from ``tune.get_checkpoint()`` (after a failure or a ``Tuner.restore``), so a preempted
trial loses at most the task in progress. Rows go to Parquet as each task ends, in files keyed by
(trial_id, task): a retried task overwrites its own files, and a trial restored from a checkpoint first
drops its rows of the tasks it is about to redo, so rows are never duplicated or lost. A trial that
finishes merges its files into one per table (``cil.results.compact_trial``).

In search mode a trial holds one Optuna point and runs all the spec's seeds in lock-step (task t of
every seed, then one report with their mean), so the searcher and ASHA judge a point on its seed mean.
Each seed's rows then carry ``trial_id = <ray trial id>_s<seed>``; otherwise ``trial_id`` is Ray's id.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from cil import numerics
from cil.config import ExperimentConfig
from cil.device import GPU_SHARE_HEADROOM, cuda_device, set_cublas_workspace
from cil.errors import PermanentError
from cil.loop import TaskResult
from cil.results import (
    StorageError,
    compact_trial,
    discard_tasks_from,
    join,
    refusing_storage,
    resolve,
    write_task,
)
from tune.prefix import PrefixStore, numeric_environment, shared_run
from tune.progress import epoch_sender
from tune.spec import SEEDS_KEY

STATE_FILE = "cil_state.pt"
FAILED_DIR = "_failed"


def train_trial(config: dict[str, Any], *, sweep: str, results_dir: str, gpu_fraction: float = 0.0,
                prefix_dir: str | None = None) -> None:
    """Tune entry point (bind ``sweep``/``results_dir``/``gpu_fraction``/``prefix_dir`` with
    ``tune.with_parameters``). ``prefix_dir``: the store of task prefixes shared between trials
    (tune/prefix.py); None: every trial trains every task itself.

    A :class:`~cil.errors.PermanentError` (bad data, a diverging loss, storage that refuses writes) is
    recorded beside the results before it is raised, so Tune's retries of this trial end at once with
    the same message instead of training again.
    """
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one INFO line per checkpoint otherwise
    if config.get("run.deterministic", True) is not False:
        set_cublas_workspace()  # before this process's first CUDA work
    ray_id = tune.get_context().get_trial_id()
    failed = read_failure(results_dir, ray_id)
    if failed is not None:
        raise PermanentError(f"{failed} (a permanent error: not retried)")
    try:
        _train(config, sweep, results_dir, ray_id, gpu_fraction, prefix_dir)
    except PermanentError as err:
        record_failure(results_dir, ray_id, err)
        raise
    except OSError as err:
        if not refusing_storage(err):
            raise
        failure = StorageError(f"the results storage {results_dir} refuses writes: {err}; free space or fix "
                               "its permissions, then continue the sweep with --resume")
        record_failure(results_dir, ray_id, failure)
        raise failure from err


def _train(config: dict[str, Any], sweep: str, results_dir: str, ray_id: str, gpu_fraction: float,
           prefix_dir: str | None) -> None:
    device = _device(gpu_fraction)
    store = PrefixStore(prefix_dir) if prefix_dir else None
    runs = experiment_configs(config, ray_id, device)
    numerics.claim_cpu_share(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    numerics.apply(runs[0][1].run.threads, runs[0][1].run.cpu_isa)  # before the checkpoint's tensors load
    env = numeric_environment(device) if store else {}  # as applied: threads and CPU mode in effect
    states = _load_states(len(runs))
    for (trial_id, cfg), state in zip(runs, states, strict=True):
        if state is not None:  # rows of tasks after the checkpoint are about to be redone
            discard_tasks_from(results_dir, trial_id, int(state["next_task"]), cfg.data.num_tasks)
    after_epoch = epoch_sender(sweep, ray_id, [cfg.run.seed for _, cfg in runs])  # the live table's epochs
    cil_runs = [shared_run(cfg, state, store, trial_id, env, after_epoch=after_epoch)
                for (trial_id, cfg), state in zip(runs, states, strict=True)]
    for results in zip(*cil_runs, strict=True):
        for (trial_id, _), r in zip(runs, results, strict=True):
            tag = {"sweep": sweep, "trial_id": trial_id}
            write_task([tag | row for row in r.task_rows], [tag | row for row in r.head_rows],
                       results_dir, trial_id, r.task, [tag | row for row in r.epoch_rows])
        with tempfile.TemporaryDirectory() as d:
            torch.save({"states": [r.state for r in results]}, os.path.join(d, STATE_FILE))
            tune.report(seed_mean(results), checkpoint=tune.Checkpoint.from_directory(d))
    for trial_id, _ in runs:  # finished: one file per table instead of one per task
        compact_trial(results_dir, trial_id)


def failure_path(results_dir: str, ray_id: str) -> tuple[pafs.FileSystem, str]:
    """Where a trial's permanent failure is recorded: ``<results>/_failed/<ray trial id>.txt`` (readers
    skip folders starting with ``_``)."""
    fs, base = resolve(results_dir)
    return fs, join(base, FAILED_DIR, f"{ray_id}.txt")


def record_failure(results_dir: str, ray_id: str, err: BaseException) -> None:
    """Record a permanent failure (best effort: a full disk may refuse this write too)."""
    fs, path = failure_path(results_dir, ray_id)
    try:
        fs.create_dir(path.rpartition("/")[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(f"{type(err).__name__}: {err}".encode())
    except OSError:
        pass


def read_failure(results_dir: str, ray_id: str) -> str | None:
    """The recorded permanent failure of a trial, or None."""
    fs, path = failure_path(results_dir, ray_id)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def experiment_configs(config: dict[str, Any], ray_id: str, device: str) -> list[tuple[str, ExperimentConfig]]:
    """(trial_id for the rows, cil config) for each cil run of a trial; keys starting with ``_`` are
    the sweep's own and never reach cil."""
    flat = {k: v for k, v in config.items() if not k.startswith("_")} | {"run.device": device}
    seeds = config.get(SEEDS_KEY)
    if seeds is None:
        return [(ray_id, ExperimentConfig.from_dict(flat))]
    return [(trial_id, ExperimentConfig.from_dict(flat | {"run.seed": s}))
            for trial_id, s in zip(row_trial_ids(ray_id, config), seeds, strict=True)]


def row_trial_ids(ray_id: str, config: dict[str, Any]) -> list[str]:
    """The ``trial_id`` values a trial's rows carry: Ray's id, or one per seed in search mode."""
    seeds = config.get(SEEDS_KEY)
    return [ray_id] if seeds is None else [f"{ray_id}_s{s}" for s in seeds]


def seed_mean(results: tuple[TaskResult, ...]) -> dict[str, Any]:
    """What a trial reports after a task: metrics averaged over its seeds (one seed: as they are)."""
    first = results[0].metrics
    out: dict[str, Any] = {}
    for key, value in first.items():
        if key in ("task", "classes_seen", "num_tasks", "last_task"):
            out[key] = value
        elif key.endswith("_seconds"):
            out[key] = float(sum(r.metrics[key] for r in results))
        elif isinstance(value, int | float):
            out[key] = float(sum(r.metrics[key] for r in results) / len(results))
    out["tasks_done"] = int(first["task"]) + 1
    out["final_task"] = int(first["task"]) == int(first["last_task"])  # run.stop_at_task may end it early
    out["seeds"] = len(results)
    return out


def _device(gpu_fraction: float) -> str:
    """``cuda:<index>`` of the GPU Ray assigned, made the current device, else the CPU. A trial that
    holds a GPU which torch cannot use fails at once (:class:`~cil.device.CudaUnusableError`): training
    it on the CPU would hold the GPU and take hours longer without a word."""
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return "cpu"
    index = visible_index(gpu_ids[0], os.environ.get("CUDA_VISIBLE_DEVICES"))
    device = cuda_device(index, f"Ray gave this trial GPU {gpu_ids[0]} (CUDA_VISIBLE_DEVICES="
                                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})")
    if 0 < gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction * GPU_SHARE_HEADROOM, device)
    return str(device)


def visible_index(gpu_id: int | str, visible: str | None) -> int:
    """The torch index of Ray's GPU ``gpu_id``: its position in CUDA_VISIBLE_DEVICES (which Ray sets to
    the trial's GPUs), or the id itself where that is unset."""
    if visible:
        names = [v.strip() for v in visible.split(",")]
        if str(gpu_id) in names:
            return names.index(str(gpu_id))
    return int(gpu_id)


def _load_states(n: int) -> list[dict[str, Any] | None]:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return [None] * n
    with checkpoint.as_directory() as d:
        blob = torch.load(os.path.join(d, STATE_FILE), weights_only=True)
    if len(blob["states"]) != n:
        raise RuntimeError(f"checkpoint holds {len(blob['states'])} runs, this trial has {n}")
    return blob["states"]
