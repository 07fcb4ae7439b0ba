"""Sweep specs are validated completely before Ray starts; every preset passes --dry-run."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from tune.cli import main
from tune.spec import SEEDS_KEY, Resources, SpecError, check_capacity, load_spec, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = sorted(glob.glob(os.path.join(ROOT, "tune", "presets", "*.yaml")))
FAST = {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 2}
NO_EPOCHS = {k: v for k, v in FAST.items() if k != "train.nepochs"}  # for searching train.nepochs


def problems(raw: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return str(info.value)


def test_every_preset_passes_dry_run(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert {os.path.basename(p) for p in PRESETS} >= {
        "quickstart.yaml", "cifar100_lwf_paper.yaml", "cifar100_lwf_lamb_optuna.yaml", "imagenet100_lwf.yaml"}
    for preset in PRESETS:
        assert main(["sweep", preset, "--dry-run", "--storage", str(tmp_path)]) == 0, preset
        out = capsys.readouterr().out
        assert "trials" in out and "resources per trial: cpu=" in out and "sample trial configs" in out


def test_quickstart_is_the_24_trial_cpu_sweep() -> None:
    from cil.data import load_dataset
    from tune.spec import load_spec

    spec = load_spec(os.path.join(ROOT, "tune", "presets", "quickstart.yaml"))
    assert spec.num_trials == 24 and spec.resources == Resources(cpu=1, gpu=0)
    assert set(spec.grid["approach"]) == {"finetuning", "joint", "lwf", "lwf-s", "lwf-sr", "lwf-br",
                                          "lwf-br2", "lwf-bsr"}
    assert len(spec.seeds) == 3
    # Bundled data (no download, no data root), cut into 10-way tasks: with 2-class tasks (digits) the
    # LwF variants do not separate.
    data = load_dataset(spec.base["data.dataset"], None)
    assert data.name == "synthetic" and data.image_size == 8 and data.channels == 1
    assert data.num_classes // spec.base["data.num_tasks"] == 10


def test_optuna_preset_runs_every_seed_per_point() -> None:
    from tune.spec import load_spec

    spec = load_spec(os.path.join(ROOT, "tune", "presets", "cifar100_lwf_lamb_optuna.yaml"))
    assert spec.search and set(spec.search.space) == {"loss.lamb", "loss.w_task", "loss.w_bce_kd"}
    assert spec.runs_per_trial == 3 and spec.scheduler and spec.scheduler.max_t == 10
    configs = spec.trial_configs(limit=3)
    assert all(c[SEEDS_KEY] == [0, 1, 2] and "run.seed" not in c for c in configs)
    assert all(0.1 <= c["loss.lamb"] <= 10 for c in configs)


@pytest.mark.parametrize("raw, expected", [
    ({"base": FAST | {"loss.lamda": 2}}, "base.loss.lamda: unknown config key 'loss.lamda'; did you mean 'loss.lamb'"),
    ({"base": FAST, "grid": {"approach": ["lwf", "lwf-q"]}}, "grid.approach: approach = 'lwf-q' is not valid"),
    ({"base": FAST | {"loss.w_task": -1}}, "base.loss.w_task: loss.w_task = -1.0 is not valid: must be >= 0"),
    ({"base": FAST, "grid": {"loss.w_bce_kd": [0.5, -2]}}, "grid.loss.w_bce_kd: loss.w_bce_kd = -2.0 is not valid"),
    ({"base": FAST, "grdi": {}}, "unknown spec key 'grdi'; did you mean 'grid'?"),
    ({"base": FAST, "resources": {"cpus": 1}}, "unknown key 'resources.cpus'; did you mean 'resources.cpu'"),
    ({"base": FAST, "resources": {"gpu": -1}}, "resources.gpu = -1 is not valid"),
    ({"base": FAST, "resources": {"gpu": 2}}, "resources.gpu = 2 is not valid: a trial trains on one GPU"),
    ({"base": FAST, "resources": {"gpu": 1.5}}, "resources.gpu = 1.5 is not valid: a trial trains on one GPU"),
    ({"base": FAST, "grid": {"run.seed": 3}}, "grid.run.seed = 3 is not valid: must be a non-empty list"),
    ({"base": FAST | {"approach": "lwf"}, "grid": {"approach": ["lwf-s"]}}, "grid.approach is also set in base"),
    ({"base": FAST, "search": {"metric": "avg_acc_tag", "space": {"run.seed": {"type": "int", "low": 0, "high": 3}}}},
     "search.space.run.seed: seeds are never optimised"),
    ({"base": FAST, "search": {"metric": "avg_acc_tag",
                               "space": {"loss.lamb": {"type": "float", "low": -1, "high": 2}}}},
     "search.space.loss.lamb: loss.lamb = -1.0 is not valid"),
    ({"base": FAST, "grid": {"approach": ["lwf"]},
      "search": {"metric": "avg_acc_tag", "space": {"loss.lamb": {"type": "float", "low": 1, "high": 2}}}},
     "grid.approach cannot be combined with search"),
    ({"base": FAST, "search": {"metric": "acc", "space": {"loss.lamb": {"type": "float", "low": 1, "high": 2}}}},
     "unknown search.metric value 'acc'"),
    ({"base": FAST, "scheduler": {"type": "hyperband"}}, "scheduler.type = 'hyperband' is not valid"),
    ({"base": FAST, "failure": {"max_failure": 1}}, "did you mean 'failure.max_failures'"),
    ({"base": FAST | {"run.device": "cuda"}}, "base.run.device cannot be set in a sweep"),
    ({"base": NO_EPOCHS, "search": {"metric": "avg_acc_tag", "space": {"train.nepochs": {"type": "float", "low": 1,
                                                                                    "high": 4}}}},
     "search.space.train.nepochs: type: float is not valid for train.nepochs, an int"),
    ({"base": FAST, "search": {"metric": "avg_acc_tag", "space": {"data.nc_first_task": {"type": "float", "low": 2,
                                                                                         "high": 5}}}},
     "use type: int"),
    ({"base": FAST, "search": {"metric": "avg_acc_tag", "space": {"data.fixed_class_order": {"type": "int", "low": 0,
                                                                                            "high": 1}}}},
     "search.space.data.fixed_class_order: type: int is not valid for data.fixed_class_order, a bool"),
    ({"base": FAST, "grid": {"run.seed": [0, 1]},
      "scheduler": {"type": "asha", "metric": "avg_acc_tag", "grace_period": 3}},
     "scheduler.grace_period = 3 is not valid: must be <= 2, the most tasks any trial trains"),
])
def test_spec_errors_name_the_key(raw: dict, expected: str) -> None:
    assert expected in problems(raw)


def test_all_problems_are_reported_at_once() -> None:
    text = problems({"base": FAST | {"loss.lamda": 1, "train.lr": -0.1}, "grid": {"approach": ["lwf-x"]},
                     "max_concurrent": 0})
    for key in ("loss.lamda", "train.lr", "grid.approach", "max_concurrent"):
        assert key in text


def test_capacity_is_checked_against_this_machine() -> None:
    assert check_capacity(Resources(cpu=1, gpu=0), cpus=2, gpus=0) == []
    [gpu] = check_capacity(Resources(cpu=1, gpu=2), cpus=2, gpus=0)
    assert "resources.gpu = 2 is more than this machine has (0 GPUs)" in gpu
    [cpu] = check_capacity(Resources(cpu=3, gpu=0), cpus=2, gpus=0)
    assert "resources.cpu = 3 is more than this machine has (2 CPUs)" in cpu


@pytest.mark.parametrize("resources, expected", [
    ({"cpu": 1, "gpu": 1}, "resources.gpu = 1 is more than this machine has"),
    ({"cpu": (os.cpu_count() or 1) + 1}, "resources.cpu ="),
])
def test_impossible_request_stops_before_ray_starts(tmp_path, resources: dict, expected: str) -> None:
    """The real CLI, in a fresh interpreter: exit code 2, a message naming the key, and Ray never
    even imported (so it cannot have started)."""
    if resources.get("gpu"):
        import torch

        if torch.cuda.device_count() >= resources["gpu"]:
            pytest.skip("this machine has enough GPUs")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST, "grid": {"approach": ["lwf"]}, "resources": resources}))
    code = textwrap.dedent(f"""
        import sys
        from tune.cli import main
        rc = main(["sweep", {str(spec)!r}, "--storage", {str(tmp_path / "store")!r}])
        assert "ray" not in sys.modules, "ray was imported"
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert not (tmp_path / "store").exists()


