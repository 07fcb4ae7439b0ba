"""The GPU path's rules the CPU can show (docs/gpu.md): the device check's message, reproducible
numerics switches, fp32 heads/losses/Grad-CAM/scores under autocast, provenance and the fingerprint's
device kind, CUDA out of memory as a permanent error, deterministic replacements with the CPU's numbers,
and speed levers that leave the numbers unchanged. The Ray side is in test_gpu_path_ray.py."""

from __future__ import annotations

import os

import pytest
import torch

import cil.device
from cil.approaches.base import Step, TaskContext, train_task
from cil.approaches.il2m import class_sums
from cil.approaches.lwm import top_class_columns
from cil.config import ConfigError, ExperimentConfig
from cil.device import CUBLAS_WORKSPACE, CudaOutOfMemoryError, CudaUnusableError
from cil.loop import Experiment, run
from cil.results_schema import PROVENANCE_COLUMNS
from tune.trainable import visible_index

FAST = {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 2,
        "train.batch_size": 32}


# ---- the device check ----------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is usable here")
def test_an_unusable_gpu_names_torchs_cuda_the_driver_and_the_fix(tmp_path, monkeypatch) -> None:
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n")
    monkeypatch.setattr(cil.device, "DRIVER_FILE", str(driver))
    with pytest.raises(CudaUnusableError) as err:
        cil.device.cuda_device(0, "Ray gave this trial GPU 0")
    text = str(err.value)
    assert text.startswith("Ray gave this trial GPU 0, but CUDA is not usable")
    assert f"torch {torch.__version__}" in text and "the NVIDIA driver is 535.104.05" in text
    if torch.version.cuda:
        need = cil.device.MIN_DRIVER[torch.version.cuda.split(".")[0]]
        assert f"CUDA {torch.version.cuda} needs driver >= {need}" in text
    assert "resources.gpu: 0" in text
    monkeypatch.setattr(cil.device, "DRIVER_FILE", str(tmp_path / "absent"))
    monkeypatch.setattr(cil.device.shutil, "which", lambda _name: None)
    with pytest.raises(CudaUnusableError, match="no NVIDIA driver found"):
        cil.device.cuda_device(0, "Ray gave this trial GPU 0")


def test_rays_gpu_id_becomes_its_index_among_the_visible_devices() -> None:
    assert visible_index(3, "3") == 0 and visible_index(5, "2,5") == 1
    assert visible_index(1, None) == 1 and visible_index("2", "") == 2


