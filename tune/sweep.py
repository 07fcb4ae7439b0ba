"""A validated spec -> a Ray Tune ``Tuner`` (new or restored), run, and its results folder.

Everything is from ``ray.tune`` (Ray 2.60): ``ray.train``'s RunConfig and report do not work in Tune.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from cil.results import TASK_RESULTS, compact_results, compact_trial, join, resolve
from tune import raycompat
from tune.budget import BudgetWatch, device_share
from tune.failures import FailurePolicy
from tune.lease import SweepLease
from tune.paths import SweepError, SweepPaths
from tune.pending import PendingWatch
from tune.prefix import spread
from tune.progress import SweepConsole, console, open_board, ray_output, tune_verbosity
from tune.searcher import make_searcher
from tune.spec import TIME_ATTR, SweepSpec, group_by
from tune.tracking import tracking_callbacks
from tune.trainable import FAILED_DIR, read_failure, row_trial_ids, train_trial


def check_paths(paths: SweepPaths, resume: bool) -> None:
    """Refuse to mix two sweeps' rows under one name, or to resume what was never saved."""
    fs, experiment = resolve(paths.experiment)
    exists = tune.Tuner.can_restore(experiment, storage_filesystem=fs)
    if resume and not exists:
        raise SweepError(f"nothing to resume: no Tune experiment state under {paths.experiment} "
                         f"(check --name and --storage)")
    if not resume:
        fs, base = resolve(paths.results)
        taken = fs.get_file_info(join(base, TASK_RESULTS)).type.name != "NotFound"
        if exists or taken:
            raise SweepError(f"sweep {paths.name!r} already exists under {paths.storage}: pass --resume to "
                             f"continue it, or choose another --name")


def check_storage(paths: SweepPaths) -> None:
    """Create the sweep's folder and write and remove a probe file there, so that storage that cannot
    be written (a missing bucket, no permission, a full disk) is one clear error before Ray starts."""
    try:
        fs, folder = resolve(paths.experiment)
        fs.create_dir(folder, recursive=True)
        probe = join(folder, f".probe-{uuid.uuid4().hex}")
        with fs.open_output_stream(probe) as out:
            out.write(b"probe")
        fs.delete_file(probe)
    except (OSError, ValueError, pa.ArrowException) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SweepError(f"cannot write to the sweep storage {paths.experiment} (--storage {paths.storage}): "
                         f"{detail}") from None


