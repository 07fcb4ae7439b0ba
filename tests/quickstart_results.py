"""Results shaped like the quickstart sweep's, written as Parquet in the real schema.

8 approaches x 3 seeds on ``synthetic:classes=50,channels=1,size=8,train=40``, 5 tasks of 10 classes,
25 epochs a task: ``task_results``, ``heads`` and ``epochs``, one file per trial and task as the sweep
writes them. The accuracies are plausible (older tasks decay, finetuning forgets most, joint least)
and forgetting follows docs/design.md, so every reader and figure sees what a real quickstart gives.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from analysis.atomic import write_parquet

DATASET = "synthetic:classes=50,channels=1,size=8,train=40"
APPROACHES = ("finetuning", "joint", "lwf", "lwf-s", "lwf-sr", "lwf-br", "lwf-br2", "lwf-bsr")
SEEDS = (0, 1, 2)
NUM_TASKS = 5
EPOCHS = 25
SWEEP = "quickstart"


def _forgetting(acc: np.ndarray, t: int, u: int) -> float:
    return float(max(acc[k, u] for k in range(u, t)) - acc[t, u]) if u < t else 0.0


def write(results: str, dataset: str = DATASET, sweep: str = SWEEP, approaches: tuple[str, ...] = APPROACHES,
          config: dict | None = None) -> str:
    """Write the quickstart-shaped results under ``results`` (a sweep's results/ folder); returns it.
    ``config``: more config columns (a real sweep's rows carry over a hundred)."""
    rng = np.random.default_rng(0)
    for a, approach in enumerate(approaches):
        retain = {"finetuning": 0.3, "joint": 0.99}.get(approach, 0.6 + 0.03 * a)
        for seed in SEEDS:
            trial = f"{approach}-{seed}"
            age = np.subtract.outer(np.arange(NUM_TASKS), np.arange(NUM_TASKS)).clip(0)
            taw = np.clip(0.97 - 0.01 * age + rng.normal(0, 0.01, age.shape), 0, 1)
            tag = np.clip(taw * (retain + (1 - retain) * np.exp(-age)) + rng.normal(0, 0.01, age.shape), 0, 1)
            config = {"data.dataset": dataset, "data.num_tasks": NUM_TASKS, "model.network": "convnet",
                      "train.nepochs": EPOCHS, "train.batch_size": 64, "run.seed": seed, **(config or {})}
            for t in range(NUM_TASKS):
                rows = [dict(sweep=sweep, trial_id=trial, approach=approach, seed=seed, dataset=dataset,
                             num_tasks=NUM_TASKS, network="convnet", task=t, eval_task=u,
                             classes_seen=10 * (t + 1), acc_taw=float(taw[t, u]), acc_tag=float(tag[t, u]),
                             forg_taw=_forgetting(taw, t, u), forg_tag=_forgetting(tag, t, u),
                             train_seconds=1.0 + 0.1 * t, **config)
                        for u in range(t + 1)]
                heads = [dict(sweep=sweep, trial_id=trial, approach=approach, seed=seed, task=t, head=h,
                              weight_norm=2.0 + (0.4 if h == t and approach == "lwf" else 0.05) * (h + 1),
                              bias_mean=-0.01 * h) for h in range(t + 1)]
                epochs = [dict(sweep=sweep, trial_id=trial, approach=approach, seed=seed, task=t, epoch=e,
                               train_loss=2.3 * np.exp(-e / 8) + 0.1 * t, val_loss=2.4 * np.exp(-e / 9) + 0.1,
                               val_acc_taw=min(1.0, 0.4 + 0.025 * e), lr=0.1 if e < 20 else 0.033,
                               seconds=0.05, **{"term.ce_pred": 2.0 * np.exp(-e / 8)})
                          for e in range(1, EPOCHS + 1)]
                name = f"{trial}_t{t:03d}.parquet"
                for table, part in (("task_results", rows), ("heads", heads), ("epochs", epochs)):
                    write_parquet(pa.Table.from_pylist(part), os.path.join(results, table, name))
    return results
