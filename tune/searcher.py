"""Optuna, told only about trials that reached their final task.

Tune hands a searcher a trial's last result when it ends, also when ASHA stopped it early; Optuna
would then record an early-task accuracy as if it were final. Here such trials are recorded as
PRUNED (their per-task values still reach Optuna as intermediate values), so the objective stays a
final-task metric. With ``search.storage`` the study lives in that database (optuna-dashboard and
``optuna.load_study`` read it, during and after the sweep).
"""

from __future__ import annotations

import os
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from tune.paths import SweepError
from tune.spec import Search


class FinalTaskOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose objective is the metric after the trial's final task."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result is not None and not result.get("final_task", False):
            result = None  # no value and no error: OptunaSearch tells Optuna the trial was pruned
        super().on_trial_complete(trial_id, result=result, error=error)


def make_searcher(search: Search, sweep: str) -> FinalTaskOptunaSearch:
    """The Optuna searcher of a new sweep; with a storage, its study (named ``search.study_name``, else
    the sweep) is created there, and an existing study of that name is refused rather than mixed in."""
    storage = None
    study_name = search.study_name or sweep
    if search.storage is not None:
        storage = _rdb_storage(search.storage)
        import optuna

        if study_name in optuna.get_all_study_names(storage):
            raise SweepError(f"search.storage {search.storage} already holds a study named {study_name!r}: "
                             f"choose another search.study_name (or sweep --name), or pass --resume to "
                             f"continue the sweep that made it")
    return FinalTaskOptunaSearch(space=search.distributions(), metric=search.metric, mode=search.mode,
                                 seed=search.seed, storage=storage, study_name=study_name)


def _rdb_storage(url: str) -> Any:
    """Optuna's RDBStorage for ``url``; the folder of a SQLite file is created, and a database that
    cannot be opened is a SweepError naming the URL."""
    import optuna

    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # sqlalchemy's errors (bad driver, unreachable server, ...) or a missing module
        raise SweepError(f"search.storage {url!r} cannot be opened: {' '.join(str(err).split())}") from None
