"""Atomic writes (temp file, then rename) so a reader never sees a half-written output."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a local ``path`` through a hidden temp file in the same folder."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_parquet(table: pa.Table, path: str, filesystem: pafs.FileSystem | None = None) -> None:
    """Write ``table`` to ``path`` (local, or inside ``filesystem``) through a hidden temp file.

    The temp name starts with ``.`` and ends in ``.tmp``, which readers of results folders skip.
    """
    fs = filesystem or pafs.LocalFileSystem()
    if filesystem is None:
        path = os.path.abspath(path)
    folder, _, name = path.rstrip("/").rpartition("/")
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
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