def make_trainable(spec: SweepSpec, paths: SweepPaths, share: bool = True) -> Any:
    """The function trainable with its fixed arguments and per-trial resources bound; ``share``: trials
    share identical task prefixes through the sweep's prefix store (tune/prefix.py)."""
    bound = tune.with_parameters(train_trial, sweep=paths.name, results_dir=paths.results,
                                 gpu_fraction=spec.resources.gpu, prefix_dir=paths.prefix if share else None)
    return tune.with_resources(bound, spec.resources.as_ray())


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param space under the cil config's dotted names. Search mode: constants only (Optuna owns
    the sampled keys) and the seeds every trial runs. A grid with sharing takes its points from
    :func:`grid_searcher` (each point fixes every grid key: one trial each)."""
    if spec.search is not None:
        return spec.search_constants()
    return spec.base | {k: tune.grid_search(v) for k, v in spec.grid.items()}


def grid_searcher(spec: SweepSpec) -> BasicVariantGenerator:
    """A grid sweep's trials with sharing on, in the order that starts distinct task prefixes first
    (:func:`tune.prefix.spread`): Tune's own grid generator, given every point in that order
    (``points_to_evaluate``, with ``num_samples`` the number of points)."""
    return BasicVariantGenerator(points_to_evaluate=spread(spec.trial_configs()),
                                 max_concurrent=spec.max_concurrent or 0)


def driver_callbacks(spec: SweepSpec, paths: SweepPaths, pending: PendingWatch | None, verbose: int,
                     budget: BudgetCallback | None = None) -> list[Any]:
    """The callbacks that belong to this driver: the failure policy, the pending-resources watch, the
    live table and the budget."""
    return [FailurePolicy(paths.results, spec.max_failures, spec.max_preemptions),
            *([pending] if pending is not None else []),
            console(paths.name, paths.experiment, group_by(spec), verbose),
            *([budget] if budget is not None else [])]


class BudgetCallback(tune.Callback):
    """The spec's ``stop:`` budget (tune/budget.py) on Tune's loop: once reached, Tune's own stop signal
    (SIGUSR1, handled as Ctrl-C: the experiment is saved with its unfinished trials resumable)."""

    def __init__(self, watch: BudgetWatch) -> None:
        self.watch = watch

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        running = sum(1 for t in trials if t.status == "RUNNING")
        if self.watch.tick(running) is not None:
            self.watch.save()
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.watch.tick(0)
        self.watch.save()

    def __reduce__(self) -> Any:  # saved with the experiment, restored without its watch: a no-op
        return (_no_callback, ())


def _no_callback() -> tune.Callback:
    return tune.Callback()


DRIVER_CALLBACKS = (FailurePolicy, PendingWatch, SweepConsole, BudgetCallback)


class SchedulerState(tune.Callback):
    """Carries the scheduler's state (ASHA's rungs) in Tune's experiment snapshots, so that a resumed
    search stops the trials an uninterrupted one would. Tune saves and restores a searcher's state
    (the Optuna study) with each snapshot but not a scheduler's (ray-project/ray#30838); it does save and
    restore its callbacks' ``get_state``, matched by position, so this callback is always the first.
    The scheduler's own public ``save``/``restore`` (a pickle of its attributes) make the state."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler  # the Tuner's own object: both are pickled together in tuner.pkl

    def get_state(self) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as f:
                return {"scheduler": f.read()}

    def set_state(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "scheduler.pkl")
            with open(path, "wb") as f:
                f.write(state["scheduler"])
            self.scheduler.restore(path)


def make_tuner(spec: SweepSpec, paths: SweepPaths, verbose: int = 1, pending: PendingWatch | None = None,
               share: bool = True, budget: BudgetCallback | None = None) -> Any:
    """A new Tuner: grid search, or Optuna (optionally with ASHA) over the spec's space."""
    search_alg = scheduler = None
    ordered_grid = spec.search is None and share  # the grid's points in grid_searcher's start order
    if spec.search is not None:
        search_alg = make_searcher(spec.search, paths.name)
    elif ordered_grid:
        search_alg = grid_searcher(spec)
    if spec.scheduler is not None:
        sc = spec.scheduler
        scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=sc.metric, mode=sc.mode, max_t=sc.max_t,
                                  grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                  num_samples=spec.num_trials if spec.search or ordered_grid else 1,
                                  # the ordered grid's generator takes it itself (grid_searcher)
                                  max_concurrent_trials=None if ordered_grid else spec.max_concurrent,
                                  reuse_actors=True,  # a new trial skips the worker's torch/cil import
                                  trial_dirname_creator=_trial_dirname)
    fs, storage = storage_for_ray(paths)
    space = param_space(spec)
    run_config = tune.RunConfig(
        name=paths.name, storage_path=storage, storage_filesystem=fs, verbose=tune_verbosity(verbose),
        # Every failure is retried as far as Tune is concerned; FailurePolicy applies the spec's limits,
        # telling a node lost (a preemption) from an error of the trial.
        failure_config=tune.FailureConfig(max_failures=-1),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep),
        callbacks=[*([SchedulerState(scheduler)] if scheduler is not None else []),  # first: see its doc
                   *driver_callbacks(spec, paths, pending, verbose, budget),
                   *tracking_callbacks(spec.tracking, paths.name)])
    return tune.Tuner(make_trainable(spec, paths, share), param_space=space, tune_config=tune_config,
                      run_config=run_config)


