"""Result rows -> Parquet, written atomically on local paths and any pyarrow filesystem (s3://...).

Files are named by (trial, task), so a retried or resumed trial overwrites its own files instead of
adding duplicate rows, and readers never see a half-written file (temp name, then rename). Once a trial
has finished, :func:`compact_trial` merges its per-task files into one per table, so a large sweep is
not read back as millions of small files. Merges are journaled (a hidden pending file that names the
parts it replaces), so a process killed at any moment loses and duplicates nothing.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Callable, Collection
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cil.errors import PermanentError

TASK_RESULTS = "task_results"
HEADS = "heads"
EPOCHS = "epochs"
TABLES = (TASK_RESULTS, HEADS, EPOCHS)
TASK_COLUMNS = ("sweep", "trial_id", "approach", "seed", "dataset", "num_tasks", "network", "task",
                "eval_task", "classes_seen", "acc_taw", "acc_tag", "forg_taw", "forg_tag", "train_seconds")
HEAD_COLUMNS = ("sweep", "trial_id", "approach", "seed", "task", "head", "weight_norm", "bias_mean")
# One row per trained epoch; each loss term's epoch mean is a further column named TERM_PREFIX + term.
EPOCH_COLUMNS = ("sweep", "trial_id", "approach", "seed", "task", "epoch", "train_loss", "val_loss", "val_acc_taw",
                 "lr", "seconds")
# Written too, NaN unless train.eval_on_train (FACIL's --eval-on-train); not required of older files.
EPOCH_EVAL_ON_TRAIN_COLUMNS = ("train_eval_loss", "train_eval_acc_taw")
TERM_PREFIX = "term."
# Rows of a task a sweep shared between trials (tune/prefix.py) name the trial whose run trained it (in
# every table); rows a trial trained itself have no such column, or null.
SHARED_COLUMN = "shared_from"


# OSErrors of a storage that refuses writes: a retry cannot fix them (errno, or the text pyarrow and
# object stores give when they carry no errno).
_REFUSING_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_REFUSING_TEXT = ("No space left", "Disk quota", "Permission denied", "Read-only file system", "ACCESS_DENIED",
                  "AccessDenied", "NoSuchBucket", "NO_SUCH_BUCKET")


class StorageError(PermanentError):
    """The results storage refuses writes (full, read-only, no permission, no such bucket)."""


def refusing_storage(err: BaseException) -> bool:
    """Whether ``err`` says the storage refuses writes, which no retry fixes."""
    return isinstance(err, OSError) and (err.errno in _REFUSING_ERRNOS or any(t in str(err) for t in _REFUSING_TEXT))


def resolve(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it; local paths are made absolute."""
    if "://" not in uri_or_path:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri_or_path))
    return pafs.FileSystem.from_uri(uri_or_path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_parquet(table: pa.Table, path: str, filesystem: pafs.FileSystem | None = None) -> str:
    """Write ``table`` to ``path`` (a local path or URI, or a path inside ``filesystem``) atomically.

    The temp name starts with ``.`` and ends in ``.tmp``, which readers of results folders skip.
    """
    fs, path = (filesystem, path) if filesystem is not None else resolve(path)
    folder, _, name = path.rstrip("/").rpartition("/")
    fs.create_dir(folder, recursive=True)
    tmp = join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    return path


def write_table(rows: list[dict[str, Any]], results_dir: str, table: str, file_stem: str) -> str:
    """Write ``rows`` as ``<results_dir>/<table>/<file_stem>.parquet`` atomically; return its path."""
    if table not in TABLES:
        raise ValueError(f"table = {table!r} is not valid: use one of {', '.join(map(repr, TABLES))}")
    fs, base = resolve(results_dir)
    return write_parquet(pa.Table.from_pylist(rows), join(base, table, f"{file_stem}.parquet"), fs)


def write_task(task_rows: list[dict[str, Any]], head_rows: list[dict[str, Any]], results_dir: str,
               trial_id: str, task: int, epoch_rows: list[dict[str, Any]] | None = None) -> None:
    """One trained task's rows of every table, under file names keyed by (trial_id, task). The epochs
    file is written before the others, so a trial's task_results row never precedes its curve."""
    stem = f"{trial_id}_t{task:03d}"
    if epoch_rows:
        write_table(epoch_rows, results_dir, EPOCHS, stem)
    write_table(task_rows, results_dir, TASK_RESULTS, stem)
    write_table(head_rows, results_dir, HEADS, stem)


PENDING_PREFIX = "_pending-"  # a merge not yet committed: hidden from readers (names starting with "_")
REPLACES_KEY = b"cil.replaces"  # Parquet metadata of a pending merge: the part files it replaces
ROW_KEY = ("trial_id", "task")   # rows of a newer file replace an older file's rows with the same key


def _merge_files(results_dir: str, keep: Callable[[str], bool], target: Callable[[], str],
                 include_target: bool = False) -> int:
    """In every table, merge the files whose name ``keep`` accepts into one named ``target()``, then
    delete them; return how many files were replaced.

    Crash-safe without an atomic multi-file rename: the merged rows are first written under a hidden
    pending name that records which parts it replaces; then the parts are deleted and the pending file
    moved to its name. A merge cut short anywhere is completed by the next merge in that folder
    (:func:`finish_pending_merges`), so rows are never lost, and a reader never sees them twice (at
    worst briefly not at all). ``include_target``: an existing ``target()`` file is merged too, as the
    oldest input (``compact_trial`` of a trial that was resumed after it had merged once).
    """
    fs, base = resolve(results_dir)
    replaced = 0
    for table in TABLES:
        folder = join(base, table)
        finish_pending_merges(fs, folder)
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        parts = sorted(i.path for i in infos if i.type == pafs.FileType.File and keep(i.base_name))
        if not parts:
            continue
        name = target()
        inputs = list(parts)
        if include_target and fs.get_file_info(join(folder, name)).type == pafs.FileType.File:
            inputs.insert(0, join(folder, name))
        merged = newest_rows([pq.read_table(p, filesystem=fs) for p in inputs])
        replaces = json.dumps([p.rpartition("/")[2] for p in parts]).encode()
        merged = merged.replace_schema_metadata((merged.schema.metadata or {}) | {REPLACES_KEY: replaces})
        pending = join(folder, PENDING_PREFIX + name)
        write_parquet(merged, pending, fs)
        _commit(fs, folder, pending)
        replaced += len(parts)
    return replaced


def newest_rows(tables: list[pa.Table]) -> pa.Table:
    """Concatenate ``tables`` (oldest first); where several hold rows of one (trial_id, task), only
    the newest table's rows of it are kept (a task re-run after a resume replaces its old rows)."""
    keep = []
    seen: set[tuple[Any, ...]] = set()
    for table in reversed(tables):
        keys = list(zip(*(table.column(k).to_pylist() for k in ROW_KEY), strict=True)) if table.num_rows else []
        mask = [k not in seen for k in keys]
        seen.update(keys)
        keep.append(table if all(mask) else table.filter(pa.array(mask, pa.bool_())))
    return pa.concat_tables(list(reversed(keep)), promote_options="default")


def _commit(fs: pafs.FileSystem, folder: str, pending: str) -> None:
    """Delete the parts a pending merge replaces, then move it to its visible name (each step can be
    repeated, so an interrupted commit is finished by running it again)."""
    meta = pq.read_schema(pending, filesystem=fs).metadata or {}
    parts = [join(folder, name) for name in json.loads(meta.get(REPLACES_KEY, b"[]"))]
    for info in fs.get_file_info(parts):
        if info.type == pafs.FileType.File:
            fs.delete_file(info.path)
    fs.move(pending, join(folder, pending.rpartition("/")[2][len(PENDING_PREFIX):]))


def finish_pending_merges(fs: pafs.FileSystem, folder: str) -> int:
    """Complete the merges in ``folder`` that a killed process left pending; return how many."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    pending = [i.path for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(PENDING_PREFIX)]
    for path in sorted(pending):
        _commit(fs, folder, path)
    return len(pending)


def compact_trial(results_dir: str, trial_id: str) -> int:
    """Merge a finished trial's per-task files into ``<trial_id>.parquet`` per table (together with the
    rows already there, newer rows winning per task); return how many files it replaced."""
    return _merge_files(results_dir, lambda name: _task_of(name, trial_id) is not None,
                        lambda: f"{trial_id}.parquet", include_target=True)


def discard_tasks_from(results_dir: str, trial_id: str, first_task: int, num_tasks: int) -> int:
    """Remove a trial's rows of tasks ``first_task..num_tasks-1``: a trial resumed from a checkpoint is
    about to redo them, and a row must never be there twice. Looks up exact names only (no listing),
    so it is cheap on object stores; returns how many files it rewrote or deleted."""
    fs, base = resolve(results_dir)
    changed = 0
    for table in TABLES:
        folder = join(base, table)
        merged, pending = join(folder, f"{trial_id}.parquet"), join(folder, f"{PENDING_PREFIX}{trial_id}.parquet")
        parts = [join(folder, f"{trial_id}_t{t:03d}.parquet") for t in range(first_task, num_tasks)]
        infos = fs.get_file_info([pending, merged, *parts])
        if infos[0].type == pafs.FileType.File:
            _commit(fs, folder, pending)
            infos = fs.get_file_info([pending, merged, *parts])
        for info in infos[2:]:
            if info.type == pafs.FileType.File:
                fs.delete_file(info.path)
                changed += 1
        if infos[1].type == pafs.FileType.File:
            rows = pq.read_table(merged, filesystem=fs)
            kept = rows.filter(pa.compute.less(rows.column("task"), first_task))
            if kept.num_rows < rows.num_rows:
                write_parquet(kept, merged, fs)
                changed += 1
    return changed


def _task_of(name: str, trial_id: str) -> int | None:
    """The task of a per-task file name ``<trial_id>_tNNN.parquet``, else None."""
    prefix = f"{trial_id}_t"
    if name.startswith(prefix) and name.endswith(".parquet") and name[len(prefix):-8].isdigit():
        return int(name[len(prefix):-8])
    return None


MERGED_PREFIX = "merged-"


def compact_results(results_dir: str, trial_ids: Collection[str] | None = None) -> int:
    """Merge finished trials' files (``<trial_id>.parquet``, written by :func:`compact_trial`) into one
    ``merged-<id>.parquet`` per table; return how many files it replaced.

    Run at the end of a sweep, so that analysing a sweep of 100,000 trials reads one big file per table,
    not 100,000 small ones per table. ``trial_ids``: only these trials' files (the driver passes the trials Tune
    finished; a trial interrupted after merging its own files may still be resumed). Per-task files
    of unfinished trials are always left alone.
    """
    wanted = None if trial_ids is None else {f"{t}.parquet" for t in trial_ids}
    return _merge_files(results_dir, lambda name: _finished_trial_file(name) and (wanted is None or name in wanted),
                        lambda: f"{MERGED_PREFIX}{uuid.uuid4().hex[:12]}.parquet")


def _finished_trial_file(name: str) -> bool:
    if not name.endswith(".parquet") or name.startswith((".", "_", MERGED_PREFIX)):
        return False
    stem, _, tail = name[:-8].rpartition("_t")
    return not (stem and tail.isdigit())  # <trial_id>_tNNN.parquet is a part of an unfinished trial
