"""Optuna, told only about trials that reached their final task.

Tune hands a searcher a trial's last result when it ends, also when ASHA stopped it early; Optuna
would then record an early-task accuracy as if it were final. Here such trials are recorded as
PRUNED (their per-task values still reach Optuna as intermediate values), so the objective stays a
final-task metric.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class FinalTaskOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose objective is the metric after the trial's final task."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result is not None and not result.get("final_task", False):
            result = None  # no value and no error: OptunaSearch tells Optuna the trial was pruned
        super().on_trial_complete(trial_id, result=result, error=error)