def test_spec_typo_stops_the_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "typo.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST | {"loss.lamda": 2}}))
    assert main(["sweep", str(spec), "--storage", str(tmp_path / "store")]) == 2
    assert "loss.lamda" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_relative_data_root_is_made_absolute() -> None:
    spec = parse_spec({"base": FAST | {"data.data_root": "some/data"}})
    assert spec.base["data.data_root"] == os.path.abspath("some/data")


def test_search_types_follow_the_config_leaf() -> None:
    """int over a float key is fine (and stays int); categorical choices are each checked as a trial."""
    spec = parse_spec({"base": NO_EPOCHS, "search": {"metric": "avg_acc_tag", "num_samples": 4, "space": {
        "loss.T": {"type": "int", "low": 1, "high": 4},
        "train.nepochs": {"type": "int", "low": 1, "high": 3}}}})
    assert all(isinstance(c["train.nepochs"], int) and 1 <= c["loss.T"] <= 4 for c in spec.trial_configs())
    text = problems({"base": NO_EPOCHS, "search": {"metric": "avg_acc_tag", "space": {
        "train.nepochs": {"type": "categorical", "choices": [2, 2.5]}}}})
    assert "search.space.train.nepochs: train.nepochs = 2.5 has the wrong type: expected int" in text


def test_grace_period_may_equal_the_tasks() -> None:
    spec = parse_spec({"base": {k: v for k, v in FAST.items() if k != "data.num_tasks"},
                       "grid": {"data.num_tasks": [2, 3]},
                       "scheduler": {"type": "asha", "metric": "avg_acc_tag", "grace_period": 3}})
    assert spec.scheduler and spec.scheduler.max_t == 3 and spec.scheduler.grace_period == 3


