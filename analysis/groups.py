"""Which trials are compared together: grouping columns, their validation, and readable labels.

Every group is split by dataset and num_tasks whatever the user asks for, because averaging
accuracies of different benchmarks is never meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from cil.results_schema import METRICS, SETTING_COLUMNS

# Per-trial outputs of trial_metrics: meaningful to filter on, not to group by.
_NOT_GROUPABLE = frozenset({*METRICS, "complete", "last_task", "classes_seen", "train_seconds"})


def as_columns(by: str | Sequence[str] | None) -> list[str]:
    """``"approach"`` or ``("approach", "loss.lamb")`` -> a list; None -> the default, approach."""
    if by is None:
        return ["approach"]
    if isinstance(by, str):
        return [by]
    return list(by)


def group_keys(trials: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
    """``by`` plus dataset and num_tasks, after checking every name is a per-trial column."""
    wanted = as_columns(by)
    valid = [c for c in trials.columns if c not in _NOT_GROUPABLE]
    unknown = [c for c in wanted if c not in valid]
    if unknown:
        raise ResultsError(
            f"cannot group by {', '.join(repr(c) for c in unknown)}: not a per-trial column of these "
            f"results; valid columns are: {', '.join(valid)}")
    if not wanted:
        raise ResultsError(f"give at least one column to group by; valid columns are: {', '.join(valid)}")
    return list(dict.fromkeys([*wanted, *SETTING_COLUMNS]))


def group_trials(trials: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group code per trial (in sorted group order) and one row of key values per group."""
    grouped = trials.groupby(keys, dropna=False, sort=True)
    codes = grouped.ngroup().to_numpy()
    groups = grouped.size().reset_index()[keys]
    return codes, groups


def format_value(value: object) -> str:
    """Compact text for a key value: missing -> '-', 0.50 -> '0.5', 10.0 -> '10'."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def labels(groups: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Legend text per group: the key values, named when more than one key varies."""
    shown = [k for k in keys if k not in SETTING_COLUMNS]
    if len(shown) == 1:
        return [format_value(v) for v in groups[shown[0]]]
    return [", ".join(f"{k}={format_value(row[k])}" for k in shown) for _, row in groups.iterrows()]


def setting_title(dataset: object, num_tasks: object) -> str:
    """'cifar100, 10 tasks' for figure panels."""
    return f"{format_value(dataset)}, {format_value(num_tasks)} tasks"


def matches(values: pd.Series, text: str) -> np.ndarray:
    """Which values equal ``text``, compared as numbers for numeric columns."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        try:
            return (values.to_numpy(dtype=np.float64, na_value=np.nan) == float(text))
        except ValueError:
            return np.zeros(len(values), dtype=bool)
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        return (values == text).fillna(False).to_numpy(dtype=bool)
    return (values.map(format_value) == text).to_numpy(dtype=bool)
