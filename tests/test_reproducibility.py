"""The numeric environment (cil.numerics): run.threads and run.cpu_isa set and recorded, verify re-runs a
trial and names what differs, the portable mode's stored digest, a sweep trial equal to python -m cil."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cil.config import ConfigError, ExperimentConfig
from cil.results_schema import ENVIRONMENT_COLUMNS, PROVENANCE_COLUMNS
from cil.verify import REFERENCE_DIGEST, REFERENCE_RUN, read_rows, rows_digest, verify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--datasets", "synthetic:classes=4,channels=1,size=8,train=10,test=5", "--approach", "lwf",
        "--num-tasks", "2", "--nepochs", "1", "--quiet"]


@pytest.mark.parametrize("key, value, message", [
    ("run.threads", 0, "run.threads = 0 is not valid: use auto or a count >= 1"),
    ("run.threads", "many", "run.threads = 'many' is not valid"),
    ("run.threads", 1.5, "run.threads = 1.5 has the wrong type: expected int or str"),
    ("run.cpu_isa", "avx512", "run.cpu_isa = 'avx512' is not valid"),
])
def test_bad_numeric_settings_are_config_errors(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ExperimentConfig.from_dict({key: value})


def test_threads_accept_a_count_or_auto() -> None:
    assert ExperimentConfig.from_dict({"run.threads": 3}).run.threads == 3
    assert ExperimentConfig.from_dict({"run.threads": "auto"}).run.threads == "auto"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 2-task python -m cil run with one thread, in the portable mode: its results folder."""
    from cil.cli import main

    root = tmp_path_factory.mktemp("recorded")
    assert main([*TINY, "--set", "run.threads=1", "--results-path", str(root), "--exp-name", "tiny"]) == 0
    return str(root / "tiny" / "results")


def test_rows_record_the_numeric_environment_in_effect(recorded) -> None:
    [row, *_] = read_rows(recorded, "task_results")
    assert set(ENVIRONMENT_COLUMNS) <= set(PROVENANCE_COLUMNS) <= set(row)
    assert row["threads_in_effect"] == 1 and row["run.threads"] == "1"
    assert row["cpu_isa_in_effect"].startswith("portable (aten AVX2, mkl COMPATIBLE, onednn off)")
    assert row["cpu_model"] and row["numpy_version"] and row["cil_version"] and len(row["lock_hash"]) == 12


def test_verify_passes_on_the_same_environment(recorded) -> None:
    outcome = verify(recorded)
    assert outcome.identical and outcome.compared > 20, outcome.report()
    assert "numerics_fingerprint" not in outcome.environment


def test_verify_with_another_thread_count_fails_and_names_it(recorded, capsys) -> None:
    from cil.cli import main

    assert main(["verify", recorded, "--set", "run.threads=2"]) == 1
    out = capsys.readouterr().out
    assert "values differ" in out and "threads_in_effect (run.threads): 1 -> 2" in out


def test_verify_in_the_native_mode_fails_and_names_the_isa_field(recorded) -> None:
    outcome = verify(recorded, overrides={"run.cpu_isa": "native"})
    assert not outcome.identical and "cpu_isa_in_effect" in outcome.environment
    assert "cpu_isa_in_effect (run.cpu_isa)" in outcome.report()


def test_verify_re_runs_one_task_from_the_checkpoint_before_it(tmp_path) -> None:
    """A sweep's layout (results/ beside <trainable>_<id>/checkpoint_*/cil_state.pt), written without Ray:
    task 1 alone, from the state after task 0, gives the recorded rows of task 1."""
    import torch

    from cil.loop import run
    from cil.results import write_task
    from cil.verify import VerifyError

    cfg = ExperimentConfig.from_dict({"approach": "lwf", "data.dataset": TINY[1], "data.num_tasks": 2,
                                      "train.nepochs": 1, "run.device": "cpu"})
    results = tmp_path / "sweep" / "results"
    for r in run(cfg):
        tag = {"sweep": "sweep", "trial_id": "abc12"}
        write_task([tag | x for x in r.task_rows], [tag | x for x in r.head_rows], str(results), "abc12", r.task,
                   [tag | x for x in r.epoch_rows])
        folder = tmp_path / "sweep" / "train_trial_abc12" / f"checkpoint_00000{r.task}"
        folder.mkdir(parents=True)
        torch.save({"states": [r.state]}, folder / "cil_state.pt")
    outcome = verify(str(tmp_path / "sweep"), task=1)
    assert outcome.identical and outcome.first == 1, outcome.report()
    assert "tasks 1..1 (from its checkpoint)" in outcome.report()
    with pytest.raises(VerifyError, match="--task 2 is not valid"):
        verify(str(tmp_path / "sweep"), task=2)


