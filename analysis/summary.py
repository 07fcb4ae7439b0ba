"""Mean, std and 95% CI of every metric over the seeds of each group, and deltas to a baseline.

The result has the layout of summary.csv: the grouping columns (``by`` plus dataset and num_tasks,
always), ``n_seeds`` (trials in the group), then per metric ``_mean``, ``_std`` (ddof=1) and
``_ci95``; with a baseline also ``_delta`` and ``_delta_ci95``. Values stay fractions.
Messages for the reader (partial trials left out, unpaired deltas...) go to ``result.attrs["notes"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from analysis.groups import format_value, group_keys, matches, ordered
from analysis.metrics import trial_metrics, with_columns
from analysis.stats import ci95, welch_ci95
from cil.results_schema import METRICS, SETTING_COLUMNS


def summary(df: pd.DataFrame, by: str | Sequence[str] | None = ("approach",), baseline: str | None = None,
            include_partial: bool = False) -> pd.DataFrame:
    """Summarise ``df`` (``load()`` output, or ``trial_metrics()`` output) per group.

    ``baseline`` names an approach (``"lwf"``), or ``"COLUMN=VALUE"`` for another grouping column
    (``"loss.lamb=0"``). Each group is compared with the baseline group that has the same values of
    the other grouping columns. Where they share seeds, the delta is the mean over shared seeds of
    metric(group, seed) - metric(baseline, seed) with a paired t interval (several trials with one
    seed are averaged first); with no shared seed it is the difference of means with a Welch
    interval. Partial trials are left out unless ``include_partial``.
    """
    trials = df if _is_trial_metrics(df) else trial_metrics(df)
    keys = group_keys(trials, by)
    selector = _baseline_selector(trials, keys, baseline) if baseline is not None else None
    notes: list[str] = []
    partial = ~trials["complete"].to_numpy(dtype=bool)
    if partial.any():
        if include_partial:
            notes.append(f"{_count(partial.sum(), 'partial trial')} included, with metrics at their "
                         "last trained task")
        else:
            notes.append(f"{_count(partial.sum(), 'partial trial')} excluded (running or errored; "
                         "include_partial=True or --include-partial to see them)")
    used = trials if include_partial else trials.loc[~partial]
    if len(used) == 0:
        notes.append("no trials to summarise")
    table, counts = _group_stats(used, keys)
    n_paired = None
    if selector is not None:
        table, n_paired = _add_deltas(table, counts, used, keys, selector, notes)
    notes.extend(_repeated_seed_notes(used, keys))
    table.attrs["notes"] = notes
    if n_paired is not None:
        table.attrs["n_paired"] = n_paired
        table.attrs["baseline"] = selector
    return table


def _is_trial_metrics(df: pd.DataFrame) -> bool:
    has_metrics = "complete" in df.columns and all(m in df.columns for m in METRICS)
    return has_metrics and "eval_task" not in df.columns


def _count(n: int, noun: str) -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def _group_stats(used: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The summary table without deltas, and the non-NaN count per metric (for Welch intervals)."""
    grouped = used.groupby(keys, dropna=False, sort=True)
    sizes = grouped.size().rename("n_seeds").reset_index()
    order = ordered(sizes[keys]).index.to_numpy()  # the approaches in the registry's order
    columns: dict[str, np.ndarray] = {}
    counts = {}
    for m in METRICS:
        column = grouped[m]
        std = column.std(ddof=1).to_numpy(dtype=np.float64)[order]
        counts[m] = column.count().to_numpy(dtype=np.float64)[order]
        columns[f"{m}_mean"] = column.mean().to_numpy(dtype=np.float64)[order]
        columns[f"{m}_std"] = std
        columns[f"{m}_ci95"] = ci95(std, counts[m])
    sizes = sizes.iloc[order].reset_index(drop=True)
    return with_columns(sizes, columns), counts


def _baseline_selector(trials: pd.DataFrame, keys: list[str], baseline: str) -> tuple[str, str]:
    """(column, value) of the baseline, after checking it names groups that exist."""
    column, text = "approach", baseline
    if "=" in baseline and baseline.split("=", 1)[0] in trials.columns:
        column, text = baseline.split("=", 1)
    if column in SETTING_COLUMNS:
        raise ResultsError(f"baseline {baseline!r}: groups with different {column} are never compared")
    if column not in keys:
        options = [k for k in keys if k not in SETTING_COLUMNS]
        raise ResultsError(
            f"baseline {baseline!r} compares values of {column!r}, which is not a grouping column "
            f"(grouping by: {', '.join(options)}); add {column!r} to by, or write COLUMN=VALUE with one "
            f"of: {', '.join(options)}")
    if not matches(trials[column], text).any():
        values = sorted({format_value(v) for v in trials[column]})
        raise ResultsError(f"unknown baseline {text!r}: the {column} values in these results are: "
                           f"{', '.join(values)}")
    return column, text