PAPER_PRESETS = ("cifar100_lwf_paper.yaml", "cifar100_lwf_lamb_optuna.yaml", "imagenet100_lwf.yaml")
FACIL_DEFAULTS = {"data.num_tasks": 10, "train.nepochs": 200, "train.lr": 0.1, "train.lr_min": 1e-4,
                  "train.lr_factor": 3, "train.lr_patience": 5, "train.momentum": 0, "train.weight_decay": 0,
                  "train.batch_size": 64, "loss.T": 2}


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_facil_defaults_and_seeded_class_order(name: str) -> None:
    """As the paper's run.sh (FACIL's --datasets cifar100): the class order is shuffled by each seed."""
    from tune.spec import load_spec

    spec = load_spec(os.path.join(ROOT, "tune", "presets", name))
    assert spec.base["data.fixed_class_order"] is False
    assert {k: spec.base[k] for k in FACIL_DEFAULTS} == FACIL_DEFAULTS
    if spec.search is None:
        assert spec.base["loss.lamb"] == 1
    expected_net = "resnet18" if name.startswith("imagenet") else "resnet32"
    assert spec.base["model.network"] == expected_net


def test_malformed_address_is_a_clear_error(tmp_path) -> None:
    """The real CLI and Ray (a malformed address fails at once, without looking for clusters)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST, "grid": {"approach": ["lwf"]}}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "tune", "sweep", str(spec), "--address", "not an address",
                           "--storage", str(tmp_path / "store")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot connect to the Ray cluster at address 'not an address'" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The storage was created and probed before Ray started; nothing of the sweep was left in it.
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


# A fresh interpreter runs the tune CLI, then reports which of these it imported (the spec and the config
# promise to stay torch-free, so a dry run and a spec error answer in well under a second).
_IMPORTS_AFTER = """
import runpy, sys
sys.argv = ["tune", *sys.argv[1:]]
try:
    runpy.run_module("tune", run_name="__main__")