def test_python_m_cil_prints_its_device_and_sets_the_cublas_workspace(tmp_path, monkeypatch, capsys) -> None:
    from cil.cli import main

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert main(["--datasets", "digits", "--num-tasks", "2", "--nepochs", "1", "--network", "convnet",
                 "--results-path", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    assert " on cpu" in capsys.readouterr().out
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE


# ---- numerics switches ---------------------------------------------------------------------------

def test_the_config_sets_cudnn_deterministic_algorithms_and_tf32_explicitly() -> None:
    Experiment(ExperimentConfig.from_dict(FAST | {"run.device": "cpu"}))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    Experiment(ExperimentConfig.from_dict(FAST | {"run.device": "cpu", "run.deterministic": False,
                                                  "train.cudnn_benchmark": True, "train.tf32": True}))
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    Experiment(ExperimentConfig.from_dict(FAST | {"run.device": "cpu"}))  # back to the defaults


def test_cudnn_benchmark_needs_determinism_off() -> None:
    with pytest.raises(ConfigError, match="train.cudnn_benchmark = true is not valid with run.deterministic"):
        ExperimentConfig.from_dict({"train.cudnn_benchmark": True})
    with pytest.raises(ConfigError, match="train.sgd_impl = 'fast' is not valid"):
        ExperimentConfig.from_dict({"train.sgd_impl": "fast"})


# ---- fp32 where bf16 would change results ----------------------------------------------------------

def first_step_under_autocast(exp: Experiment, batch: int) -> tuple[TaskContext, Step]:
    """Task 0 trained, then task 1's first ``batch`` training samples through the approach's forward under
    the trainer's bf16 autocast (tests/test_cuda.py runs it on CUDA with train.amp)."""
    train_task(exp.approach, exp.begin_task(0))
    exp.trainer.autocast_dtype = torch.bfloat16
    ctx = exp.begin_task(1)
    exp.approach.before_task(ctx)
    x, y = ctx.task_data("train")
    xb = exp.trainer.inputs(x[:batch], ctx.generator)
    with exp.trainer.autocast():
        step = exp.approach.forward(ctx, xb, y[:batch], "train")
        assert ctx.model.backbone(xb).dtype == torch.bfloat16  # the autocast is real
    return ctx, step


@pytest.mark.parametrize("approach, extra", [
    ("lwf", {}), ("lucir", {"memory.num_exemplars_per_class": 2}), ("icarl", {"memory.num_exemplars_per_class": 2}),
    ("lwm", {}), ("il2m", {"memory.num_exemplars_per_class": 2}),
])
def test_heads_losses_grad_cam_and_scores_are_fp32_under_autocast(approach, extra) -> None:
    """The trainer's autocast (bf16 on the CPU here, as on CUDA with train.amp) covers the backbone only."""
    exp = Experiment(ExperimentConfig.from_dict(FAST | extra | {"approach": approach, "train.nepochs": 1,
                                                               "run.device": "cpu"}))
    ctx, step = first_step_under_autocast(exp, 16)
    assert all(z.dtype == torch.float32 for z in step.logits) and step.features.dtype == torch.float32
    assert all(z.dtype == torch.float32 for z in step.old_logits or [])
    for z in step.extras.get("attention", ()):  # LwM's Grad-CAM maps
        assert z.dtype == torch.float32
    loss = exp.approach.loss(ctx, step)
    assert loss.total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in loss.terms.values())
    exp.approach.after_fit(ctx)
    exp.approach.update_memory(ctx)
    exp.approach.after_memory_update(ctx)
    x, y = ctx.task_data("train")
    with torch.inference_mode():
        with exp.trainer.autocast():
            step = exp.approach.forward(ctx, exp.trainer.inputs(x[:16]), y[:16], "test")
        scores = exp.approach.eval_scores(ctx, step)
    for s in (scores.values() if isinstance(scores, dict) else [scores]):
        for part in (s if isinstance(s, tuple) else (s,)):
            assert all(v.dtype == torch.float32 for v in part)


# ---- provenance and the fingerprint ------------------------------------------------------------

def test_every_row_says_what_ran() -> None:
    first = next(run(ExperimentConfig.from_dict(FAST | {"train.nepochs": 1, "run.device": "cpu"})))
    row = first.task_rows[0]
    assert [c for c in PROVENANCE_COLUMNS if c not in row] == []
    assert row["device_kind"] == "cpu" and row["torch_version"] == torch.__version__
    assert row["deterministic_in_effect"] is True and row["tf32_in_effect"] is False
    assert row["amp_in_effect"] is False and row["cuda_version"] == "" and row["device_capability"] == ""


def test_the_device_kind_is_part_of_the_fingerprint_not_its_index() -> None:
    def fp(device: str) -> str:
        return ExperimentConfig.from_dict({"run.device": device}).fingerprint()

    assert fp("cuda") == fp("cuda:0") == fp("cuda:1") != fp("cpu")
    assert fp("mps") != fp("cpu")
    if not torch.cuda.is_available():
        assert fp("auto") == fp("cpu")


# ---- CUDA out of memory ---------------------------------------------------------------------------

def test_out_of_memory_during_training_is_a_permanent_error_with_the_fix(monkeypatch) -> None:
    import cil.training

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                     "of 14.56 GiB of which 1.10 GiB is free.")

    monkeypatch.setattr(cil.training.Trainer, "run_epoch", out_of_memory)
    with pytest.raises(CudaOutOfMemoryError) as err:
        next(run(ExperimentConfig.from_dict(FAST | {"run.device": "cpu"})))
    text = str(err.value)
    assert text.startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "resources.gpu" in text and "train.batch_size" in text
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)


