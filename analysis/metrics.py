"""Per-trial metrics of docs/design.md (TAg and TAw), computed for all trials at once with bincounts.

Definitions, for a trial with T tasks and acc[t, u] the accuracy on task u after training task t:
- average accuracy after t = mean over u <= t of acc[t, u] (the per-step curve, against classes seen);
- ``final_acc``   = average accuracy after the last task;
- ``avg_inc_acc`` = mean over t of the average accuracy after t;
- ``final_forg``  = mean over u < T-1 of forg[T-1, u]; 0 when T = 1 (nothing earlier to forget);
- ``paper_avg_acc``  = mean of the T(T+1)/2 entries acc[t, u], u <= t (the paper's "average accuracy");
- ``paper_avg_forg`` = mean of the T(T-1)/2 entries max(forg[t, u], 0), u < t (the paper's "average
  forgetting": its scripts average the largest T(T-1)/2 entries of the whole forgetting matrix, whose
  other entries are 0, so a negative entry counts as 0); 0 when T = 1.
Partial trials (running or errored) get the same numbers taken at their last trained task, and
``complete == False`` so summaries can leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from analysis.trials import complete_trials, drop_duplicates, trial_codes
from cil.results_schema import METRICS, TASK_COLUMNS, TASK_RESULTS, varies_per_row

_STEP_VALUES = ("acc_tag", "acc_taw", "forg_tag", "forg_taw", "classes_seen", "train_seconds")


@dataclass
class Steps:
    """Per-(trial, task) averages as (n_trials, max_tasks) arrays; NaN where a task has no rows."""

    trials: pd.DataFrame  # one row per trial: identity and config columns, plus ``complete``
    present: np.ndarray
    last: np.ndarray  # index of each trial's last task with results
    values: dict[str, np.ndarray]


def trial_columns(df: pd.DataFrame) -> list[str]:
    """Columns that are constant within a trial (identity and config), in frame order: not the per-row
    ones (an approach's other score sets' accuracies, ``acc_taw_heads``, among them)."""
    return [c for c in df.columns if not varies_per_row(TASK_RESULTS, c)]


def steps(df: pd.DataFrame) -> tuple[Steps, pd.DataFrame, np.ndarray]:
    """Check the rows, then average them per (trial, task); also return the checked rows (without
    duplicates) and each row's trial code."""
    missing = [c for c in TASK_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"not a {TASK_RESULTS} frame: missing column(s) {', '.join(map(repr, missing))}")
    if len(df) == 0:
        raise ResultsError(f"the {TASK_RESULTS} frame has no rows")
    for name in ("num_tasks", "task", "eval_task"):
        if df[name].isna().any():
            raise ResultsError(f"column {name!r} must not be null")
    codes, first = trial_codes(df)
    t = df["task"].to_numpy(dtype=np.int64)
    u = df["eval_task"].to_numpy(dtype=np.int64)
    n = df["num_tasks"].to_numpy(dtype=np.int64)
    if ((u < 0) | (u > t) | (t >= n)).any():
        raise ResultsError("rows break the schema: needs 0 <= eval_task <= task < num_tasks")
    df, codes, first = drop_duplicates(df, codes, first, ("task", "eval_task"), TASK_RESULTS)
    t, u, n = (df[c].to_numpy(dtype=np.int64) for c in ("task", "eval_task", "num_tasks"))

    n_trials, width = len(first), int(n.max())
    cell = codes * width + t
    size = n_trials * width
    rows = np.bincount(cell, minlength=size)
    older = u < t
    n_older = np.bincount(cell[older], minlength=size)
    values = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in _STEP_VALUES:
            x = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
            if name.startswith("forg"):
                # Mean forgetting over earlier tasks only; after the first task there is none: 0.
                total = np.bincount(cell[older], weights=x[older], minlength=size)
                mean = np.where(n_older > 0, total / n_older, 0.0)
            else:
                mean = np.bincount(cell, weights=x, minlength=size) / rows
            values[name] = np.where(rows > 0, mean, np.nan).reshape(n_trials, width)
    present = (rows > 0).reshape(n_trials, width)
    last = width - 1 - np.argmax(present[:, ::-1], axis=1)
    trials = with_columns(df.iloc[first][trial_columns(df)].reset_index(drop=True),
                          {"complete": complete_trials(codes, first, n)})
    return Steps(trials, present, last, values), df, codes


