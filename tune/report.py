"""The table printed when a sweep ends: the analysis package's summary when it is importable, else a
plain per-trial table read straight from the Parquet rows."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cil.results import TASK_RESULTS, join, resolve


def final_table(results_dir: str, by: Sequence[str] = ("approach",)) -> str:
    try:
        import analysis
    except ImportError:
        analysis = None
    if analysis is not None and hasattr(analysis, "summary"):
        try:
            return analysis.format_table(analysis.summary(analysis.load(results_dir), by=list(by)))
        except analysis.ResultsError as err:
            return f"(no summary: {err})"
    return per_trial_table(read_task_results(results_dir), by)


def read_task_results(results_dir: str) -> pd.DataFrame:
    """Every task_results row under ``results_dir`` (local or s3://); files are read one by one and
    their schemas merged, since a column can be all-null in one trial and typed in another."""
    fs, base = resolve(results_dir)
    selector = pa.fs.FileSelector(join(base, TASK_RESULTS), allow_not_found=True)
    files = sorted(i.path for i in fs.get_file_info(selector)
                   if i.path.endswith(".parquet") and not i.base_name.startswith("."))
    if not files:
        return pd.DataFrame()
    tables = [pq.read_table(f, filesystem=fs) for f in files]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def per_trial_table(df: pd.DataFrame, by: Sequence[str] = ("approach",)) -> str:
    """One line per trial: its grouping values and average accuracy/forgetting after its last task."""
    if df.empty:
        return "(no results)"
    last = df[df["task"] == df.groupby("trial_id")["task"].transform("max")].copy()
    old = last["eval_task"] < last["task"]  # forgetting averages over the tasks before the last
    last["forg_tag"], last["forg_taw"] = last["forg_tag"].where(old), last["forg_taw"].where(old)
    keys = [k for k in dict.fromkeys([*by, "seed"]) if k in df.columns]
    table = last.groupby("trial_id").agg(
        **{k: (k, "first") for k in keys}, tasks_done=("task", lambda t: int(t.max()) + 1),
        num_tasks=("num_tasks", "first"), avg_acc_tag=("acc_tag", "mean"), avg_acc_taw=("acc_taw", "mean"),
        forg_tag=("forg_tag", "mean"), forg_taw=("forg_taw", "mean"))
    return table.sort_values(keys).to_string(float_format=lambda v: f"{v:.3f}")