def _add_deltas(table: pd.DataFrame, counts: dict[str, np.ndarray], used: pd.DataFrame, keys: list[str],
                selector: tuple[str, str], notes: list[str]) -> tuple[pd.DataFrame, list[int]]:
    """Append ``<metric>_delta`` and ``<metric>_delta_ci95`` after each metric's columns."""
    column, text = selector
    others = [k for k in keys if k != column]
    base_tag = "__base"

    # Paired: one value per (group, seed), matched with the baseline's value for that seed.
    per_seed = used.groupby([*keys, "seed"], dropna=False, sort=False)[list(METRICS)].mean().reset_index()
    base_seed = per_seed.loc[matches(per_seed[column], text), [*others, "seed", *METRICS]]
    paired = per_seed.merge(base_seed, on=[*others, "seed"], how="inner", suffixes=("", base_tag))
    for m in METRICS:
        paired[m] = paired[m] - paired[m + base_tag]
    grouped = paired.groupby(keys, dropna=False, sort=False)
    stats: dict[str, np.ndarray] = {}
    for m in METRICS:
        stats["__mean_" + m] = grouped[m].mean().to_numpy(dtype=np.float64)
        stats["__std_" + m] = grouped[m].std(ddof=1).to_numpy(dtype=np.float64)
        stats["__count_" + m] = grouped[m].count().to_numpy(dtype=np.float64)
    pair_stats = with_columns(grouped.size().rename("__n_paired").reset_index(), stats)

    # Unpaired fallback: the baseline group's mean and spread, matched on the other keys.
    base_rows = matches(table[column], text)
    stats = {"__has_base": np.ones(int(base_rows.sum()), dtype=bool)}
    for m in METRICS:
        stats["__bmean_" + m] = table.loc[base_rows, f"{m}_mean"].to_numpy()
        stats["__bstd_" + m] = table.loc[base_rows, f"{m}_std"].to_numpy()
        stats["__bcount_" + m] = counts[m][base_rows]
    base_stats = with_columns(table.loc[base_rows, others], stats)

    joined = table.merge(pair_stats, on=keys, how="left").merge(base_stats, on=others, how="left")
    n_paired = joined["__n_paired"].fillna(0).to_numpy(dtype=np.int64)
    has_base = joined["__has_base"].notna().to_numpy()
    paired_rows = n_paired > 0
    added: dict[str, np.ndarray] = {}
    for m in METRICS:
        j = joined
        delta = np.where(paired_rows, j["__mean_" + m], j[f"{m}_mean"] - j["__bmean_" + m])
        half = np.where(paired_rows, ci95(j["__std_" + m], j["__count_" + m]),
                        welch_ci95(j[f"{m}_std"], counts[m], j["__bstd_" + m], j["__bcount_" + m]))
        added[f"{m}_delta"] = np.where(has_base, delta, np.nan)
        added[f"{m}_delta_ci95"] = np.where(has_base, half, np.nan)
    out = with_columns(table, added)
    out = out[[*keys, "n_seeds", *[f"{m}_{s}" for m in METRICS
                                   for s in ("mean", "std", "ci95", "delta", "delta_ci95")]]]

    label = f"{column}={text}" if column != "approach" else text
    missing = int((~has_base).sum())
    if missing:
        notes.append(f"{_count(missing, 'group')} without a baseline {label!r} in the same setting: "
                     "delta left empty")
    unpaired = has_base & ~paired_rows
    if unpaired.any():
        notes.append(f"{_count(unpaired.sum(), 'group')} share no seed with the baseline {label!r}: delta "
                     "is the difference of means with a Welch 95% CI")
    if (has_base & paired_rows).any():
        notes.append(f"deltas to {label!r} are paired by seed (mean over shared seeds, paired t 95% CI)")
    return out, n_paired.tolist()


def _repeated_seed_notes(used: pd.DataFrame, keys: list[str]) -> list[str]:
    """Warn when a group holds several trials with one seed: a column that varies is probably missing
    from ``by``, and the spread then mixes settings with seeds."""
    if len(used) == 0:
        return []
    per_seed = used.groupby([*keys, "seed"], dropna=False, sort=False).size()
    if (per_seed <= 1).all():
        return []
    skip = {*keys, "seed", "trial_id", "complete", "last_task", "classes_seen", "train_seconds", *METRICS}
    # Only hashable columns can be compared (a list-valued config leaf cannot).
    candidates = [c for c in used.columns if c not in skip and pd.api.types.is_scalar(used[c].iloc[0])]
    varying = []
    if candidates:
        spread = used.groupby([*keys, "seed"], dropna=False, sort=False)[candidates].nunique(dropna=False)
        varying = [c for c in candidates if (spread[c] > 1).any()]
    hint = f"; columns that differ between them: {', '.join(varying[:6])}" if varying else ""
    return [f"some groups hold several trials with the same seed ({int((per_seed > 1).sum())} group/seed "
            f"pairs){hint}. Each trial counts as one sample; add the differing columns to by to split them"]