def with_columns(frame: pd.DataFrame, columns: dict[str, object]) -> pd.DataFrame:
    """``frame`` with ``columns`` added (or replaced) in one concatenation, consolidated: a results frame
    holds a block per column (the loader skips consolidation for speed), and adding columns to such a
    frame, here or in the caller's code, makes pandas warn (PerformanceWarning). The frames built here
    have a row per trial (or per trial and task), so the consolidating copy is cheap."""
    new = pd.DataFrame(columns, index=frame.index)
    return pd.concat([frame.drop(columns=[c for c in columns if c in frame.columns]), new], axis=1).copy()


def _like(source: pd.Series, values: np.ndarray) -> np.ndarray:
    """Per-step means of an integer column (classes_seen) back as integers when they are whole."""
    if pd.api.types.is_integer_dtype(source) and np.all(np.isfinite(values)) and np.all(values % 1 == 0):
        return values.astype(np.int64)
    return values


def trial_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its identity and config columns, ``complete``, ``last_task``, the
    final ``classes_seen``, the metrics of summary.csv (schema.METRICS) and the total ``train_seconds``."""
    s, rows, codes = steps(df)
    idx = np.arange(len(s.trials))
    new: dict[str, np.ndarray] = {"last_task": s.last,
                                  "classes_seen": _like(df["classes_seen"], s.values["classes_seen"][idx, s.last])}
    n_steps = s.present.sum(axis=1)
    for kind in ("tag", "taw"):
        acc = s.values[f"acc_{kind}"]
        new[f"final_acc_{kind}"] = acc[idx, s.last]
        # NaN accuracies in the data propagate; absent steps (partial trials) do not count.
        new[f"avg_inc_acc_{kind}"] = np.where(s.present, acc, 0.0).sum(axis=1) / n_steps
        new[f"final_forg_{kind}"] = s.values[f"forg_{kind}"][idx, s.last]
    new |= _paper_averages(rows, codes, len(s.trials))
    new["train_seconds"] = np.where(s.present, s.values["train_seconds"], 0.0).sum(axis=1)
    out = with_columns(s.trials, new)
    return out[[*s.trials.columns, "last_task", "classes_seen", *METRICS, "train_seconds"]]


def _paper_averages(rows: pd.DataFrame, codes: np.ndarray, n_trials: int) -> dict[str, np.ndarray]:
    """The paper's averages per trial over every (t, u) row it has: accuracy over u <= t, forgetting
    (negatives as 0) over u < t (0 when there is no such row)."""
    older = (rows["eval_task"].to_numpy(dtype=np.int64) < rows["task"].to_numpy(dtype=np.int64))
    n_rows = np.bincount(codes, minlength=n_trials)
    n_older = np.bincount(codes[older], minlength=n_trials)
    out = {}
    for kind in ("tag", "taw"):
        acc = rows[f"acc_{kind}"].to_numpy(dtype=np.float64, na_value=np.nan)
        forg = np.maximum(rows[f"forg_{kind}"].to_numpy(dtype=np.float64, na_value=np.nan)[older], 0.0)
        out[f"paper_avg_acc_{kind}"] = np.bincount(codes, weights=acc, minlength=n_trials) / n_rows
        total = np.bincount(codes[older], weights=forg, minlength=n_trials)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"paper_avg_forg_{kind}"] = np.where(n_older > 0, total / np.maximum(n_older, 1), 0.0)
    return out


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, task): average TAg/TAw accuracy after that task (mean over u <= task),
    average forgetting (mean over u < task), and ``classes_seen`` for the x axis."""
    s, _, _ = steps(df)
    trial, task = np.nonzero(s.present)
    new = {"task": task, **{name: s.values[name][trial, task]
                            for name in ("classes_seen", "acc_tag", "acc_taw", "forg_tag", "forg_taw")}}
    new["classes_seen"] = _like(df["classes_seen"], new["classes_seen"])
    return with_columns(s.trials.iloc[trial].reset_index(drop=True), new)


def final_forgetting(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, eval_task u < last task): forg_tag and forg_taw after the trial's last task."""
    s, rows, codes = steps(df)
    t = rows["task"].to_numpy(dtype=np.int64)
    u = rows["eval_task"].to_numpy(dtype=np.int64)
    keep = (t == s.last[codes]) & (u < t)
    new = {"eval_task": u[keep], **{name: rows[name].to_numpy(dtype=np.float64, na_value=np.nan)[keep]
                                    for name in ("forg_tag", "forg_taw")}}
    return with_columns(s.trials.iloc[codes[keep]].reset_index(drop=True), new)
