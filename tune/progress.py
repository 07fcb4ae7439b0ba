"""The sweep's live table: every trial's task, epoch, last training loss and state, in the driver.

Tune hears from a trial only when it reports, once per task: that is what the searcher and ASHA judge
and what writes a checkpoint, so epochs are not reported. Instead a trial sends its latest epoch to a
small Ray actor, the board (fire and forget, one small message per epoch; it reaches the driver from
any node and whatever the storage), and :class:`SweepConsole`, a Tune callback in the driver, joins
the board with Tune's trials into a :class:`~tune.console.Snapshot`: drawn on the terminal
(tune/console.py) and written beside the sweep's state for ``python -m tune status``. A board that
cannot be reached costs only the epoch columns.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.tune import Callback

from cil.approaches.base import TaskContext
from cil.config import ConfigError, ExperimentConfig
from cil.results import join, resolve
from cil.training import EpochRecord
from tune.console import SNAPSHOT_FILE, STATES, WIDTH, Eta, LiveScreen, Snapshot, TrialLine, label
from tune.spec import SEEDS_KEY

BOARD_PREFIX = "cil-progress:"
REDRAW_S = 1.0  # how often a terminal's table is redrawn
HEARTBEAT_S = 60.0  # how often a log gets the table's running rows (a quickstart: about 30 lines)
NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"  # 0: Tune's legacy output, silent at verbose=0
SAVE_S = 10.0  # how often the snapshot is written for `python -m tune status`
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
    None when the sweep has no board. ``seeds``: the trial's runs (search mode trains
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


class SweepConsole(Callback):
    """A Tune callback that keeps the sweep's one table: Tune's trials joined with the board's latest
    epochs, shown on ``out`` (tune/console.py's :class:`~tune.console.LiveScreen`: in place on a
    terminal, periodic blocks in a log, the header alone when ``quiet``) and written every ``SAVE_S`` to
    ``<experiment>/sweep-status.json`` for ``python -m tune status``. Trial failures get a line of
    their own. Not pickled with Tune's state: each driver adds its own (tune/sweep.py)."""

    def __init__(self, sweep: str, experiment: str, label_keys: Sequence[str], quiet: bool = False,
                 out: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._sweep, self._experiment, self._keys, self._quiet = sweep, experiment, list(label_keys), quiet
        out = out or sys.stdout
        tty = out.isatty()
        size = shutil.get_terminal_size((WIDTH, 40))
        self._screen = LiveScreen(out, tty, REDRAW_S if tty else HEARTBEAT_S, quiet=quiet, height=size.lines,
                                  width=size.columns if tty else WIDTH, clock=clock)
        self._clock, self._start = clock, clock()
        self._eta = Eta(clock)
        self._saved = float("-inf")
        self._board: Any = None
        self._sizes: dict[str, tuple[int, int, int]] = {}  # trial id -> (tasks, epochs per task, runs)
        self._last_epoch: dict[str, dict[str, Any]] = {}
        self._interrupted = False

    def __reduce__(self) -> tuple[Any, ...]:  # Tune pickles its callbacks into tuner.pkl: no handles, no stdout
        return (SweepConsole, (self._sweep, self._experiment, self._keys, self._quiet))

    def _live(self) -> dict[str, dict[str, Any]]:
        try:
            if self._board is None:
                self._board = ray.get_actor(board_name(self._sweep))
            return ray.get(self._board.snapshot.remote(), timeout=_READ_TIMEOUT_S)
        except Exception:  # no board, or it is gone: no epoch columns
            self._board = None
            return {}

    def snapshot(self, trials: list[Any], live: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        """The table's content now, and the estimated time left; ``live``: the board's latest epochs
        (read from the board when not given)."""
        self._last_epoch.update(self._live() if live is None else live)
        lines, done, left = [], 0, 0
        for trial in sorted(trials, key=lambda t: t.trial_id):
            line, d, total = self._line(trial, self._last_epoch.get(trial.trial_id))
            lines.append(line)
            done += d
            left += 0 if line.state in ("done", "stopped", "error") else total - d
        eta = self._eta.update(done, left)
        return Snapshot(self._sweep, lines, self._clock() - self._start, eta)

    def _line(self, trial: Any, entry: dict[str, Any] | None) -> tuple[TrialLine, int, int]:
        """The trial's row, its epochs trained and its epochs in all."""
        config = trial.config or {}
        tasks, nepochs, runs = self._size(trial.trial_id, config)
        state = STATES.get(trial.status, trial.status.lower())
        reported = int((trial.last_result or {}).get("tasks_done", 0) or 0)
        seeds = config.get(SEEDS_KEY)
        seed = ",".join(map(str, seeds)) if seeds else str(config.get("run.seed", ""))
        epoch = loss = None
        if state == "done" and reported < tasks:
            state = "stopped"  # a scheduler ended it early
        task, trained = reported, reported * nepochs * runs
        if entry is not None and state == "running" and entry["task"] >= reported:
            task = entry["task"] + 1
            epoch, nepochs = entry["epoch"], entry["nepochs"]
            loss = float(entry["train_loss"])
            trained = (entry["task"] * runs + entry["run"]) * nepochs + entry["epoch"]
            if seeds:
                seed = f"{seeds[entry['run']]} ({entry['run'] + 1}/{len(seeds)})"
        elif entry is not None:
            loss = float(entry["train_loss"])
        if state in ("done", "stopped"):
            trained = tasks * nepochs * runs
        line = TrialLine(trial.trial_id, label(config, self._keys), seed, task, tasks, epoch, nepochs, loss, state)
        return line, trained, tasks * nepochs * runs

    def _size(self, trial_id: str, config: dict[str, Any]) -> tuple[int, int, int]:
        """(tasks it trains, epochs per task, seeds in lock-step) of a trial, from its config."""
        if trial_id not in self._sizes:
            flat = {k: v for k, v in config.items() if not k.startswith("_")}
            try:
                cfg = ExperimentConfig.from_dict(flat)
                tasks, nepochs = cfg.run.stop_at_task or cfg.data.num_tasks, cfg.train.nepochs
            except (ConfigError, TypeError, ValueError):  # a config only the trial itself can judge
                tasks, nepochs = int(flat.get("data.num_tasks", 1)), int(flat.get("train.nepochs", 1))
            self._sizes[trial_id] = (tasks, nepochs, len(config.get(SEEDS_KEY) or [0]))
        return self._sizes[trial_id]

    def _update(self, trials: list[Any], force: bool = False) -> None:
        save = force or self._clock() - self._saved >= SAVE_S
        if not (save or self._screen.due()):
            return
        snap = self.snapshot(trials)
        self._screen.show(snap, force=force)
        if save:
            self._saved = self._clock()
            save_snapshot(self._experiment, snap)

    def setup(self, **info: Any) -> None:
        """Say what the first Ctrl-C does, and make the second one stop at once. Tune installs its
        SIGINT handler (stop, saving the state for --resume) just before its callbacks' setup."""
        tune_handler = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is not threading.main_thread() or not callable(tune_handler) \
                or tune_handler is signal.default_int_handler:
            return

        def first(sig: int, frame: Any) -> None:
            self._interrupted = True
            self._screen.note("interrupted: saving the sweep's state for --resume (Ctrl-C again: stop at once)")
            tune_handler(sig, frame)
            signal.signal(signal.SIGINT, stop_now)

        signal.signal(signal.SIGINT, first)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._update(trials)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if trial.max_failures != 0:  # 0: FailurePolicy (called first) ends it, and on_trial_error says so
            self._failure(trial, "failed, retrying")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._failure(trial, "failed")

    def _failure(self, trial: Any, what: str) -> None:
        """Two lines: the error's last line (the exception and its message), and where the rest is."""
        path = trial.error_file
        try:
            with open(path) as f:
                last = [line for line in f.read().splitlines() if line.strip()][-1].strip()
        except (OSError, TypeError, IndexError):
            last = "(no error file)"
        self._screen.note(f"trial {trial.trial_id} {what}: {last}")
        if path:
            self._screen.note(f"  traceback: {path}")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if not self._interrupted:  # interrupted, Tune marks the trials it stops TERMINATED: the saved table stands
            self._update(trials, force=True)


def stop_now(sig: int, frame: Any) -> None:
    """The second Ctrl-C: no more waiting for Tune's last save (the CLI prints the --resume command)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def save_snapshot(experiment: str, snapshot: Snapshot) -> None:
    """Write the snapshot beside the sweep's state (best effort: the table matters less than the sweep)."""
    try:
        fs, folder = resolve(experiment)
        path = join(folder, SNAPSHOT_FILE)
        with fs.open_output_stream(path + ".tmp") as out:
            out.write(snapshot.to_json().encode())
        fs.move(path + ".tmp", path)
    except (OSError, ValueError):
        pass


def console(sweep: str, experiment: str, label_keys: Sequence[str], verbose: int) -> SweepConsole:
    """The callback for ``RunConfig.callbacks``: the header line only when ``verbose`` is 0 (--quiet)."""
    return SweepConsole(sweep, experiment, label_keys, quiet=verbose == 0)


def tune_verbosity(verbose: int) -> int:
    """Tune's own output (its status table, config and result boxes) only with --verbose: the sweep's
    console (tune/progress.py) is the table otherwise."""
    return 1 if verbose >= 2 else 0


# Ray log records that never help: Ray's interrupt hint names Tuner.restore (ours prints the --resume
# command), and reading the state of trials that never started warns that they have no results.
_ALWAYS_DROPPED = ("Tuner.restore", "Failed to fetch metrics")
# ... and those the console says in a line of its own: a trial's failure, the interrupt.
_DROPPED_BY_DEFAULT = ("Trial task failed for trial", "Trials did not complete", "Stop signal received")


class _RayNoise(logging.Filter):
    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(m in message for m in _ALWAYS_DROPPED):
            return False
        if self.verbose >= 2:
            return True
        return record.levelno >= logging.ERROR and not any(m in message for m in _DROPPED_BY_DEFAULT)


@contextlib.contextmanager
def ray_output(verbose: int):
    """Ray's log lines in the driver: errors only, unless --verbose (then all but the useless ones);
    and the SIGINT handler as it was before Tune replaced it. ``connect`` keeps the same level."""
    ray_logger = logging.getLogger("ray")
    noise, handlers, level = _RayNoise(verbose), list(ray_logger.handlers), ray_logger.level
    if verbose < 2:
        ray_logger.setLevel(logging.ERROR)
    for handler in handlers:
        handler.addFilter(noise)
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT)
    new_output = os.environ.get(NEW_OUTPUT)
    if verbose < 2:  # Tune's new output prints a config box and two paths even at verbose=0 (Ray 2.60)
        os.environ[NEW_OUTPUT] = "0"
    try:
        yield
    finally:
        _restore_env(NEW_OUTPUT, new_output)
        for handler in handlers:
            handler.removeFilter(noise)
        ray_logger.setLevel(level)
        colorama = sys.modules.get("colorama")
        if colorama is not None:  # Ray's CLI logger inits colorama, whose exit hook ends a terminal with ESC[0m
            atexit.unregister(colorama.initialise.reset_all)
        if main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # SIG_IGN: a second Ctrl-C
            signal.signal(signal.SIGINT, before)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def saved_snapshot(experiment: str, name: str) -> Snapshot | None:
    """The table rebuilt from Tune's saved experiment state, for sweeps without a saved snapshot
    (no epochs: those only ever reach the running driver). Labels: the keys that differ between
    trials, besides the seed."""
    fs, folder = resolve(experiment)
    if not ray.tune.Tuner.can_restore(folder, storage_filesystem=fs):
        return None
    with ray_output(0):
        trials = ray.tune.ExperimentAnalysis(folder, storage_filesystem=fs).trials
    configs = [t.config or {} for t in trials]
    varying = [k for k in dict.fromkeys(k for c in configs for k in c)
               if not k.startswith("_") and k != "run.seed" and len({repr(c.get(k)) for c in configs}) > 1]
    keys = list(dict.fromkeys(["approach", *varying]))
    snap = SweepConsole(name, experiment, keys).snapshot(trials, live={})
    snap.elapsed_s = None
    return snap
