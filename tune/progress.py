"""Progress inside a task: each running trial's current task, epoch and last training loss in Tune's table.

Tune hears from a trial only when it reports, once per task: that is what the searcher and ASHA judge
and what writes a checkpoint, so epochs are not reported. Instead a trial sends its latest epoch to a
small Ray actor, the board (fire and forget, one small message per epoch; it reaches the driver from
any node and whatever the storage), and a Tune callback in the driver reads the board every
``HEARTBEAT_S`` and prints the running trials' live table. The board is named after the sweep, so a
resumed sweep's restored callback finds the new one; a board that cannot be reached costs only the
live table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from ray.tune import Callback

from cil.approaches.base import TaskContext
from cil.training import EpochRecord

BOARD_PREFIX = "cil-progress:"
HEARTBEAT_S = 30.0  # how often the table prints (Tune's own default)
LIVE_HEADER = ("task", "epoch", "train_loss")
_READ_TIMEOUT_S = 10.0


def board_name(sweep: str) -> str:
    return BOARD_PREFIX + sweep


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest epoch of every trial, by Ray trial id."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}

    def update(self, trial_id: str, entry: dict[str, Any]) -> None:
        self._latest[trial_id] = entry

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self._latest)


def open_board(sweep: str) -> Any:
    """The sweep's board, started by the driver (it lives as long as the driver's Ray job)."""
    return ProgressBoard.options(name=board_name(sweep), get_if_exists=True).remote()


def epoch_sender(sweep: str, trial_id: str, seeds: list[int]) -> Any:
    """The ``after_epoch`` hook of a trial: posts its task, epoch and training loss to the board, or
    None when the sweep has no board (a quiet sweep). ``seeds``: the trial's runs (search mode trains
    several seeds in lock-step), to say which one is training."""
    try:
        board = ray.get_actor(board_name(sweep))
    except ValueError:
        return None

    def after_epoch(ctx: TaskContext, record: EpochRecord) -> None:
        entry = {"task": ctx.t, "epoch": record.epoch, "nepochs": ctx.cfg.train.nepochs,
                 "train_loss": record.train_loss, "run": seeds.index(ctx.cfg.run.seed), "runs": len(seeds)}
        board.update.remote(trial_id, entry)  # no wait: training never waits on the display

    return after_epoch


def live_cells(entry: dict[str, Any] | None) -> list[Any]:
    """The table cells of one trial's board entry (blank when there is none)."""
    if entry is None:
        return ["", "", ""]
    epoch = f"{entry['epoch']}/{entry['nepochs']}"
    if entry["runs"] > 1:
        epoch += f" (seed {entry['run'] + 1}/{entry['runs']})"
    return [entry["task"], epoch, round(float(entry["train_loss"]), 4)]


class LiveProgress(Callback):
    """A Tune callback that prints, every ``heartbeat_s`` while trials run, the running trials' live
    task, epoch and training loss from the board, beside what they last reported (tasks done). Tune's
    own table stays as it is: a second progress reporter in Tune's callbacks would print every trial
    event twice, and the event printer Tune adds itself would lose its clock."""

    def __init__(self, sweep: str, heartbeat_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic):
        self._sweep = sweep
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._last = float("-inf")
        self._board = None

    def __getstate__(self) -> dict[str, Any]:  # pickled into Tune's tuner.pkl: no actor handle
        return {**self.__dict__, "_board": None, "_last": float("-inf")}

    def _live(self) -> dict[str, dict[str, Any]]:
        try:
            if self._board is None:
                self._board = ray.get_actor(board_name(self._sweep))
            return ray.get(self._board.snapshot.remote(), timeout=_READ_TIMEOUT_S)
        except Exception:  # no board, or it is gone: nothing to show
            self._board = None
            return {}

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = self._clock()
        if now - self._last < self._heartbeat_s:
            return
        running = [t for t in trials if t.status == "RUNNING"]
        if not running:
            return
        self._last = now
        text = live_table(running, self._live())
        if text:
            print(text, flush=True)


def live_table(trials: list[Any], live: dict[str, dict[str, Any]]) -> str:
    """The live table of ``trials`` (running ones) that the board knows, or "" when it knows none."""
    rows = []
    for trial in trials:
        entry = live.get(trial.trial_id)
        if entry is not None:
            rows.append([str(trial), (trial.last_result or {}).get("tasks_done", 0), *live_cells(entry)])
    if not rows:
        return ""
    cells = [["Trial name", "tasks_done", *LIVE_HEADER], *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    def line(row: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "│ " + "   ".join(padded) + " │"

    lines = [line(r) for r in cells]
    rule = "─" * (len(lines[0]) - 2)
    return "\n".join(["Inside the running tasks (live, between task reports):", f"╭{rule}╮", lines[0], f"├{rule}┤",
                      *lines[1:], f"╰{rule}╯", ""])


def live_progress(sweep: str, verbose: int) -> LiveProgress | None:
    """The callback for ``RunConfig.callbacks``, or None when the sweep prints no progress (``verbose`` 0)."""
    return LiveProgress(sweep, heartbeat_s=HEARTBEAT_S) if verbose > 0 else None
