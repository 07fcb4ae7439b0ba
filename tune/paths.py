"""Where a sweep lives. Kept free of Ray so that ``--dry-run`` and spec errors never import it."""

from __future__ import annotations

import os
from dataclasses import dataclass


class SweepError(RuntimeError):
    """A sweep that cannot start or resume (name taken, nothing to resume, ...)."""


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep lives: Tune's experiment folder, with our Parquet results inside it."""

    storage: str
    name: str

    @property
    def experiment(self) -> str:
        return _under(self.storage, self.name)

    @property
    def results(self) -> str:
        return _under(self.experiment, "results")

    @property
    def prefix(self) -> str:
        """The store of task prefixes shared between trials (tune/prefix.py)."""
        return _under(self.experiment, "prefix")


def _under(uri: str, name: str) -> str:
    """``name`` inside ``uri``, before any ``?query`` (``s3://b/p?endpoint_override=...``)."""
    path, mark, query = uri.partition("?")
    return f"{path.rstrip('/')}/{name}{mark}{query}"


def absolute_storage(storage: str) -> str:
    """Storage as Ray needs it: URIs as given, local paths made absolute against the CWD now (trials
    run in their own working directories)."""
    if "://" in storage:
        path, mark, query = storage.partition("?")
        return path.rstrip("/") + mark + query
    return os.path.abspath(os.path.expanduser(storage))
