"""Result rows -> Parquet, written atomically on local paths and any pyarrow filesystem (s3://...).

Files are named by (trial, task), so a retried or resumed trial overwrites its own files instead of
adding duplicate rows, and readers never see a half-written file (temp name, then rename). Once a trial
has finished, :func:`compact_trial` merges its per-task files into one per table, so a large sweep is
not read back as millions of small files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TASK_RESULTS = "task_results"
HEADS = "heads"
TASK_COLUMNS = ("sweep", "trial_id", "approach", "seed", "dataset", "num_tasks", "network", "task",
                "eval_task", "classes_seen", "acc_taw", "acc_tag", "forg_taw", "forg_tag", "train_seconds")
HEAD_COLUMNS = ("sweep", "trial_id", "approach", "seed", "task", "head", "weight_norm", "bias_mean")


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
    if table not in (TASK_RESULTS, HEADS):
        raise ValueError(f"table = {table!r} is not valid: use {TASK_RESULTS!r} or {HEADS!r}")
    fs, base = resolve(results_dir)
    return write_parquet(pa.Table.from_pylist(rows), join(base, table, f"{file_stem}.parquet"), fs)


def write_task(task_rows: list[dict[str, Any]], head_rows: list[dict[str, Any]], results_dir: str,
               trial_id: str, task: int) -> None:
    """One trained task's rows of both tables, under file names keyed by (trial_id, task)."""
    stem = f"{trial_id}_t{task:03d}"
    write_table(task_rows, results_dir, TASK_RESULTS, stem)
    write_table(head_rows, results_dir, HEADS, stem)


def _merge_files(results_dir: str, keep: Callable[[str], bool], target: Callable[[], str]) -> int:
    """In both tables, merge the files whose name ``keep`` accepts into one named ``target()``, then
    delete them; return how many files were replaced. The merged file is in place before the parts
    are deleted, so a reader always finds every row (for a moment twice, as identical copies, which
    readers drop)."""
    fs, base = resolve(results_dir)
    replaced = 0
    for table in (TASK_RESULTS, HEADS):
        folder = join(base, table)
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        parts = sorted(i.path for i in infos if i.type == pafs.FileType.File and keep(i.base_name))
        if not parts:
            continue
        merged = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in parts], promote_options="default")
        write_parquet(merged, join(folder, target()), fs)
        for part in parts:
            fs.delete_file(part)
        replaced += len(parts)
    return replaced


def compact_trial(results_dir: str, trial_id: str) -> int:
    """Merge a finished trial's per-task files into ``<trial_id>.parquet`` per table; return how many
    files it replaced."""
    prefix = f"{trial_id}_t"

    def part_of_trial(name: str) -> bool:
        return name.startswith(prefix) and name.endswith(".parquet") and name[len(prefix):-8].isdigit()

    return _merge_files(results_dir, part_of_trial, lambda: f"{trial_id}.parquet")


MERGED_PREFIX = "merged-"


def compact_results(results_dir: str) -> int:
    """Merge every finished trial's file (``<trial_id>.parquet``, written by :func:`compact_trial`)
    into one ``merged-<id>.parquet`` per table; return how many files it replaced.

    Run at the end of a sweep, so that analysing a sweep of 100,000 trials reads two big files, not
    200,000 small ones. Per-task files of unfinished trials are left alone: those trials may still be
    resumed and rewrite them.
    """
    return _merge_files(results_dir, _finished_trial_file,
                        lambda: f"{MERGED_PREFIX}{uuid.uuid4().hex[:12]}.parquet")


def _finished_trial_file(name: str) -> bool:
    if not name.endswith(".parquet") or name.startswith((".", "_", MERGED_PREFIX)):
        return False
    stem, _, tail = name[:-8].rpartition("_t")
    return not (stem and tail.isdigit())  # <trial_id>_tNNN.parquet is a part of an unfinished trial
