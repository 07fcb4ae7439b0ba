"""Trial identity in vectorised form: one integer code per row, so per-trial work is a bincount.

A trial is ``(sweep, trial_id)``. Codes are numbered in order of first appearance, which gives the
first row of every trial in one pass and keeps per-trial outputs in the order the data was read.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cil.results_schema import TRIAL_KEYS


def trial_codes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-row trial code (0..n_trials-1) and the index of each trial's first row."""
    if len(df) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    trial, trial_uniques = pd.factorize(df[TRIAL_KEYS[1]], use_na_sentinel=False)
    codes = trial.astype(np.int64, copy=False)
    first = _first_rows(codes)
    sweep, sweep_uniques = pd.factorize(df[TRIAL_KEYS[0]], use_na_sentinel=False)
    if len(sweep_uniques) > 1 and (sweep != sweep[first][codes]).any():
        # The same trial_id in several sweeps: number (sweep, trial_id) pairs instead.
        codes, _ = pd.factorize(sweep.astype(np.int64) * (len(trial_uniques) + 1) + trial)
        codes = codes.astype(np.int64, copy=False)
        first = _first_rows(codes)
    return codes, first


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """First row of each code, for codes numbered in order of first appearance: the running
    maximum of such codes steps up exactly at first rows."""
    running = np.maximum.accumulate(codes)
    return np.flatnonzero(np.r_[True, running[1:] != running[:-1]])


def row_key(codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per (trial, a, b); a and b are small non-negative integers (task indices)."""
    span_b = int(b.max()) + 1 if len(b) else 1
    span_a = int(a.max()) + 1 if len(a) else 1
    return (codes * span_a + a) * span_b + b


def drop_duplicates(df: pd.DataFrame, codes: np.ndarray, first: np.ndarray, keys: tuple[str, str],
                    what: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Keep the last row of each (trial, *keys). Identical copies are dropped silently (a finished
    trial's per-task files are merged into one, and a reader may catch both for a moment); differing
    values warn: they mean a writer misbehaved.

    Returns the rows with their trial codes and first rows (renumbered when rows were dropped).
    """
    a = df[keys[0]].to_numpy(dtype=np.int64)
    b = df[keys[1]].to_numpy(dtype=np.int64)
    key = row_key(codes, a, b)
    if len(key) == 0:
        return df, codes, first
    span = int(key.max()) + 1
    # Usually there is no duplicate: prove it with a cheap count per key, then look closer.
    if span <= 8 * len(key) + 1_000_000 and np.bincount(key, minlength=span).max() <= 1:
        return df, codes, first
    dup = pd.Series(key).duplicated(keep="last").to_numpy()
    if not dup.any():
        return df, codes, first
    if _copies_only(df, key):  # a trial's files caught while being compacted into one: same rows twice
        df = df.loc[~dup].reset_index(drop=True)
        return (df, *trial_codes(df))
    first_dup = df.loc[dup].iloc[0]
    warnings.warn(
        f"{what}: {int(dup.sum())} duplicate rows for the same (sweep, trial_id, {', '.join(keys)}) "
        f"(e.g. trial {first_dup['trial_id']!r}, {keys[0]}={first_dup[keys[0]]}, "
        f"{keys[1]}={first_dup[keys[1]]}); kept the last one read", stacklevel=3)
    df = df.loc[~dup].reset_index(drop=True)
    return (df, *trial_codes(df))


_VALUE_COLUMNS = ("acc_taw", "acc_tag", "forg_taw", "forg_tag", "classes_seen", "weight_norm", "bias_mean",
                  "train_loss", "val_loss", "val_acc_taw", "lr")


def _copies_only(df: pd.DataFrame, key: np.ndarray) -> bool:
    """True when every duplicated key carries the same values each time (identical copies)."""
    repeated = pd.Series(key).duplicated(keep=False).to_numpy()
    values = [c for c in _VALUE_COLUMNS if c in df.columns]
    sub = df.loc[repeated, values].assign(_key=key[repeated])
    return bool((sub.groupby("_key")[values].nunique(dropna=False) <= 1).all().all())


def complete_trials(codes: np.ndarray, first: np.ndarray, num_tasks: np.ndarray) -> np.ndarray:
    """Per trial: True when every (task, eval_task) cell with eval_task <= task < num_tasks is present.

    Rows must be unique per cell and in range (the loader checks both), so a row count of
    T(T+1)/2 means the whole triangle is there. Trials still running, errored, or with a lost
    file fall short and are reported as partial instead of entering final numbers.
    """
    counts = np.bincount(codes, minlength=len(first))
    t = num_tasks[first].astype(np.int64)
    return counts == t * (t + 1) // 2
