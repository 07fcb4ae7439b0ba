"""The spec's `tracking` section (MLflow / W&B through Ray's logger callbacks) and a persistent Optuna
study (`search.storage`): validated before Ray starts, then checked on a real sweep."""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest

from cil import extras
from tune.paths import SweepError, SweepPaths
from tune.spec import SpecError, Tracking, parse_spec

FAST = {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 2,
        "train.batch_size": 64}
SEARCH = {"metric": "avg_acc_tag", "num_samples": 2, "seed": 0,
          "space": {"loss.lamb": {"type": "float", "low": 0.5, "high": 2.0}}}


def problems(raw: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return str(info.value)


# ---- validation (no Ray) --------------------------------------------------------------------------

def test_tracking_settings_are_parsed_and_local_paths_become_file_uris(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"base": FAST, "tracking": {"mlflow": {"tracking_uri": "mlruns", "experiment_name": "x"}}})
    assert spec.tracking == Tracking(mlflow={"tracking_uri": f"file://{tmp_path}/mlruns", "experiment_name": "x"})
    assert parse_spec({"base": FAST}).tracking == Tracking()
    assert parse_spec({"base": FAST, "tracking": {"mlflow": None}}).tracking == Tracking(mlflow={})
    uri = "http://mlflow.internal:5000"
    assert parse_spec({"base": FAST, "tracking": {"mlflow": {"tracking_uri": uri}}}).tracking.mlflow == {
        "tracking_uri": uri}


@pytest.mark.parametrize("tracking, message", [
    ({"mlfow": {}}, "unknown key 'tracking.mlfow'; did you mean 'tracking.mlflow'"),
    ({"mlflow": {"tracking_url": "file:///x"}}, "unknown key 'tracking.mlflow.tracking_url'; did you mean "
                                                "'tracking.mlflow.tracking_uri'"),
    ({"mlflow": {"experiment_name": 3}}, "tracking.mlflow.experiment_name = 3 is not valid: must be a non-empty "
                                         "string"),
    ({"mlflow": "file:///x"}, "tracking.mlflow must be a mapping with keys tracking_uri, experiment_name"),
    ("mlflow", "tracking must be a mapping with keys mlflow, wandb"),
    ({"wandb": {"project": ""}}, "tracking.wandb.project = '' is not valid"),
])
def test_bad_tracking_settings_name_the_key(tracking, message) -> None:
    assert message in problems({"base": FAST, "tracking": tracking})


def test_a_tracker_that_is_not_installed_is_an_install_hint(monkeypatch) -> None:
    real = extras.importlib.util.find_spec
    monkeypatch.setattr("tune.spec.importlib.util.find_spec", lambda name: None if name == "wandb" else real(name))
    assert ("tracking.wandb needs the package 'wandb', which is not installed: pip install 'cil-sweeps[wandb]'"
            in problems({"base": FAST, "tracking": {"wandb": {"project": "p"}}}))


def test_search_storage_is_an_rdb_url_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"base": FAST, "search": SEARCH | {"storage": "sqlite:///runs/s.db", "study_name": "lamb"}})
    assert spec.search.storage == f"sqlite:///{tmp_path}/runs/s.db" and spec.search.study_name == "lamb"
    assert parse_spec({"base": FAST, "search": SEARCH}).search.storage is None
    for bad in ("runs/s.db", "redis://host", "sqlite:///:memory:", 5):
        assert f"search.storage = {bad!r} is not valid" in problems(
            {"base": FAST, "search": SEARCH | {"storage": bad}})
    assert "search.study_name has no effect without search.storage" in problems(
        {"base": FAST, "search": SEARCH | {"study_name": "lamb"}})


def test_a_new_sweep_refuses_an_existing_study(tmp_path) -> None:
    import optuna

    from tune.searcher import make_searcher

    url = f"sqlite:///{tmp_path}/db/studies.db"  # the folder is created
    search = parse_spec({"base": FAST, "search": SEARCH | {"storage": url}}).search
    make_searcher(search, "lamb-v1")  # the study is created under the sweep's name
    assert optuna.get_all_study_names(url) == ["lamb-v1"]
    with pytest.raises(SweepError, match=r"already holds a study named 'lamb-v1'.*--resume"):
        make_searcher(search, "lamb-v1")


# ---- a real sweep -----------------------------------------------------------------------------------

@pytest.mark.slow  # a real sweep with MLflow and an Optuna database (about 30 s); the tracking config rules stay above
@pytest.mark.ray
def test_sweep_logs_mlflow_runs_and_keeps_the_optuna_study(tmp_path, monkeypatch) -> None:
    """Optuna (2 points x 1 seed, 2 tasks) with MLflow tracking into a file store and the study in SQLite:
    one MLflow run per trial with every task's metrics, the study loadable with optuna.load_study, and
    Tune's TensorBoard files in every trial folder."""
    import mlflow
    import optuna
    import ray

    from tune.sweep import run_sweep

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"file://{tmp_path}/mlruns"
    spec = parse_spec({"base": FAST | {"approach": "lwf-s"}, "grid": {"run.seed": [0]},
                       "search": SEARCH | {"storage": f"sqlite:///{tmp_path}/studies.db", "study_name": "lamb"},
                       "tracking": {"mlflow": {"tracking_uri": uri}}, "resources": {"cpu": 1}})
    paths = SweepPaths(str(tmp_path / "storage"), "tracked")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        results = run_sweep(spec, paths, verbose=0).grid
    finally:
        ray.shutdown()
    assert len(results) == 2 and all(r.error is None for r in results)
    rows = pd.read_parquet(paths.results + "/task_results")

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")  # default experiment name: the sweep's
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["sweep"] == "tracked" and run.info.status == "FINISHED"
        lamb = float(run.data.params["loss.lamb"])
        history = client.get_metric_history(run.info.run_id, "avg_acc_tag")
        assert [m.step for m in history] == [1, 2]  # one value per task
        trial_rows = rows[np.isclose(rows["loss.lamb"], lamb, rtol=1e-12)]
        assert trial_rows["trial_id"].nunique() == 1
        expected = [trial_rows[trial_rows["task"] == t]["acc_tag"].mean() for t in (0, 1)]
        assert [m.value for m in history] == pytest.approx(expected)
        assert {"forg_tag", "avg_inc_acc_taw", "tasks_done"} <= set(run.data.metrics)

    study = optuna.load_study(study_name="lamb", storage=spec.search.storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(r.metrics["avg_acc_tag"] for r in results))
    assert {t.params["loss.lamb"] for t in study.trials} == {r.config["loss.lamb"] for r in results}

    for r in results:
        assert glob.glob(os.path.join(r.path, "events.out.tfevents.*")), r.path
