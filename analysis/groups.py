"""Which trials are compared together: grouping columns, their validation, and readable labels.

Every group is split by dataset and num_tasks whatever the user asks for, because averaging
accuracies of different benchmarks is never meaningful.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.errors import ResultsError
from cil.approaches.registry import APPROACHES, SPECS
from cil.results_schema import METRICS, SETTING_COLUMNS

#: approaches that are references, not methods (joint training): left out of "best approach" picks
UPPER_BOUNDS: tuple[str, ...] = tuple(name for name, s in SPECS.items() if s.upper_bound)

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
        close = {c: difflib.get_close_matches(c, valid, n=3, cutoff=0.6) for c in unknown}
        guesses = "; ".join(f"did you mean {' or '.join(map(repr, m))}{'' if len(unknown) == 1 else f' for {c!r}'}?"
                            for c, m in close.items() if m)
        raise ResultsError(
            f"cannot group by {', '.join(repr(c) for c in unknown)}: not a per-trial column of these "
            f"results{'; ' + guesses if guesses else ''} (valid columns are: {column_overview(valid)})")
    if not wanted:
        raise ResultsError(f"give at least one column to group by; valid columns are: {column_overview(valid)}")
    return list(dict.fromkeys([*wanted, *SETTING_COLUMNS]))


def column_overview(columns: Sequence[str]) -> str:
    """Column names a person can scan: the plain ones in full, dotted config keys counted per section
    (``loss.* (12 keys)``), since a sweep has over a hundred of them."""
    plain = [c for c in columns if "." not in c]
    sections = Counter(c.split(".", 1)[0] for c in columns if "." in c)
    parts = [*plain, *(f"{s}.* ({n} key{'s' if n > 1 else ''})" for s, n in sections.items())]
    return ", ".join(parts)


def group_trials(trials: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group code per trial (in :func:`ordered` group order) and one row of key values per group."""
    grouped = trials.groupby(keys, dropna=False, sort=True)
    groups = ordered(grouped.size().reset_index()[keys])
    position = np.empty(len(groups), dtype=np.int64)
    position[groups.index.to_numpy()] = np.arange(len(groups))
    return position[grouped.ngroup().to_numpy()], groups.reset_index(drop=True)


def approach_rank(names: pd.Series) -> pd.Series:
    """Sort key of approach names: the registry's order (the paper's families: baselines, LwF and its
    variants, LwM, LUCIR, ...), then unknown names alphabetically."""
    known = {name: i for i, name in enumerate(APPROACHES)}
    unknown = sorted({str(n) for n in names if n not in known})
    rank = known | {name: len(known) + i for i, name in enumerate(unknown)}
    return names.map(lambda n: rank.get(n, rank.get(str(n), len(rank))))


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a per-group table (one column per key) in a stable, meaningful order: settings first
    (dataset, num_tasks), then approaches in the registry's order, other keys ascending. The index is
    kept, so callers can map old positions to new ones."""
    keys = [k for k in (*SETTING_COLUMNS, *table.columns) if k in table.columns]
    keys = list(dict.fromkeys(keys))
    if not keys or len(table) < 2:
        return table
    return table.sort_values(keys, key=lambda col: approach_rank(col) if col.name == "approach" else col,
                             kind="stable", na_position="last")


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


def setting_titles(settings: Sequence[tuple[object, object]]) -> list[str]:
    """Panel titles of (dataset, num_tasks) settings with short data set names: a name's options
    (``synthetic:classes=50,channels=1,size=8,train=40``) are left out, or only those that tell two
    shown settings of one data set apart are kept (``synthetic (classes=20)``)."""
    names = [format_value(d) for d, _ in settings]
    options = {n: dict(o.split("=", 1) if "=" in o else (o, "") for o in n.partition(":")[2].split(",") if o)
               for n in names}
    shown = []
    for name, (_, num_tasks) in zip(names, settings, strict=True):
        base = name.partition(":")[0]
        rivals = {n for n in names if n.partition(":")[0] == base and n != name}
        differ = [k for k, v in options[name].items() if any(options[r].get(k) != v for r in rivals)]
        if rivals and not differ:  # e.g. "x:a=1" against "x:a=1,b=2" differ only by absent keys
            differ = [k for r in rivals for k in options[r] if k not in options[name]][:1] or list(options[name])
        parts = [f"{k}={options[name].get(k, '-')}" for k in differ]
        label = f"{base} ({', '.join(parts)})" if parts else base
        shown.append(f"{label}, {format_value(num_tasks)} tasks")
    return shown


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