def restore_tuner(spec: SweepSpec, paths: SweepPaths, pending: PendingWatch | None = None, verbose: int = 1,
                  share: bool = True, budget: BudgetCallback | None = None) -> Any:
    """Continue an interrupted sweep: unfinished trials resume from their last checkpoint, errored ones
    are retried; the searcher (Tune) and the scheduler (:class:`SchedulerState`) continue from the last
    snapshot."""
    fs, experiment = resolve(paths.experiment)
    tuner = tune.Tuner.restore(experiment, make_trainable(spec, paths, share), resume_unfinished=True,
                               resume_errored=True, storage_filesystem=fs)
    # Tuner.restore takes the saved RunConfig and no new callbacks (Ray 2.60): this driver's failure
    # policy (fresh counts), pending watch, live table and budget replace the saved ones (a saved budget
    # callback restores as a plain no-op Callback); sweeps saved before the policy existed get its
    # max_failures=-1 too.
    run_config = raycompat.run_config(tuner)
    kept = [c for c in run_config.callbacks or [] if not isinstance(c, DRIVER_CALLBACKS)
            and type(c) is not tune.Callback]
    state = [c for c in kept if isinstance(c, SchedulerState)]  # first, where the snapshot's state expects it
    run_config.callbacks = [*state, *driver_callbacks(spec, paths, pending, verbose, budget),
                            *[c for c in kept if not isinstance(c, SchedulerState)]]
    run_config.failure_config = tune.FailureConfig(max_failures=-1)
    run_config.verbose = tune_verbosity(verbose)
    return tuner


def storage_for_ray(paths: SweepPaths) -> tuple[Any, str]:
    """Storage as Ray takes it: our own filesystem and the path inside it, so that a URI's query
    (``?endpoint_override=...&scheme=http``) reaches pyarrow instead of ending up in a folder name."""
    return resolve(paths.storage)


@dataclass
class SweepOutcome:
    """How a sweep ended: Tune's ResultGrid and each trial's final status."""

    grid: Any
    statuses: dict[str, str]
    failures: dict[str, str] = field(default_factory=dict)  # trial id -> permanent error message
    lost_to: str | None = None  # the driver that took the sweep over while this one ran
    budget_reached: str | None = None  # why the spec's stop: budget ended the sweep
    spent: Any = None  # tune.budget.Spent: device and wall seconds over every driver of the sweep
    wall_seconds: float = 0.0  # this driver's Tune run

    @property
    def unfinished(self) -> list[str]:
        return [t for t, s in self.statuses.items() if s not in ("TERMINATED", "ERROR")]

    @property
    def errored(self) -> list[str]:
        return [t for t, s in self.statuses.items() if s == "ERROR"]


