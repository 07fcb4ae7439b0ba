"""The sweep in one screen: a snapshot of every trial, rendered as one table of at most 120 columns.

Kept free of Ray so that ``python -m tune status`` renders a stored snapshot, and the tests check the
layout, without a cluster. The driver builds snapshots (tune/progress.py) from Tune's trials and the
trials' latest epochs; this module only holds them, estimates the time left and lays them out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

WIDTH = 120  # the widest line printed: a 120-column terminal never wraps
SNAPSHOT_FILE = "sweep-status.json"  # beside Tune's state in <storage>/<name>/: what `tune status` reads
# Display names of Tune's trial statuses; a trial a scheduler ended before its last task is "stopped".
STATES = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "done",
          "ERROR": "error"}
_COLUMNS = ("trial", "approach", "seed", "task", "epoch", "loss", "state")
_ACTIVE = ("running", "error", "paused")


@dataclass
class TrialLine:
    """One trial as the table shows it. ``task``: tasks done, or the task in training counted from 1;
    ``epoch``/``loss``: the latest epoch of that task (None before the first)."""

    trial_id: str
    label: str  # the approach and the swept keys, e.g. "lwf-s lamb=0.5"
    seed: str
    task: int
    num_tasks: int
    epoch: int | None
    nepochs: int
    loss: float | None
    state: str

    def cells(self) -> list[str]:
        epoch = "" if self.epoch is None else f"{self.epoch}/{self.nepochs}"
        loss = "" if self.loss is None or not math.isfinite(self.loss) else f"{self.loss:.4f}"
        return [self.trial_id, self.label, self.seed, f"{self.task}/{self.num_tasks}", epoch, loss, self.state]


@dataclass
class Snapshot:
    """Every trial of a sweep at one moment, with the time since this driver started and the
    estimated time left (None until enough epochs were measured)."""

    sweep: str
    trials: list[TrialLine]
    elapsed_s: float | None  # None: not known (a table rebuilt from Tune's saved state)
    eta_s: float | None = None
    written: float = field(default_factory=time.time)  # Unix time, for the age `tune status` shows

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def header(self) -> str:
        """One line: trials done/running/pending (and errored, stopped when any), elapsed, ETA."""
        done = self.count("done") + self.count("stopped")
        parts = [f"{done}/{len(self.trials)} done", f"{self.count('running')} running",
                 f"{self.count('pending') + self.count('paused')} pending"]
        parts += [f"{n} {s}" for s in ("error", "stopped") if (n := self.count(s))]
        elapsed = "-" if self.elapsed_s is None else duration(self.elapsed_s)
        eta = "-" if self.eta_s is None else duration(self.eta_s)
        return f"sweep {self.sweep}: " + ", ".join(parts) + f" | elapsed {elapsed} | ETA {eta}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        raw = json.loads(text)
        return cls(**{**raw, "trials": [TrialLine(**t) for t in raw["trials"]]})


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render(snapshot: Snapshot, width: int = WIDTH, max_rows: int | None = None, active_only: bool = False) -> list[str]:
    """The header, then one row per trial in trial order, no line longer than ``width``. With
    ``active_only`` only running, errored and paused trials get rows; with ``max_rows``, when there are
    more trials than that, the active ones are kept first and the rest are counted on one line."""
    lines = [_clip(snapshot.header(), width)]
    trials = snapshot.trials
    if active_only:
        trials = [t for t in trials if t.state in _ACTIVE]
    hidden: list[TrialLine] = []
    if max_rows is not None and len(trials) > max_rows:
        keep = {t.trial_id for t in sorted(trials, key=lambda t: t.state not in _ACTIVE)[:max(max_rows - 1, 0)]}
        hidden = [t for t in trials if t.trial_id not in keep]
        trials = [t for t in trials if t.trial_id in keep]
    if not trials:
        return lines
    rows = [list(_COLUMNS), *(t.cells() for t in trials)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    gap = 2
    # the label column gives way first: it is the only one whose width the sweep's keys decide
    widths[1] = max(8, min(widths[1], width - (sum(widths) - widths[1]) - gap * (len(widths) - 1)))
    for row in rows:
        lines.append(_clip((" " * gap).join(_fit(c, w, right=i in (2, 3, 4, 5))
                                             for i, (c, w) in enumerate(zip(row, widths, strict=True))), width))
    if hidden:
        counts: dict[str, int] = {}
        for t in hidden:
            counts[t.state] = counts.get(t.state, 0) + 1
        lines.append(_clip("... and " + ", ".join(f"{n} {s}" for s, n in counts.items()), width))
    return lines


def _fit(cell: str, width: int, right: bool) -> str:
    if len(cell) > width:
        cell = cell[: max(width - 1, 0)] + "~"
    return cell.rjust(width) if right else cell.ljust(width)


def _clip(line: str, width: int) -> str:
    line = line.rstrip()
    return line if len(line) <= width else line[: width - 1] + "~"


def label(config: dict[str, Any], keys: Sequence[str]) -> str:
    """``lwf-s lamb=0.5``: the approach's value bare, other keys by their last dotted part."""
    parts = []
    for key in keys:
        if key not in config:
            continue
        value = config[key]
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(text if key == "approach" else f"{key.rpartition('.')[2]}={text}")
    return " ".join(parts)