except SystemExit as stop:
    code = stop.code
print("heavy:", ",".join(m for m in ("torch", "torchvision", "ray") if m in sys.modules) or "none", code)
"""


@pytest.mark.parametrize("spec, code", [("tune/presets/quickstart.yaml", 0), ("bad", 2)])
def test_dry_run_and_spec_errors_never_import_torch(tmp_path, spec: str, code: int) -> None:
    if spec == "bad":  # a synthetic set's bad parameters: validated by the torch-free catalog
        spec = str(tmp_path / "bad.yaml")
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"base": {"data.dataset": "synthetic:colour=3"}}))
    proc = subprocess.run([sys.executable, "-c", _IMPORTS_AFTER, "sweep", spec, "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == f"heavy: none {code}", proc.stdout + proc.stderr
    if code:
        assert "synthetic parameter 'colour=3' is not valid" in proc.stderr


def test_presets_are_named_by_name_and_listed_one_line_each(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["sweep", "quickstart", "--dry-run", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep 'quickstart' from sweep spec ") and "presets/quickstart.yaml" in out.splitlines()[0]
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    presets = [os.path.basename(p)[: -len(".yaml")] for p in PRESETS]
    assert [line.split()[0] for line in lines] == presets
    assert all(len(line.split(maxsplit=1)[1]) > 20 and len(line) <= 120 for line in lines)


def test_an_unknown_preset_name_says_which_are_close() -> None:
    with pytest.raises(SpecError, match=r"unknown spec file or preset 'quickstrat'; did you mean 'quickstart'\?"):
        load_spec("quickstrat")


def test_a_description_is_one_short_line() -> None:
    assert parse_spec({"base": {"approach": "lwf"}, "description": "lwf alone"}).description == "lwf alone"
    assert "description = 'two\\nlines' is not valid: must be one line" in problems(
        {"base": {"approach": "lwf"}, "description": "two\nlines"})


def test_set_fixes_a_base_key_of_every_trial_and_the_resume_command_repeats_it(capsys) -> None:
    spec = load_spec("quickstart", {"run.threads": 2, "train.nepochs": 3})
    assert spec.base["run.threads"] == 2 and spec.base["train.nepochs"] == 3
    assert load_spec("quickstart").base["train.nepochs"] == 25  # the file itself is untouched
    from tune.cli import build_parser, resume_command

    args = build_parser().parse_args(["sweep", "quickstart", "--set", "run.threads=2", "--storage", "/tmp/s"])
    assert resume_command(args, "quickstart").endswith("--set run.threads=2 --resume")


@pytest.mark.parametrize("item, message", [
    ("run.seed=4", "--set run.seed: the spec sweeps run.seed"),            # a grid key: refused, not collapsed
    ("run.thread=2", "did you mean 'run.threads'"),                      # checked like the spec's own keys
    ("run.threads=many", "run.threads"),                                 # and its value too
    ("run.threads", "--set 'run.threads' is not valid: use --set KEY=VALUE"),
])
def test_a_bad_set_is_one_error_before_anything_runs(item, message, capsys, tmp_path) -> None:
    assert main(["sweep", "quickstart", "--set", item, "--storage", str(tmp_path / "runs")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_set_gives_a_trial_its_threads_and_more_threads_than_cpus_is_a_warning(capsys, tmp_path) -> None:
    """run.threads beyond a CPU trial's share oversubscribes the cores (several times slower, the same
    bits): said before anything runs, with the --set that fixes it."""
    from tune.spec import oversubscription

    crowded = load_spec("quickstart", {"run.threads": 2})
    [warning] = oversubscription(crowded)
    assert "run.threads = 2" in warning and "--set resources.cpu=2" in warning
    fitted = load_spec("quickstart", {"run.threads": 2, "resources.cpu": 2})
    assert fitted.resources.cpu == 2 and oversubscription(fitted) == []
    assert main(["sweep", "quickstart", "--set", "run.threads=2", "--dry-run"]) == 0
    assert "warning: run.threads = 2 is more than" in capsys.readouterr().err