def test_a_mode_that_a_kernel_already_fixed_is_refused_naming_the_start_up_variables() -> None:
    """MKL's code path is fixed by its first call: a later portable run would not be portable."""
    code = ("import torch\ntorch.randn(64, 64) @ torch.randn(64, 64)\nfrom cil import numerics\n"
            "numerics.apply(1, 'portable')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "NumericsError" in out.stderr and "MKL_CBWR=COMPATIBLE" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("simulated", [{}, {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
                                       {"MKL_ENABLE_INSTRUCTIONS": "AVX"}])
def test_the_portable_mode_computes_the_stored_digest(simulated) -> None:
    """The stored digest of cil.verify.REFERENCE_RUN, on this CPU and with MKL and oneDNN capped as on
    older CPUs: a machine with another CPU that fails here does not hold the portability guarantee."""
    import torch

    if torch.__version__ != REFERENCE_DIGEST["torch"]:
        pytest.skip(f"the digest was stored with torch {REFERENCE_DIGEST['torch']}, this is {torch.__version__}")
    code = "import json\nfrom cil.verify import reference_check\nprint(json.dumps(reference_check()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ | simulated, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"match": true' in out.stdout, out.stdout


@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_trial_equals_python_m_cil_with_its_thread_count_and_tune_verify_says_so(tmp_path, monkeypatch) -> None:
    """A sweep trial (Ray worker, CPU share 1) and python -m cil with run.threads: 1 compute the same bits;
    python -m tune verify re-runs the trial and finds them identical, and names run.threads when it differs."""
    from cil.cli import main as cil_main
    from tune.cli import main as tune_main
    from tune.paths import SweepPaths
    from tune.spec import parse_spec
    from tune.sweep import run_sweep

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    spec = parse_spec({"base": {"data.dataset": TINY[1], "data.num_tasks": 2, "train.nepochs": 1, "approach": "lwf",
                                "run.seed": 0, "run.threads": "auto"}, "resources": {"cpu": 1},
                       "checkpoint": {"num_to_keep": 2}})
    paths = SweepPaths(str(tmp_path / "runs"), "tiny")
    import ray

    try:
        [result] = run_sweep(spec, paths, verbose=0).grid
    finally:
        ray.shutdown()
    assert result.error is None
    assert cil_main([*TINY, "--set", "run.threads=1", "--results-path", str(tmp_path / "cil"),
                     "--exp-name", "tiny"]) == 0
    tables = ("task_results", "heads", "epochs")
    sweep_rows = {t: read_rows(paths.results, t) for t in tables}
    cil_rows = {t: read_rows(str(tmp_path / "cil" / "tiny" / "results"), t) for t in tables}
    assert sweep_rows["task_results"][0]["threads_in_effect"] == 1
    assert sweep_rows["task_results"][0]["numerics_fingerprint"] == cil_rows["task_results"][0]["numerics_fingerprint"]
    assert rows_digest(sweep_rows) == rows_digest(cil_rows)
    assert tune_main(["verify", str(tmp_path / "runs" / "tiny")]) == 0
    assert tune_main(["verify", str(tmp_path / "runs" / "tiny"), "--set", "run.threads=2"]) == 1
    assert tune_main(["verify", str(tmp_path / "runs" / "tiny"), "--task", "1"]) == 0  # from its checkpoint


def test_the_reference_run_is_small_and_portable() -> None:
    cfg = ExperimentConfig.from_dict(REFERENCE_RUN)
    assert cfg.run.cpu_isa == "portable" and cfg.run.threads == 1 and cfg.data.num_tasks == 2


def test_a_sweep_cannot_grid_over_the_cpu_mode() -> None:
    from tune.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match="grid.run.cpu_isa cannot be swept: a worker process keeps"):
        parse_spec({"base": {"approach": "lwf"}, "grid": {"run.cpu_isa": ["portable", "native"]}})
    assert parse_spec({"base": {"approach": "lwf"}, "grid": {"run.threads": [1, 2]}}).num_trials == 2