class Eta:
    """Time left from the epochs measured so far: epochs finished per second since this driver saw its
    first one (so a resumed sweep's earlier epochs and Ray's start-up do not count), applied to the
    epochs every unfinished trial still has to train."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: tuple[float, int] | None = None

    def update(self, epochs_done: int, epochs_left: int) -> float | None:
        now = self._clock()
        if self._first is None:
            self._first = (now, epochs_done)
            return None
        t0, done0 = self._first
        if epochs_done <= done0 or now <= t0:
            return None
        return epochs_left * (now - t0) / (epochs_done - done0)


class LiveScreen:
    """Prints snapshots to ``out``: redrawn in place on a terminal (the table fits ``height`` rows), or
    as periodic blocks in a log (the header and the active trials, every ``every_s`` seconds). ``quiet``
    keeps the header line only. Lines are at most ``width`` (and 120) columns."""

    def __init__(self, out: Any, tty: bool, every_s: float, quiet: bool = False, height: int = 40,
                 width: int = WIDTH, clock: Callable[[], float] = time.monotonic) -> None:
        self._out, self._tty, self._every_s, self._quiet = out, tty, every_s, quiet
        self._height, self._width, self._clock = height, min(width, WIDTH), clock
        self._drawn = 0  # lines of the last in-place drawing, to move back over
        self._last = float("-inf")

    def due(self) -> bool:
        return self._clock() - self._last >= self._every_s

    def show(self, snapshot: Snapshot, force: bool = False) -> None:
        if not (force or self.due()):
            return
        self._last = self._clock()
        if self._quiet:
            lines = render(snapshot, self._width, max_rows=0)[:1]
        elif self._tty:  # one row spare, no line as wide as the window: nothing scrolls or wraps
            lines = render(snapshot, self._width - 1, max_rows=max(self._height - 3, 1))
        else:
            lines = render(snapshot, self._width, active_only=True)
        if self._tty:
            # back to the first line of the last drawing, and clear from there down
            self._out.write((f"\x1b[{self._drawn}F" if self._drawn else "") + "\x1b[J" + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            self._out.write("\n".join(lines) + "\n")
        self._out.flush()

    def note(self, line: str) -> None:
        """A line that stays (a trial's error, an interrupt): printed above the live table."""
        if self._tty and self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
            self._last = float("-inf")  # redraw the table under it at the next step
        self._out.write(_clip(line, self._width) + "\n")
        self._out.flush()


def read_snapshot(experiment: str) -> Snapshot | None:
    """The snapshot the sweep's driver last wrote under ``experiment`` (local or s3://), or None."""
    from cil.results import join, resolve

    fs, folder = resolve(experiment)
    try:
        with fs.open_input_stream(join(folder, SNAPSHOT_FILE)) as f:
            return Snapshot.from_json(f.read().decode())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def status_lines(snapshot: Snapshot, driver: str | None, now: float | None = None,
                 from_tune: bool = False) -> list[str]:
    """What ``python -m tune status`` prints: the table as last saved, its age, and who runs the sweep
    (``driver``: the lease holder's description, None when no driver holds it). ``from_tune``: the
    table was rebuilt from Tune's saved state, not saved by the driver."""
    age = max(0.0, (time.time() if now is None else now) - snapshot.written)
    when = "from Tune's saved state, no epochs" if from_tune else f"saved {duration(age)} ago"
    who = f"driver: {driver}" if driver else "no driver holds the sweep (it ended, or was stopped)"
    return [*render(snapshot), _clip(f"({when}; {who})", WIDTH)]
