"""Atomic writes (temp file, then rename) so a reader never sees a half-written output.

Parquet goes through ``cil.results.write_parquet``, the writer the sweeps use (it imports pyarrow only).
"""

from __future__ import annotations

import os
import uuid

from cil.results import write_parquet  # noqa: F401 - one atomic Parquet writer (pyarrow only, no torch)


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
