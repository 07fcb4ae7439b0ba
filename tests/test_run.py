"""End to end on digits: the incremental loop, its Parquet rows, determinism and resume."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from cil.approaches import APPROACHES, SPECS
from cil.approaches.base import train_task
from cil.config import ExperimentConfig
from cil.loop import run
from cil.results import write_task

FAST = {"data.dataset": "digits", "data.num_tasks": 5, "model.network": "convnet", "train.nepochs": 4,
        "train.lr_patience": 2, "run.device": "cpu"}
TIMING = ["train_seconds"]  # wall time is the one column that may differ between identical runs


def _cfg(**over):
    return ExperimentConfig.from_dict(FAST | over)


def _rows(cfg, state=None):
    rows, heads, last = [], [], None
    for r in run(cfg, state=state):
        rows += r.task_rows
        heads += r.head_rows
        last = r
    return pd.DataFrame(rows), pd.DataFrame(heads), last


@pytest.fixture(scope="module")
def finetuning_and_joint():
    return {a: _rows(_cfg(approach=a)) for a in ("finetuning", "joint")}


def test_joint_well_above_finetuning(finetuning_and_joint):
    final = {a: r[2].metrics["avg_acc_tag"] for a, r in finetuning_and_joint.items()}
    assert final["joint"] > final["finetuning"] + 0.2, final
    assert final["joint"] > 0.8


def test_rows_follow_schema(finetuning_and_joint):
    df, heads, _ = finetuning_and_joint["finetuning"]
    assert len(df) == 15 and len(heads) == 15      # sum over t of (t + 1)
    assert not df.duplicated(["task", "eval_task"]).any()
    for col in ("approach", "seed", "dataset", "num_tasks", "network", "task", "eval_task", "classes_seen",
                "acc_taw", "acc_tag", "forg_taw", "forg_tag", "train_seconds", "loss.lamb", "train.lr"):
        assert col in df.columns
    assert df.classes_seen.max() == 10
    assert ((df.acc_tag <= df.acc_taw + 1e-12) & df.acc_tag.between(0, 1)).all()
    assert (df[df.task == df.eval_task][["forg_taw", "forg_tag"]] == 0).all().all()


@pytest.mark.parametrize("approach", [a for a in APPROACHES if a not in ("finetuning", "joint")])
def test_every_approach_runs(approach):
    memory = {"memory.num_exemplars": 30} if SPECS[approach].needs_exemplars else {}
    cfg = _cfg(approach=approach, **{"data.num_tasks": 3, "train.nepochs": 2} | memory)
    df, heads, last = _rows(cfg)
    assert len(df) == 6 and last.metrics["avg_acc_taw"] > 0.5
    assert set(heads["head"]) == {0, 1, 2}


def test_same_seed_same_parquet_rows(tmp_path):
    cfg = _cfg(approach="lwf-bsr", **{"data.num_tasks": 3, "memory.num_exemplars": 40,
                                      "memory.selection": "herding"})
    for name in ("a", "b"):
        for r in run(cfg):
            tag = {"sweep": "s", "trial_id": "x"}
            write_task([tag | x for x in r.task_rows], [tag | x for x in r.head_rows], str(tmp_path / name),
                       "x", r.task)
    a = pd.read_parquet(tmp_path / "a" / "task_results").drop(columns=TIMING)
    b = pd.read_parquet(tmp_path / "b" / "task_results").drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "heads"), pd.read_parquet(tmp_path / "b" / "heads"))
    other = _rows(cfg.replace(**{"run.seed": 1}))[0].drop(columns=TIMING)
    assert not a.sort_values(["task", "eval_task"]).reset_index(drop=True)[["acc_tag"]].equals(
        other.sort_values(["task", "eval_task"]).reset_index(drop=True)[["acc_tag"]])


def test_stop_after_task_2_and_resume_gives_uninterrupted_rows(tmp_path):
    cfg = _cfg(approach="lwf-sr", **{"memory.num_exemplars_per_class": 3})
    full, full_heads, _ = _rows(cfg)
    first = []
    for r in run(cfg):
        first += r.task_rows
        if r.task == 2:
            torch.save(r.state, tmp_path / "state.pt")
            break
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    rest, rest_heads, _ = _rows(cfg, state=state)
    resumed = pd.concat([pd.DataFrame(first), rest], ignore_index=True)
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMING), full.drop(columns=TIMING))
    pd.testing.assert_frame_equal(rest_heads, full_heads[full_heads.task > 2].reset_index(drop=True))


def test_resume_refuses_a_state_of_another_config(tmp_path):
    cfg = _cfg(approach="lwf", **{"data.num_tasks": 2, "train.nepochs": 1})
    state = next(iter(run(cfg))).state
    with pytest.raises(ValueError, match="approach"):
        next(iter(run(cfg.replace(approach="lwf-s"), state=state)))


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "cil", "--results-path", str(tmp_path / "res"), *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_runs_and_writes_parquet(tmp_path):
    out = _cli(tmp_path, "--approach", "lwf-s", "--datasets", "digits", "--num-tasks", "2", "--nepochs", "1",
               "--device", "cpu", "--set", "loss.w_bce_kd=0.5")
    assert out.returncode == 0, out.stderr
    assert "TAg Acc" in out.stdout and "TAw Forg" in out.stdout
    df = pd.read_parquet(tmp_path / "res" / "digits_lwf-s" / "results" / "task_results")
    assert len(df) == 3 and (df["loss.w_bce_kd"] == 0.5).all() and (df["loss.w_task"] == 1.0).all()
    assert set(df.sweep) == {"digits_lwf-s"}


@pytest.mark.parametrize("args, fragment", [
    (["--set", "los.lamb=1"], "did you mean 'loss.lamb'"),
    (["--set", "loss.lamb=["], "not valid YAML"),
    (["--seed", "-3"], "run.seed = -3 is not valid"),
    (["--num-tasks", "12"], "data.num_tasks = 12 is not valid"),
    (["--datasets", "folder", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
])
def test_cli_bad_input_clear_error_and_nothing_written(tmp_path, args, fragment):
    out = _cli(tmp_path, "--nepochs", "1", *args)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "res").exists()


def test_cli_results_path_that_is_a_file_fails_before_training(tmp_path):
    blocker = tmp_path / "res"
    blocker.write_text("not a folder")
    out = _cli(tmp_path, "--nepochs", "1", "--num-tasks", "2")
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr
    assert "task 0" not in out.stdout and blocker.read_text() == "not a folder"


def _heads_after_two_tasks(cfg):
    states = [r.state for r in run(cfg)]
    return [s["model"]["heads.0.weight"] for s in states]


@pytest.mark.parametrize("approach, memory, moves", [
    ("lwf", 0, False),        # FACIL: without exemplars old heads stay as they are
    ("lwf", 20, True),        # with exemplars every head is trained
    ("freezing", 0, False),
    ("freezing", 20, True),
    ("finetuning", 0, False),
])
def test_which_heads_train_follows_facil(approach, memory, moves):
    cfg = _cfg(approach=approach, **{"data.num_tasks": 2, "train.nepochs": 1, "memory.num_exemplars": memory})
    after0, after1 = _heads_after_two_tasks(cfg)
    assert (not torch.equal(after0, after1)) == moves


def test_warmup_with_exemplars_runs_on_the_new_task_only():
    cfg = _cfg(approach="lwf", **{"data.num_tasks": 3, "train.nepochs": 1, "train.warmup_nepochs": 1,
                                  "memory.num_exemplars": 20, "memory.selection": "herding"})
    df, _, last = _rows(cfg)
    assert len(df) == 6 and last.metrics["avg_acc_taw"] > 0.5


def test_bf16_autocast_path_of_cuda_runs_on_cpu():
    """The trainer's CUDA path uses bf16 autocast; run the same code under CPU autocast so the loss
    terms, the old model's forward and the accuracy counts are exercised with bf16 logits here too."""
    from cil.loop import Experiment

    cfg = _cfg(approach="lwf-bsr", **{"data.num_tasks": 2, "train.nepochs": 2, "loss.w_bce_pred": 1.0})
    exp = Experiment(cfg)
    exp.trainer.autocast_dtype = torch.bfloat16
    for t in range(2):
        ctx = exp.begin_task(t)
        report = train_task(exp.approach, ctx)
        assert report.best_val_loss == report.best_val_loss  # not NaN
        assert all(r.terms.get("kd_task", 0.0) > 0 for r in report.records) == (t > 0)
    taw, tag = exp.trainer.evaluate(exp.approach, ctx, [exp.scenario.task_split(u, "test") for u in range(2)])
    assert min(taw) > 0.6 and all(0 <= a <= b for a, b in zip(tag, taw, strict=True))