def run_sweep(spec: SweepSpec, paths: SweepPaths, *, address: str | None = None, resume: bool = False,
              verbose: int = 1, takeover: bool = False, pending: PendingWatch | None = None,
              share: bool = True, clock: Any = None) -> SweepOutcome:
    """Run (or resume) a sweep while holding its lease. Uses the Ray session already connected, else
    ``address``, else starts a local Ray in this process. ``pending`` watches trials that wait for
    resources (tune/pending.py). ``verbose``: 0 the table's header line only, 1 the table, 2 also Tune's
    own output and Ray's log lines. ``share``: trials share identical task prefixes (tune/prefix.py);
    ``clock``: the budget's clock (default ``time.time``)."""
    raycompat.check_version()
    check_storage(paths)
    fs, folder = resolve(paths.experiment)
    lease = SweepLease(fs, folder, paths.name, takeover=takeover)
    with lease:
        check_paths(paths, resume)
        if resume:  # the user has fixed what made trials fail permanently: let them run again
            fs.delete_dir_contents(join(resolve(paths.results)[1], FAILED_DIR), missing_dir_ok=True)
        # Bounded checkpoints (num_to_keep) force an experiment snapshot every few reports, by design.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        with ray_output(verbose):
            if not ray.is_initialized():
                connect(address, verbose)
            r = spec.resources  # the watch also counts what a sweep without a budget spends
            budget = BudgetCallback(BudgetWatch(spec.stop, device_share(r.cpu, r.gpu), fs, folder,
                                                **({"clock": clock} if clock else {})))
            tuner = (restore_tuner(spec, paths, pending, verbose, share, budget) if resume
                     else make_tuner(spec, paths, verbose, pending, share, budget))
            board = open_board(paths.name)  # the live epoch columns' source
            started = time.monotonic()
            try:
                grid = tuner.fit()
            finally:
                ray.kill(board)
            # The saved state, not the grid's trials: an interrupt marks those TERMINATED in memory, while
            # the state saved for --resume keeps them RUNNING or PENDING.
            trials = tune.ExperimentAnalysis(folder, storage_filesystem=fs).trials
        outcome = SweepOutcome(grid, {t.trial_id: t.status for t in trials}, spent=budget.watch.spent,
                               wall_seconds=time.monotonic() - started)
        if outcome.unfinished:
            outcome.budget_reached = budget.watch.reached
        if lease.lost_to is not None:
            outcome.lost_to = lease.lost_to.describe()
            return outcome  # the sweep is another driver's now: leave its files alone
        finished = []
        for trial in trials:  # trials a scheduler stopped early end without merging their own files
            if trial.status != "TERMINATED":
                continue  # errored or interrupted: it may be resumed, and rewrite its files
            for row_id in row_trial_ids(trial.trial_id, trial.config or {}):
                compact_trial(paths.results, row_id)
                finished.append(row_id)
        compact_results(paths.results, finished)  # finished trials' files -> one per table
        outcome.failures = {t: msg for t in outcome.errored if (msg := read_failure(paths.results, t))}
        return outcome


def connect(address: str | None, verbose: int = 1) -> None:
    """Join the Ray cluster at ``address``, or start a local Ray when it is None; a cluster that cannot
    be reached is a SweepError naming the address, not a traceback. Ray's log lines and the trials'
    output reach this terminal only with ``verbose`` 2 (--verbose): Ray's errors otherwise."""
    level = logging.INFO if verbose >= 2 else logging.ERROR  # the first hidden: the local token-auth notice
    try:
        if address is None:  # "local": a Ray of its own, never one that happens to run on this machine
            start_local(verbose, level)
        else:
            context = ray.init(address=address, log_to_driver=verbose >= 2, logging_level=level)
            print(f"joined the Ray cluster at {context.address_info['gcs_address']}", flush=True)
    except Exception as err:  # ConnectionError (no cluster), ValueError (bad address), RuntimeError ...
        if address is None:
            raise
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SweepError(f"cannot connect to the Ray cluster at address {address!r} (--address or $RAY_ADDRESS): "
                         f"{detail}. Start the cluster first (ray start --head, or ray up), pass the "
                         f"address it printed, or leave out --address to run a local Ray") from None


# Ray waits a fixed 30 s for a new node's raylet to register; on a loaded laptop that can run out while
# nothing is wrong, so a local start gets this many tries (each after a clean shutdown).
LOCAL_START_TRIES = 3


def start_local(verbose: int, level: int) -> None:
    """Start this driver's own Ray, retrying a start that timed out (a retry fixes it; nothing else is)."""
    for attempt in range(1, LOCAL_START_TRIES + 1):
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=verbose >= 2, logging_level=level)
            return
        except Exception as err:
            if "timed out during startup" not in str(err) or attempt == LOCAL_START_TRIES:
                raise
            ray.shutdown()
            print(f"the local Ray did not start in time (try {attempt} of {LOCAL_START_TRIES}); starting it again",
                  file=sys.stderr, flush=True)


def _trial_dirname(trial: Any) -> str:
    # Tune's default names a directory after the whole config, too long for dotted cil keys.
    return f"{trial.trainable_name}_{trial.trial_id}"
