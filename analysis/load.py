"""Read a sweep's Parquet results (local or any pyarrow filesystem) into one checked DataFrame.

Everything downstream trusts what this module returns: every file is checked against the schema
(the error names the file and the missing column), rows are unique per key, indices are in range,
accuracies are fractions, and every row says whether its trial finished (``complete``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.errors import ResultsError, ResultsWarning
from analysis.trials import complete_trials, drop_duplicates, trial_codes
from cil.results_schema import (
    EPOCHS,
    HEADS,
    INTEGER_COLUMNS,
    NUMERIC_COLUMNS,
    REQUIRED,
    ROW_KEYS,
    TABLES,
    TASK_RESULTS,
)

PathLike = str | os.PathLike
_NAMED_SKIPS = 10  # skipped files named one by one; past that, one count


def load(path: PathLike, filesystem: pafs.FileSystem | None = None, *, strict: bool = False) -> pd.DataFrame:
    """All ``task_results`` rows under ``path``, plus a per-row ``complete`` flag for its trial.

    ``path`` may be a sweep's ``results/`` folder, the sweep folder, a folder of several sweeps, a
    ``task_results/`` folder, a single Parquet file, or a URI (``s3://bucket/storage/sweep``).
    Trials still running or errored are kept with ``complete == False``. Files are read in sorted
    path order; if a (sweep, trial_id, task, eval_task) row appears twice, the last one read is
    kept and a warning says so. A file that is not readable Parquet, or lacks the table's columns
    (truncated, or foreign), is skipped with a :class:`ResultsWarning` naming it; ``strict=True``
    raises :class:`ResultsError` instead.
    """
    df, files, file_of_row = _read(path, TASK_RESULTS, filesystem, strict)
    codes, first = trial_codes(df)
    _check_task_values(df, codes, first, files, file_of_row)
    df, codes, first = drop_duplicates(df, codes, first, ROW_KEYS[TASK_RESULTS], TASK_RESULTS)
    num_tasks = df["num_tasks"].to_numpy(dtype=np.int64)
    with warnings.catch_warnings():  # the blocks are split on purpose (_read): no consolidating copy here
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        df["complete"] = complete_trials(codes, first, num_tasks)[codes]
    return df


def load_heads(path: PathLike, filesystem: pafs.FileSystem | None = None, *, strict: bool = False
               ) -> pd.DataFrame:
    """All ``heads`` rows (per-head weight norm and bias mean after each task) under ``path``; bad
    files as in :func:`load`."""
    df, files, file_of_row = _read(path, HEADS, filesystem, strict)
    _check_not_null(df, ("sweep", "trial_id", "task", "head"), files, file_of_row)
    task = df["task"].to_numpy(dtype=np.int64)
    head = df["head"].to_numpy(dtype=np.int64)
    _fail_rows(df, (task < 0) | (head < 0) | (head > task), files, file_of_row,
               "needs 0 <= head <= task")
    df, _, _ = drop_duplicates(df, *trial_codes(df), ROW_KEYS[HEADS], HEADS)
    return df


def load_epochs(path: PathLike, filesystem: pafs.FileSystem | None = None, *, strict: bool = False
                ) -> pd.DataFrame:
    """All ``epochs`` rows under ``path``: one per trained epoch of each (trial, task), with the training
    loss, each loss term's mean (``term.<name>``; null in tasks without that term), the validation
    loss and task-aware accuracy, the lr and the epoch's seconds. Readable while a sweep runs; bad files
    as in :func:`load`."""
    df, files, file_of_row = _read(path, EPOCHS, filesystem, strict)
    _check_not_null(df, ("sweep", "trial_id", "task", "epoch"), files, file_of_row)
    task = df["task"].to_numpy(dtype=np.int64)
    epoch = df["epoch"].to_numpy(dtype=np.int64)
    _fail_rows(df, (task < 0) | (epoch < 1), files, file_of_row, "needs task >= 0 and epoch >= 1")
    df, _, _ = drop_duplicates(df, *trial_codes(df), ROW_KEYS[EPOCHS], EPOCHS)
    return df


def resolve(path: PathLike, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it; plain local paths are made absolute."""
    text = os.fspath(path)
    if filesystem is not None:
        return filesystem, text
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ResultsError(f"{text}: cannot open this URI with pyarrow ({exc})") from exc


def find_files(path: PathLike, table: str, filesystem: pafs.FileSystem | None = None
               ) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files of ``table`` under ``path``, sorted; in-flight temp files are skipped.

    A file belongs to the table its nearest ``task_results``/``heads`` ancestor folder names, so a
    sweep folder, a folder of sweeps and the table folder itself all work. Names starting with
    ``.`` or ``_`` (at any level below ``path``) and names ending in ``.tmp`` are writers' temp files.
    """
    fs, root = resolve(path, filesystem)
    shown = os.fspath(path)
    try:
        info = fs.get_file_info(root)
    except (pa.ArrowException, OSError) as exc:
        raise ResultsError(f"{shown}: cannot read ({exc})") from exc
    if info.type == pafs.FileType.NotFound:
        raise ResultsError(f"{shown}: no such file or folder")
    if info.type == pafs.FileType.File:
        return fs, [root]
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise ResultsError(f"{shown}: cannot list ({exc})") from exc
    root_parts = [p for p in root.rstrip("/").split("/") if p]
    visible, files = 0, []
    for item in infos:
        if item.type != pafs.FileType.File:
            continue
        rel = item.path[len(root.rstrip("/")):].strip("/").split("/")
        if any(part.startswith((".", "_")) for part in rel) or rel[-1].endswith(".tmp"):
            continue
        visible += 1
        owner = next((p for p in reversed(root_parts + rel[:-1]) if p in TABLES), None)
        if owner == table:
            files.append(item.path)
    if not files:
        if visible == 0:
            raise ResultsError(f"{shown}: empty folder, no results files in it")
        raise ResultsError(
            f"{shown}: no {table} Parquet files found (looked for <sweep>/results/{table}/*.parquet "
            f"among {visible} files)")
    return fs, sorted(files)


def _read(path: PathLike, table: str, filesystem: pafs.FileSystem | None, strict: bool
          ) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """Read and schema-check every file, skipping (or, ``strict``, failing on) the unreadable and the
    foreign ones; return the frame, the files and each row's file index."""
    fs, files = find_files(path, table, filesystem)

    def read_one(file: str) -> pa.Table | ResultsError:
        try:
            # Threads across files already; one file is small, so no threads inside it.
            return pq.read_table(file, filesystem=fs, use_threads=len(files) < 4)
        except (pa.ArrowException, OSError) as exc:
            return ResultsError(f"{file}: not a readable Parquet file ({exc})")

    # Reading many small files is latency-bound, more so on object stores: read them concurrently.
    workers = 16 if isinstance(fs, pafs.LocalFileSystem) else 64
    with ThreadPoolExecutor(max_workers=min(workers, len(files))) as pool:
        read = list(pool.map(read_one, files))
    good: list[tuple[str, pa.Table]] = []
    skipped: list[ResultsError] = []
    for file, tbl in zip(files, read, strict=True):
        # Files with no rows add nothing (a writer may leave one, even without columns).
        problem = tbl if isinstance(tbl, ResultsError) else None if tbl.num_rows == 0 else \
            _schema_problem(file, tbl.schema, table)
        if problem is not None:
            if strict:
                raise problem
            skipped.append(problem)
        elif tbl.num_rows > 0:
            good.append((file, tbl))
    for problem in skipped[:_NAMED_SKIPS]:
        warnings.warn(f"skipped {problem} (strict=True, or --strict, fails instead)", ResultsWarning,
                      stacklevel=3)
    if len(skipped) > _NAMED_SKIPS:
        warnings.warn(f"skipped {len(skipped) - _NAMED_SKIPS} more unreadable or foreign {table} files",
                      ResultsWarning, stacklevel=3)
    if not good:
        if skipped:
            raise ResultsError(f"{os.fspath(path)}: no readable {table} file ({len(skipped)} skipped; the "
                               f"first: {skipped[0]})")
        raise ResultsError(f"{os.fspath(path)}: the {table} files hold no rows yet")
    files, tables = [f for f, _ in good], [t for _, t in good]
    del read, good
    try:
        merged = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _conflict_error(files, tables, exc) from exc
    lengths = np.fromiter((t.num_rows for t in tables), dtype=np.int64, count=len(tables))
    file_of_row = np.repeat(np.arange(len(tables)), lengths)
    if len(tables) > 64:  # many small chunks convert slowly
        merged = merged.combine_chunks()
    del tables
    # split_blocks skips pandas' block consolidation (a copy of every numeric column);
    # self_destruct frees the Arrow buffers column by column as they convert.
    df = merged.to_pandas(split_blocks=True, self_destruct=True)
    return df, files, file_of_row


def _schema_problem(file: str, schema: pa.Schema, table: str) -> ResultsError | None:
    """The file and its first problem, a missing column or a column of the wrong kind (None: none)."""
    required = REQUIRED[table]
    names = set(schema.names)
    missing = [c for c in required if c not in names]
    if missing:
        has = ", ".join(schema.names[:8]) + (f" and {len(schema.names) - 8} more" if len(schema.names) > 8 else "")
        return ResultsError(
            f"{file}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} of a {table} file (it has: {has or 'no columns'})")
    for name in INTEGER_COLUMNS[table]:
        kind = schema.field(name).type
        if not pa.types.is_integer(kind):
            return ResultsError(f"{file}: column {name!r} must hold integers, found {kind}")
    for name in NUMERIC_COLUMNS[table]:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            return ResultsError(f"{file}: column {name!r} must hold numbers, found {kind}")
    return None


def _conflict_error(files: Sequence[str], tables: Sequence[pa.Table], exc: Exception) -> ResultsError:
    """Name the column whose type differs between two files, which is what the user must fix."""
    seen: dict[str, tuple[str, pa.DataType]] = {}
    for file, tbl in zip(files, tables, strict=True):
        for field in tbl.schema:
            if pa.types.is_null(field.type):
                continue
            if field.name not in seen:
                seen[field.name] = (file, field.type)
                continue
            other_file, other = seen[field.name]
            try:
                pa.unify_schemas([pa.schema([field]), pa.schema([pa.field(field.name, other)])],
                                 promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return ResultsError(f"column {field.name!r} is {other} in {other_file} but {field.type} "
                                    f"in {file}: the files cannot be read as one table")
    return ResultsError(f"the results files cannot be read as one table: {exc}")


def _fail_rows(df: pd.DataFrame, bad: np.ndarray, files: Sequence[str], file_of_row: np.ndarray,
               rule: str) -> None:
    """Raise for the first row that breaks ``rule``, naming its file and trial."""
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    row = df.iloc[i]
    shown = {c: row[c] for c in ("trial_id", "num_tasks", "task", "eval_task", "head") if c in df.columns}
    details = ", ".join(f"{k}={v}" for k, v in shown.items())
    raise ResultsError(f"{files[file_of_row[i]]}: {int(bad.sum())} rows break the schema: {rule} "
                       f"(first: {details})")


def _check_not_null(df: pd.DataFrame, names: Sequence[str], files: Sequence[str],
                    file_of_row: np.ndarray) -> None:
    for name in names:
        _fail_rows(df, df[name].isna().to_numpy(), files, file_of_row, f"{name!r} must not be null")


def _check_task_values(df: pd.DataFrame, codes: np.ndarray, first: np.ndarray, files: Sequence[str],
                       file_of_row: np.ndarray) -> None:
    """Keys present, indices in range, one num_tasks per trial, accuracies in [0, 1]."""
    _check_not_null(df, ("sweep", "trial_id", "num_tasks", "task", "eval_task"), files, file_of_row)
    t = df["task"].to_numpy(dtype=np.int64)
    u = df["eval_task"].to_numpy(dtype=np.int64)
    n = df["num_tasks"].to_numpy(dtype=np.int64)
    _fail_rows(df, (u < 0) | (u > t) | (t >= n), files, file_of_row,
               "needs 0 <= eval_task <= task < num_tasks")
    _fail_rows(df, n != n[first][codes], files, file_of_row,
               "num_tasks must be the same in every row of a trial")
    for name in ("acc_taw", "acc_tag"):
        acc = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = (acc < 0) | (acc > 1)
        _fail_rows(df, bad, files, file_of_row,
                   f"{name!r} must be a fraction in [0, 1] (percentages are not accepted)")
