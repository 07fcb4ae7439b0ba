"""The GPU path's rules that a CPU machine can show through real Ray trials (docs/gpu.md): a trial that
Ray gave a GPU which torch cannot use fails once, naming the versions and the fix; CUDA out of memory is
a permanent error with the fix; a trial process runs with the deterministic switches and
``CUBLAS_WORKSPACE_CONFIG`` set, and its rows say so.

The local Ray declares one GPU on this CPU-only machine, as a node whose driver torch cannot use would.
"""

from __future__ import annotations

import json
import os

import drivers
import fault_hooks
import pandas as pd
import pytest
import torch

from cil.device import CUBLAS_WORKSPACE
from cil.results_schema import PROVENANCE_COLUMNS
from tune.paths import SweepPaths
from tune.spec import parse_spec

pytestmark = pytest.mark.ray

FAST = {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 1,
        "train.batch_size": 64}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """A local Ray with one declared GPU; trials of the sweep 'oom' run out of CUDA memory in task 1,
    every trial writes its numerics probe."""
    if torch.cuda.is_available():
        pytest.skip("torch can use CUDA here: the declared GPU would be usable")
    folder = tmp_path_factory.mktemp("probes")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in drivers.env().items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # the trial process must set it itself
        mp.setenv(fault_hooks.ENV, json.dumps({"cuda_oom_at_task": 1, "sweep": "oom",
                                               "probe_numerics": str(folder)}))
        import ray

        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"worker_process_setup_hook": fault_hooks.HOOK})
        yield folder
        ray.shutdown()


def _sweep(tmp_path, name: str, base: dict | None = None, resources: dict | None = None):
    from tune.sweep import run_sweep

    spec = parse_spec({"base": FAST | (base or {}), "grid": {"run.seed": [0]},
                       "resources": resources or {"cpu": 1}, "failure": {"max_failures": 2}})
    paths = SweepPaths(str(tmp_path), name)
    return paths, run_sweep(spec, paths, verbose=0)


def _probe(folder, rows: pd.DataFrame) -> dict:
    [trial_id] = rows["trial_id"].unique()
    return json.loads((folder / f"{trial_id}.json").read_text())


def test_a_trial_given_a_gpu_torch_cannot_use_fails_once_naming_versions_and_fix(probes, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "gpu", resources={"cpu": 1, "gpu": 1})
    [trial_id] = outcome.errored
    message = outcome.failures[trial_id]
    assert "CudaUnusableError: Ray gave this trial GPU 0" in message and "CUDA is not usable" in message
    assert f"torch {torch.__version__}" in message
    assert (f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in message
    assert "no NVIDIA driver found" in message or "NVIDIA driver is " in message
    assert "resources.gpu: 0" in message  # what to change
    [result] = outcome.grid
    assert "not retried" in str(result.error)  # the retries ended at once
    assert not os.path.exists(os.path.join(paths.results, "task_results"))  # nothing trained on the CPU


@pytest.mark.slow  # one more Ray trial (about 20 s); the fail-once rule stays in the default run above
def test_cuda_out_of_memory_fails_once_with_the_fix(probes, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "oom")
    [trial_id] = outcome.errored
    message = outcome.failures[trial_id]
    assert message.startswith("CudaOutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "resources.gpu" in message and "train.batch_size" in message
    assert "not retried" in str(outcome.grid[0].error)
    rows = pd.read_parquet(os.path.join(paths.results, "task_results"))
    assert sorted(rows["task"].unique()) == [0]  # task 0's rows stay, task 1 never ran again


def test_a_trial_process_runs_deterministic_and_its_rows_say_what_ran(probes, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "det")
    assert outcome.errored == []
    rows = pd.read_parquet(os.path.join(paths.results, "task_results"))
    probe = _probe(probes, rows)
    assert probe == {"cublas": CUBLAS_WORKSPACE, "cudnn_deterministic": True, "cudnn_benchmark": False,
                     "deterministic_algorithms": True, "tf32": False}
    assert set(PROVENANCE_COLUMNS) <= set(rows.columns)
    first = rows.iloc[0]
    assert first["device_kind"] == "cpu" and first["torch_version"] == torch.__version__
    assert bool(first["deterministic_in_effect"]) and not first["tf32_in_effect"] and not first["amp_in_effect"]


def test_run_deterministic_false_lets_cudnn_autotune(probes, tmp_path) -> None:
    paths, outcome = _sweep(tmp_path, "fast", {"run.deterministic": False, "train.cudnn_benchmark": True})
    assert outcome.errored == []
    rows = pd.read_parquet(os.path.join(paths.results, "task_results"))
    probe = _probe(probes, rows)
    assert probe["cudnn_deterministic"] is False and probe["cudnn_benchmark"] is True
    assert probe["deterministic_algorithms"] is False
    assert not rows["deterministic_in_effect"].any()