# ---- deterministic replacements: the CPU's numbers ---------------------------------------------------

def test_il2m_class_sums_equal_index_add() -> None:
    g = torch.Generator().manual_seed(0)
    scores = (torch.randn(3000, generator=g) * 5).float().double()  # fp32 scores, summed in float64
    labels = torch.randint(0, 30, (3000,), generator=g)
    expected = torch.zeros(30, dtype=torch.float64)
    for start in range(0, 3000, 64):  # the per-batch index_add_ it replaces
        expected.index_add_(0, labels[start:start + 64], scores[start:start + 64])
    assert torch.equal(class_sums(scores, labels, 30), expected)


@pytest.mark.parametrize("n", [64, 50, 37])
def test_lwm_top_class_columns_equal_indexing_forward_and_backward(n) -> None:
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, 20, generator=g) * 4
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    top = base.argmax(dim=1)
    indexed, picked = a[:, top], top_class_columns(b, top)
    assert torch.equal(indexed, picked)
    indexed.mean().backward()
    picked.mean().backward()
    assert torch.equal(a.grad, b.grad)


# ---- speed levers leave the numbers unchanged -------------------------------------------------------

def _numbers(extra: dict) -> list:
    out = []
    for r in run(ExperimentConfig.from_dict(FAST | {"run.device": "cpu"} | extra)):
        out.append(([(row["acc_taw"], row["acc_tag"], row["forg_tag"]) for row in r.task_rows],
                    [(e["train_loss"], e["val_loss"], e["val_acc_taw"]) for e in r.epoch_rows]))
    return out


@pytest.mark.parametrize("lever", [{"train.sgd_impl": "for-loop"}, {"train.sgd_impl": "foreach"},
                                   {"train.sgd_impl": "fused"}, {"train.eval_batch_size": 7}])
def test_speed_levers_give_the_same_rows(lever) -> None:
    assert _numbers(lever) == _numbers({})


@pytest.mark.slow
def test_compile_gives_the_same_accuracies_and_losses_to_rounding() -> None:
    """torch.compile fuses fp32 ops (other rounding), so losses agree to a relative 1e-3 after two epochs
    (the drift of any rounding change through SGD), accuracies exactly on this run."""
    eager, compiled = _numbers({}), _numbers({"train.compile": True})
    for (rows_e, epochs_e), (rows_c, epochs_c) in zip(eager, compiled, strict=True):
        assert rows_e == rows_c
        for e, c in zip(epochs_e, epochs_c, strict=True):
            assert c == pytest.approx(e, rel=1e-3)


def test_analysis_reads_rows_with_and_without_the_provenance_columns(tmp_path) -> None:
    """Results written before the provenance columns existed load beside new ones (missing: null)."""
    from analysis.load import load
    from cil.results import write_task

    first = next(run(ExperimentConfig.from_dict(FAST | {"data.num_tasks": 2, "train.nepochs": 1,
                                                        "run.device": "cpu"})))
    for trial, strip in (("new", ()), ("old", PROVENANCE_COLUMNS)):
        tag = {"sweep": "s", "trial_id": trial}
        rows = [tag | {k: v for k, v in r.items() if k not in strip} for r in first.task_rows]
        write_task(rows, [tag | r for r in first.head_rows], str(tmp_path), trial, 0)
    df = load(str(tmp_path))
    assert sorted(df["trial_id"].unique()) == ["new", "old"]
    assert (df.loc[df["trial_id"] == "new", "device_kind"] == "cpu").all()
    assert df.loc[df["trial_id"] == "old", "device_kind"].isna().all()
