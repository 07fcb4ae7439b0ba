"""Budgets: the spec's ``stop:`` section ends a sweep cleanly once it has spent what it may.

``max_device_hours`` counts, for every moment a trial runs, its share of a device: ``resources.gpu``
when trials take GPUs, else ``resources.cpu`` (CPU-core hours); ``max_wall_hours`` counts the drivers'
wall time; ``deadline`` is a point in time (ISO 8601; without a zone, the driver's local time). What
a sweep has spent is kept in ``<storage>/<name>/budget.json`` and summed over every ``--resume``, so
a resumed sweep with a larger budget continues where the last one stopped.

When a budget is reached the driver stops Tune as Ctrl-C does (Tune's own stop signal): the saved
experiment keeps every unfinished trial resumable from its last checkpoint, taken after its last
finished task, so ``--resume`` loses and duplicates nothing (a trial that was inside a task redoes
that task). The sweep exits with :data:`BUDGET_EXIT` and prints the ``--resume`` command. This module
never imports Ray (the spec reads it).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs

BUDGET_EXIT = 4  # the sweep stopped at its stop: budget (docs/reliability.md's exit codes)
STOP_KEYS = ("max_device_hours", "max_wall_hours", "deadline")
LEDGER = "budget.json"
SAVE_EVERY_S = 10.0


@dataclass(frozen=True)
class Budget:
    """The ``stop:`` section; None: no such limit."""

    max_device_hours: float | None = None
    max_wall_hours: float | None = None
    deadline: float | None = None  # seconds since the epoch

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_device_hours, self.max_wall_hours, self.deadline))


def parse_stop(raw: Any, p: list[str]) -> Budget:
    """Validate the ``stop:`` section; problems go to ``p``, each naming its key."""
    if raw is None:
        return Budget()
    if not isinstance(raw, dict):
        p.append(f"stop must be a mapping with keys {', '.join(STOP_KEYS)}")
        return Budget()
    values: dict[str, float | None] = {}
    for key in raw:
        if key not in STOP_KEYS:
            p.append(f"unknown key stop.{key} (valid: {', '.join('stop.' + k for k in STOP_KEYS)})")
    for key in ("max_device_hours", "max_wall_hours"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v <= 0):
            p.append(f"stop.{key} = {v!r} is not valid: must be a number of hours > 0")
            v = None
        values[key] = None if v is None else float(v)
    values["deadline"] = _deadline(raw.get("deadline"), p)
    return Budget(**values)


def _deadline(v: Any, p: list[str]) -> float | None:
    if v is None:
        return None
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime.combine(v, dt.time())
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            v = None
    if not isinstance(v, dt.datetime):
        p.append("stop.deadline is not valid: give a date and time in ISO 8601, e.g. '2026-12-11 09:00' (the "
                 "driver's local time) or '2026-12-11T09:00:00+00:00'")
        return None
    return v.timestamp()  # a naive time is the local time


@dataclass
class Spent:
    """What a sweep has spent so far, over all its drivers."""

    device_seconds: float = 0.0
    wall_seconds: float = 0.0

    @classmethod
    def load(cls, fs: pafs.FileSystem, folder: str) -> Spent:
        try:
            with fs.open_input_stream(f"{folder.rstrip('/')}/{LEDGER}") as f:
                raw = json.loads(f.read().decode())
            return cls(float(raw["device_seconds"]), float(raw["wall_seconds"]))
        except (FileNotFoundError, OSError, ValueError, KeyError):
            return cls()

    def save(self, fs: pafs.FileSystem, folder: str) -> None:
        path = f"{folder.rstrip('/')}/{LEDGER}"
        with fs.open_output_stream(path) as out:
            out.write(json.dumps({"device_seconds": self.device_seconds,
                                  "wall_seconds": self.wall_seconds}).encode())


class BudgetWatch:
    """Counts what the sweep spends between the driver's steps and says when a budget is reached.
    ``clock`` is injectable (tests); ``share`` is one running trial's share of a device."""

    def __init__(self, budget: Budget, share: float, fs: pafs.FileSystem, folder: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.budget, self.share, self.fs, self.folder, self.clock = budget, share, fs, folder, clock
        self.spent = Spent.load(fs, folder)
        self.last = self.clock()
        self.last_save = -math.inf
        self.reached: str | None = None

    def tick(self, running: int) -> str | None:
        """Account for the time since the last tick with ``running`` trials running; the reason the
        budget is reached (once, the first time), else None."""
        now = self.clock()
        elapsed = max(0.0, now - self.last)
        self.last = now
        self.spent.wall_seconds += elapsed
        self.spent.device_seconds += elapsed * running * self.share
        if now - self.last_save >= SAVE_EVERY_S:
            self.save()
        if self.reached is not None:
            return None
        self.reached = self.check(now)
        return self.reached

    def check(self, now: float) -> str | None:
        b, s = self.budget, self.spent
        if b.max_device_hours is not None and s.device_seconds >= b.max_device_hours * 3600:
            return (f"stop.max_device_hours = {b.max_device_hours:g} reached "
                    f"({s.device_seconds / 3600:.3g} device-hours)")
        if b.max_wall_hours is not None and s.wall_seconds >= b.max_wall_hours * 3600:
            return f"stop.max_wall_hours = {b.max_wall_hours:g} reached ({s.wall_seconds / 3600:.3g} hours)"
        if b.deadline is not None and now >= b.deadline:
            when = dt.datetime.fromtimestamp(b.deadline).astimezone().isoformat(timespec="minutes")
            return f"stop.deadline {when} reached"
        return None

    def save(self) -> None:
        try:
            self.spent.save(self.fs, self.folder)
            self.last_save = self.clock()
        except OSError:
            pass  # the ledger is best effort: the results and checkpoints are what must not be lost


def device_share(cpu: float, gpu: float) -> float:
    """A running trial's share of a device: its GPUs when it takes any, else its CPUs."""
    return gpu if gpu > 0 else cpu
