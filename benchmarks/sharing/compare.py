"""Two sweeps of one spec, run with and without prefix sharing: are their rows the same bits, and how
many images did each train?

    python -m benchmarks.sharing.compare RESULTS_NO_SHARE RESULTS_SHARE

Rows are compared per table after sorting by their identity (approach, seed, swept keys, task, ...),
leaving out what differs by design: ``sweep``, ``trial_id`` (Ray's ids), timings, the ``shared_from``
column and the machine keys. Images trained: for every (trial, task) the trial trained itself (no
``shared_from``), ``train.nepochs`` x the task's training samples (the union of tasks 0..t for
``joint``), exemplars left out. Exit status 0 when every table is identical.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd

from cil.config import MACHINE_KEYS
from cil.results_schema import EPOCHS, HEADS, SHARED_COLUMN, TASK_RESULTS

IGNORED = {"sweep", "trial_id", "train_seconds", "seconds", SHARED_COLUMN, *MACHINE_KEYS}
ROW_KEYS = {TASK_RESULTS: ("task", "eval_task"), HEADS: ("task", "head"), EPOCHS: ("task", "epoch")}


def identical(a_dir: str, b_dir: str, table: str) -> tuple[bool, str]:
    a, b = (pd.read_parquet(os.path.join(d, table)) for d in (a_dir, b_dir))
    rows = pd.read_parquet(os.path.join(a_dir, TASK_RESULTS))
    swept = [c for c in rows.columns if "." in c and c not in IGNORED and rows[c].map(np.isscalar).all()
             and rows[c].nunique(dropna=False) > 1]  # the keys a sweep varies (never lists)
    keys = ["approach", "seed", *[c for c in swept if c in a], *ROW_KEYS[table]]
    cols = sorted(set(a.columns) - IGNORED)
    if sorted(set(b.columns) - IGNORED) != cols or len(a) != len(b):
        return False, f"columns or row counts differ ({len(a)} vs {len(b)} rows)"
    a, b = (x[cols].sort_values(keys, kind="stable").reset_index(drop=True) for x in (a, b))
    for c in cols:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype.kind == "f" and y.dtype.kind == "f":
            same = np.array_equal(x.astype(np.float64).view(np.int64), y.astype(np.float64).view(np.int64))
        else:
            same = a[c].astype(str).equals(b[c].astype(str))
        if not same:
            return False, f"column {c} differs"
    return True, f"{len(a)} rows identical"


def images_trained(results: str) -> tuple[int, int, int]:
    """(images, tasks trained, tasks shared) of a sweep's rows."""
    from cil.data import load_dataset, make_scenario

    df = pd.read_parquet(os.path.join(results, TASK_RESULTS)).drop_duplicates(["trial_id", "task"])
    shared = df[SHARED_COLUMN].notna() if SHARED_COLUMN in df else pd.Series(False, index=df.index)
    sizes: dict[tuple, list[int]] = {}
    images = 0
    for _, row in df[~shared].iterrows():
        key = (row["dataset"], int(row["num_tasks"]), row.get("data.nc_first_task"), int(row["seed"]),
               float(row["data.val_fraction"]))
        if key not in sizes:
            data = load_dataset(row["dataset"], row["data.data_root"],
                                fixed_class_order=bool(row["data.fixed_class_order"]))
            nc_first = None if pd.isna(key[2]) else int(key[2])
            scenario = make_scenario(data, key[1], nc_first, key[3], val_fraction=key[4])
            sizes[key] = [len(scenario.task_split(t, "train")[1]) for t in range(key[1])]
        t = int(row["task"])
        per_epoch = sum(sizes[key][: t + 1]) if row["approach"] == "joint" else sizes[key][t]
        images += int(row["train.nepochs"]) * per_epoch
    return images, int((~shared).sum()), int(shared.sum())


def main(argv: list[str] | None = None) -> int:
    no_share, share = (argv or sys.argv[1:])[:2]
    ok = True
    for table in (TASK_RESULTS, HEADS, EPOCHS):
        same, detail = identical(no_share, share, table)
        ok &= same
        print(f"{table}: {detail}")
    (a, ta, _), (b, tb, sb) = images_trained(no_share), images_trained(share)
    print(f"images trained: {a} without sharing ({ta} tasks), {b} with ({tb} tasks, {sb} shared): "
          f"{100 * (1 - b / a):.1f}% fewer")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
