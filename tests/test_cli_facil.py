"""python -m cil speaks FACIL's command line: every main_incremental.py flag, real defaults, --print-config."""

import pytest
import yaml

from cil.cli import FACIL_ONLY_FLAGS, build_parser, main
from cil.config import ExperimentConfig

# every flag of FACIL's src/main_incremental.py, plus the LwF and exemplar flags its approaches add
FACIL_FLAGS = (
    "--gpu", "--results-path", "--exp-name", "--seed", "--log", "--save-models", "--last-layer-analysis",
    "--no-cudnn-deterministic", "--datasets", "--num-workers", "--pin-memory", "--batch-size", "--num-tasks",
    "--nc-first-task", "--use-valid-only", "--stop-at-task", "--network", "--keep-existing-head", "--pretrained",
    "--approach", "--nepochs", "--lr", "--lr-min", "--lr-factor", "--lr-patience", "--clipping", "--momentum",
    "--weight-decay", "--warmup-nepochs", "--warmup-lr-factor", "--multi-softmax", "--fix-bn", "--eval-on-train",
    "--gridsearch-tasks", "--lamb", "--T", "--num-exemplars", "--num-exemplars-per-class", "--exemplar-selection",
)


def test_every_facil_flag_is_understood():
    known = {s for action in build_parser()._actions for s in action.option_strings}
    assert [f for f in FACIL_FLAGS if f not in known] == []


def test_help_shows_real_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    for fragment in ("--nepochs NEPOCHS sets train.nepochs (default: 200)", "(default: digits)",
                     "resnet32 for cifar100", "resnet18 for imagenet100", "--lamb LAMB sets loss.lamb (default: "
                     "the approach's preset)"):
        assert fragment in text


@pytest.mark.parametrize("dataset, network", [("cifar100", "resnet32"), ("imagenet100", "resnet18"),
                                              ("digits", "convnet"), ("synthetic", "convnet")])
def test_print_config_shows_the_resolved_network(capsys, dataset, network):
    assert main(["--datasets", dataset, "--num-tasks", "10", "--approach", "lwf", "--print-config"]) == 0
    flat = yaml.safe_load(capsys.readouterr().out)
    assert flat["model.network"] == network and flat["train.amp"] is False and flat["loss.w_joint"] == 1.0
    assert list(flat) == list(ExperimentConfig().to_flat())  # every dotted key, in declaration order
    assert main(["--datasets", dataset, "--num-tasks", "10", "--network", "resnet18", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model.network"] == "resnet18"  # an explicit choice wins


def test_accepted_facil_flags_print_notes_and_change_nothing(capsys):
    assert main(["--num-workers", "4", "--pin-memory", "True", "--last-layer-analysis", "--print-config"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out) == ExperimentConfig().to_flat()
    for flag in ("--num-workers", "--pin-memory", "--last-layer-analysis"):
        assert f"note: {flag} has no effect here" in out.err


def test_no_cudnn_deterministic_turns_determinism_off_as_in_facil(capsys):
    assert main(["--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run.deterministic"] is True  # FACIL's default
    assert main(["--no-cudnn-deterministic", "--print-config"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["run.deterministic"] is False and "no effect" not in out.err


@pytest.mark.parametrize("flag", [f for f, (_, accepted, _) in FACIL_ONLY_FLAGS.items() if not accepted])
def test_refused_facil_flags_say_what_replaces_them_before_any_work(tmp_path, capsys, flag):
    kwargs = FACIL_ONLY_FLAGS[flag][0]
    args = [flag] if kwargs.get("action") == "store_const" else [flag, "2"]
    assert main([*args, "--results-path", str(tmp_path / "res"), "--nepochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: ") and len(err) > len(flag) + 30
    assert not (tmp_path / "res").exists()


def test_log_flag_takes_facil_loggers_without_a_note(capsys):
    assert main(["--log", "disk", "tensorboard", "--print-config"]) == 0
    assert "note" not in capsys.readouterr().err
    assert build_parser().parse_args([]).log == ["disk"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log", "wandb"])
    assert "invalid choice: 'wandb'" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_gpu_without_cuda_falls_back_to_the_cpu_as_facil_does(capsys):
    assert main(["--gpu", "0", "--print-config"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["run.device"] == "cpu" and "CUDA is not available" in out.err
    assert main(["--gpu", "0", "--device", "auto", "--print-config"]) == 0  # --device wins
    assert yaml.safe_load(capsys.readouterr().out)["run.device"] == "auto"


def test_facil_switches_and_stop_at_task_set_their_keys(capsys):
    assert main(["--eval-on-train", "--fix-bn", "--multi-softmax", "--stop-at-task", "3", "--print-config"]) == 0
    flat = yaml.safe_load(capsys.readouterr().out)
    assert (flat["train.eval_on_train"], flat["train.fix_bn"], flat["train.multi_softmax"]) == (True, True, True)
    assert flat["run.stop_at_task"] == 3
    assert main(["--print-config"]) == 0
    flat = yaml.safe_load(capsys.readouterr().out)
    assert (flat["train.eval_on_train"], flat["train.fix_bn"], flat["train.multi_softmax"]) == (False, False, False)
    assert flat["run.stop_at_task"] == 0


def test_stop_at_task_beyond_the_scenario_is_refused_before_any_work(tmp_path, capsys):
    assert main(["--num-tasks", "4", "--stop-at-task", "5", "--results-path", str(tmp_path / "res")]) == 2
    assert "run.stop_at_task = 5 is not valid" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()
