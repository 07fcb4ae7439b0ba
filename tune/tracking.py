"""The spec's ``tracking`` section as Ray Tune logger callbacks (MLflow, Weights & Biases).

Each trial becomes one tracker run with its config as parameters and every per-task report
(avg_acc_tag, forg_tag, ... at step = task index + 1) as metrics. The callbacks run in the sweep
driver; the trackers' packages are optional extras, checked when the spec is read.
"""

from __future__ import annotations

import os
from typing import Any

from cil.extras import require
from tune.spec import Tracking


def tracking_callbacks(tracking: Tracking, sweep: str) -> list[Any]:
    """Tune callbacks for the trackers the spec turns on; experiment/group names default to the sweep's."""
    callbacks: list[Any] = []
    if tracking.mlflow is not None:
        callbacks.append(mlflow_callback(tracking.mlflow, sweep))
    if tracking.wandb is not None:
        callbacks.append(wandb_callback(tracking.wandb, sweep))
    return callbacks


def mlflow_callback(settings: dict[str, str], sweep: str) -> Any:
    require("mlflow", "tracking.mlflow")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = settings.get("tracking_uri")
    if uri is not None and uri.startswith("file:"):
        # MLflow 3 asks for an explicit opt-in to its file store; a file:// URI in the spec is that choice.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=settings.get("experiment_name", sweep),
                                tags={"sweep": sweep})


def wandb_callback(settings: dict[str, str], sweep: str) -> Any:
    require("wandb", "tracking.wandb")
    from ray.air.integrations.wandb import WandbLoggerCallback

    return WandbLoggerCallback(project=settings.get("project", "cil-sweeps"), group=settings.get("group", sweep))
