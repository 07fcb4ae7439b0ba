"""Synthetic results in the Parquet schema, generated without a Python loop per trial.

For the benchmark and for trying the CLI without a sweep. Accuracies follow a plausible shape
(older tasks decay, task-agnostic below task-aware, the paper's LwF variants ordered as in its
tables) and forgetting is computed from them with the definition in docs/design.md, so the files are valid
input in every respect.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.atomic import write_parquet
from cil.results_schema import HEADS, TASK_RESULTS

# (approach, task-aware level, task-agnostic retention, head imbalance, task-aware decay per task):
# LwF is the imbalanced one.
APPROACHES = (("lwf", 0.56, 0.30, 0.15, 0.035), ("lwf-s", 0.71, 0.42, 0.01, 0.02),
              ("lwf-sr", 0.72, 0.45, 0.03, 0.018), ("lwf-br", 0.69, 0.38, 0.05, 0.022),
              ("lwf-br2", 0.64, 0.36, 0.06, 0.025), ("lwf-bsr", 0.73, 0.45, 0.02, 0.017))


def _string(values: list[str], index: np.ndarray) -> pa.Array:
    """A plain string column built from few distinct values, without a Python loop over rows."""
    codes = pa.array(index.astype(np.int32))
    return pa.DictionaryArray.from_arrays(codes, pa.array(values)).dictionary_decode()


def make_results(n_trials: int, num_tasks: int = 10, sweep: str = "synthetic", dataset: str = "cifar100",
                 num_classes: int = 100, n_partial: int = 0, seed: int = 0, n_approaches: int = 6
                 ) -> tuple[pa.Table, pa.Table]:
    """(task_results, heads) tables for ``n_trials`` trials cycling through the first
    ``n_approaches`` LwF presets: trial i runs approach i % n_approaches with seed i // n_approaches.
    The last ``n_partial`` trials stop after a random number of tasks, as a running or errored
    trial would.
    """
    rng = np.random.default_rng(seed)
    n, T = n_trials, num_tasks
    presets = APPROACHES[:n_approaches]
    approach = np.arange(n) % len(presets)
    level, keep, imbalance, decay = (np.array([a[i] for a in presets])[approach] for i in (1, 2, 3, 4))
    t_grid, u_grid = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    age = np.maximum(t_grid - u_grid, 0)[None]
    trial_shift = rng.normal(0, 0.015, (n, 1, 1))
    noise = rng.normal(0, 0.01, (n, T, T))
    taw = np.clip(level[:, None, None] + 0.2 - decay[:, None, None] * age + trial_shift + noise, 0, 1)
    retain = keep[:, None, None] + (1 - keep[:, None, None]) * np.exp(-0.5 * age)
    tag = np.clip(taw * retain + rng.normal(0, 0.01, (n, T, T)), 0, 1)
    lower = t_grid >= u_grid
    t_idx, u_idx = t_grid[lower], u_grid[lower]  # row-major: task, then eval_task

    def forgetting(acc: np.ndarray) -> np.ndarray:
        best = np.maximum.accumulate(np.where(lower[None], acc, -np.inf), axis=1)
        before = np.concatenate([np.full((n, 1, T), -np.inf), best[:, :-1]], axis=1)
        return np.where((u_grid < t_grid)[None], before - acc, 0.0)

    tasks_done = np.full(n, T)
    if n_partial:
        tasks_done[n - n_partial:] = rng.integers(1, T, n_partial) if T > 1 else 0
    rows_per_trial = (tasks_done * (tasks_done + 1)) // 2
    trial_of_row = np.repeat(np.arange(n), rows_per_trial)
    # Position of each row inside its trial's block = its (task, eval_task) cell, row-major.
    cell_of_row = np.arange(len(trial_of_row)) - np.repeat(np.cumsum(rows_per_trial) - rows_per_trial,
                                                           rows_per_trial)
    t_row, u_row = t_idx[cell_of_row], u_idx[cell_of_row]
    seconds = rng.uniform(5, 15, (n, T))
    names = [a[0] for a in presets]
    trial_ids = pa.array([f"{sweep}-{i:07d}" for i in range(n)])
    w_task = np.array([0, 1, 1, 0, 0, 1], dtype=np.float64)[:len(presets)][approach]
    cols = {
        "sweep": _string([sweep], np.zeros(len(trial_of_row), dtype=np.int64)),
        "trial_id": pa.DictionaryArray.from_arrays(pa.array(trial_of_row.astype(np.int32)),
                                                   trial_ids).dictionary_decode(),
        "approach": _string(names, approach[trial_of_row]),
        "seed": (np.arange(n) // len(presets))[trial_of_row],
        "dataset": _string([dataset], np.zeros(len(trial_of_row), dtype=np.int64)),
        "num_tasks": np.full(len(trial_of_row), T),
        "network": _string(["resnet32"], np.zeros(len(trial_of_row), dtype=np.int64)),
        "task": t_row,
        "eval_task": u_row,
        "classes_seen": (num_classes * (t_row + 1)) // T,
        "acc_taw": taw[trial_of_row, t_row, u_row],
        "acc_tag": tag[trial_of_row, t_row, u_row],
        "forg_taw": forgetting(taw)[trial_of_row, t_row, u_row],
        "forg_tag": forgetting(tag)[trial_of_row, t_row, u_row],
        "train_seconds": seconds[trial_of_row, t_row],
        "loss.lamb": np.ones(len(trial_of_row)),
        "loss.w_task": w_task[trial_of_row],
        "train.lr": np.full(len(trial_of_row), 0.1),
    }
    task_results = pa.table(cols)

    # Heads after each task: the imbalanced approach lets old heads' norms drift up.
    h_row = u_row
    norm = 1.0 + imbalance[trial_of_row] * (t_row - h_row) + rng.normal(0, 0.02, len(t_row))
    heads = pa.table({
        "sweep": cols["sweep"], "trial_id": cols["trial_id"], "approach": cols["approach"],
        "seed": cols["seed"], "task": t_row, "head": h_row, "weight_norm": norm,
        "bias_mean": rng.normal(0, 0.01, len(t_row)) - 0.02 * imbalance[trial_of_row] * (t_row - h_row),
    })
    return task_results, heads


def write_results(storage: str | os.PathLike, task_results: pa.Table, heads: pa.Table | None = None,
                  files: int = 64) -> str:
    """Write both tables as ``<storage>/<sweep>/results/{task_results,heads}/part-*.parquet``, each
    split into about ``files`` files along trial boundaries; return the results folder."""
    sweep = task_results.column("sweep")[0].as_py()
    results = os.path.join(os.fspath(storage), sweep, "results")
    for name, table in ((TASK_RESULTS, task_results), (HEADS, heads)):
        if table is None:
            continue
        trial = pc.dictionary_encode(table.column("trial_id")).combine_chunks().indices.to_numpy()
        starts = np.flatnonzero(np.r_[True, trial[1:] != trial[:-1]])
        chosen = np.linspace(0, len(starts), max(1, files), endpoint=False).astype(int)[1:]
        cuts = np.r_[starts[chosen], table.num_rows]
        begin = 0
        for i, end in enumerate(np.unique(cuts)):
            path = os.path.join(results, name, f"part-{i:05d}.parquet")
            write_parquet(table.slice(begin, end - begin), path)
            begin = end
    return results
