"""A validated spec -> a Ray Tune ``Tuner`` (new or restored), run, and its results folder.

Everything is from ``ray.tune`` (Ray 2.60): ``ray.train``'s RunConfig and report do not work in Tune.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from cil.results import TASK_RESULTS, compact_results, compact_trial, join, resolve
from tune.paths import SweepError, SweepPaths
from tune.searcher import make_searcher
from tune.spec import TIME_ATTR, SweepSpec
from tune.tracking import tracking_callbacks
from tune.trainable import row_trial_ids, train_trial


def check_paths(paths: SweepPaths, resume: bool) -> None:
    """Refuse to mix two sweeps' rows under one name, or to resume what was never saved."""
    exists = tune.Tuner.can_restore(paths.experiment)
    if resume and not exists:
        raise SweepError(f"nothing to resume: no Tune experiment state under {paths.experiment} "
                         f"(check --name and --storage)")
    if not resume:
        fs, base = resolve(paths.results)
        taken = fs.get_file_info(join(base, TASK_RESULTS)).type.name != "NotFound"
        if exists or taken:
            raise SweepError(f"sweep {paths.name!r} already exists under {paths.storage}: pass --resume to "
                             f"continue it, or choose another --name")


def make_trainable(spec: SweepSpec, paths: SweepPaths) -> Any:
    """The function trainable with its fixed arguments and per-trial resources bound."""
    bound = tune.with_parameters(train_trial, sweep=paths.name, results_dir=paths.results,
                                 gpu_fraction=spec.resources.gpu)
    return tune.with_resources(bound, spec.resources.as_ray())


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param space under the cil config's dotted names. Search mode: constants only (Optuna owns
    the sampled keys) and the seeds every trial runs."""
    if spec.search is not None:
        return spec.search_constants()
    return spec.base | {k: tune.grid_search(v) for k, v in spec.grid.items()}


def make_tuner(spec: SweepSpec, paths: SweepPaths, verbose: int = 1) -> Any:
    """A new Tuner: grid search, or Optuna (optionally with ASHA) over the spec's space."""
    search_alg = scheduler = None
    if spec.search is not None:
        search_alg = make_searcher(spec.search, paths.name)
    if spec.scheduler is not None:
        sc = spec.scheduler
        scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=sc.metric, mode=sc.mode, max_t=sc.max_t,
                                  grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                  num_samples=spec.search.num_samples if spec.search else 1,
                                  max_concurrent_trials=spec.max_concurrent,
                                  reuse_actors=True,  # a new trial skips the worker's torch/cil import
                                  trial_dirname_creator=_trial_dirname)
    run_config = tune.RunConfig(
        name=paths.name, storage_path=paths.storage, verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep),
        callbacks=tracking_callbacks(spec.tracking, paths.name))
    return tune.Tuner(make_trainable(spec, paths), param_space=param_space(spec), tune_config=tune_config,
                      run_config=run_config)


def restore_tuner(spec: SweepSpec, paths: SweepPaths) -> Any:
    """Continue an interrupted sweep: unfinished trials resume from their last checkpoint, errored ones
    are retried. Ray does not restore a scheduler's state (ASHA starts its rungs afresh)."""
    return tune.Tuner.restore(paths.experiment, make_trainable(spec, paths), resume_unfinished=True,
                              resume_errored=True)


def run_sweep(spec: SweepSpec, paths: SweepPaths, *, address: str | None = None, resume: bool = False,
              verbose: int = 1) -> Any:
    """Run (or resume) a sweep and return Tune's ResultGrid. Uses the Ray session already connected,
    else ``address``, else starts a local Ray in this process."""
    check_paths(paths, resume)
    # Bounded checkpoints (num_to_keep) force an experiment snapshot every few reports, by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        connect(address, verbose)
    tuner = restore_tuner(spec, paths) if resume else make_tuner(spec, paths, verbose)
    grid = tuner.fit()
    for result in grid:  # trials a scheduler stopped early end without merging their own files
        if result.error is None and result.metrics:
            for trial_id in row_trial_ids(result.metrics.get("trial_id", ""), result.config or {}):
                compact_trial(paths.results, trial_id)
    compact_results(paths.results)  # finished trials' files -> one per table, for fast analysis
    return grid


def connect(address: str | None, verbose: int = 1) -> None:
    """Join the Ray cluster at ``address``, or start a local Ray when it is None; a cluster that cannot
    be reached is a SweepError naming the address, not a traceback."""
    try:
        ray.init(address=address, log_to_driver=verbose > 0, configure_logging=verbose > 0)
    except Exception as err:  # ConnectionError (no cluster), ValueError (bad address), RuntimeError ...
        if address is None:
            raise
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SweepError(f"cannot connect to the Ray cluster at address {address!r} (--address or $RAY_ADDRESS): "
                         f"{detail}. Start the cluster first (ray start --head, or ray up), pass the "
                         f"address it printed, or leave out --address to run a local Ray") from None


def _trial_dirname(trial: Any) -> str:
    # Tune's default names a directory after the whole config, too long for dotted cil keys.
    return f"{trial.trainable_name}_{trial.trial_id}"
