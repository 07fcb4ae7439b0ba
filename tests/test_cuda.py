"""The CUDA path on a real GPU (``pytest -m cuda``; skipped without CUDA): the trainer and the loop,
deterministic mode's promises (same seed, same numbers; resume equals an uninterrupted run), every
approach under torch's deterministic algorithms, LwM's double backward, bf16 autocast's fp32 parts, and
the per-process memory fraction a fractional Ray trial runs under. benchmarks/gpu_check.py runs these.

No Ray, no Optuna: a GPU machine may offer only a stock PyTorch image's packages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_gpu_path import first_step_under_autocast

from cil.approaches.registry import SPECS
from cil.config import ExperimentConfig
from cil.device import PrecisionError
from cil.loop import Experiment, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

FAST = {"data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet", "train.nepochs": 2,
        "train.batch_size": 32, "run.device": "cuda:0"}


def _cfg(**extra) -> ExperimentConfig:
    return ExperimentConfig.from_dict(FAST | {k.replace("__", "."): v for k, v in extra.items()})


def _numbers(results) -> list:
    return [([(row["acc_taw"], row["acc_tag"]) for row in r.task_rows],
             [(e["train_loss"], e["val_loss"]) for e in r.epoch_rows]) for r in results]


def test_the_loop_trains_on_cuda_and_its_rows_say_so() -> None:
    results = list(run(_cfg()))
    row = results[-1].task_rows[0]
    assert row["device_kind"] == "cuda" and row["device_name"] == torch.cuda.get_device_name(0)
    assert row["cuda_version"] == torch.version.cuda and row["deterministic_in_effect"] is True
    assert row["tf32_in_effect"] is False and row["device_capability"]
    assert results[-1].acc_taw[-1, 0] > 0.3  # it learned something on the GPU


def test_same_seed_same_numbers_in_deterministic_mode() -> None:
    assert _numbers(run(_cfg(approach="lwf"))) == _numbers(run(_cfg(approach="lwf")))


def test_resume_equals_an_uninterrupted_run_in_deterministic_mode() -> None:
    cfg = _cfg(approach="lucir", memory__num_exemplars_per_class=5)
    whole = list(run(cfg))
    first = next(run(cfg))
    state = first.state
    resumed = [first, *run(cfg, state)]
    assert _numbers(resumed) == _numbers(whole)


@pytest.mark.parametrize("approach", list(SPECS))
def test_every_approach_runs_under_deterministic_algorithms(approach) -> None:
    """torch.use_deterministic_algorithms(True) raises on CUDA for an op without a deterministic kernel."""
    memory = {"memory__num_exemplars_per_class": 5} if SPECS[approach].needs_exemplars else {}
    results = list(run(_cfg(approach=approach, data__num_tasks=2, train__nepochs=1, **memory)))
    assert len(results) == 2


def test_lwm_double_backward_is_reproducible_on_cuda() -> None:
    cfg = _cfg(approach="lwm", data__num_tasks=2)
    a, b = list(run(cfg)), list(run(cfg))
    assert "term.attention" in a[-1].epoch_rows[0] and _numbers(a) == _numbers(b)


def test_bf16_autocast_keeps_heads_losses_grad_cam_and_scores_in_fp32() -> None:
    if not torch.cuda.is_bf16_supported():
        with pytest.raises(PrecisionError, match="train.amp: true needs bf16"):
            Experiment(_cfg(train__amp=True))
        return
    exp = Experiment(_cfg(approach="lwm", train__amp=True, train__nepochs=1))
    assert exp.trainer.autocast_dtype == torch.bfloat16 and exp.provenance["amp_in_effect"]
    ctx, step = first_step_under_autocast(exp, 32)
    assert all(z.dtype == torch.float32 for z in [*step.logits, *step.old_logits, *step.extras["attention"]])
    loss = exp.approach.loss(ctx, step)
    assert all(v.dtype == torch.float32 for v in [loss.total, *loss.terms.values()])
    list(run(_cfg(approach="icarl", train__amp=True, memory__num_exemplars_per_class=5)))  # NME under autocast


def test_a_trial_over_its_memory_fraction_fails_with_the_allocators_figures(tmp_path) -> None:
    """As a fractional Ray trial: the cap set, then a batch too large for it (its own process: the
    fraction is process-wide)."""
    code = textwrap.dedent("""
        import torch
        from cil.config import ExperimentConfig
        from cil.device import CudaOutOfMemoryError
        from cil.loop import run
        torch.cuda.set_per_process_memory_fraction(0.002, 0)
        cfg = ExperimentConfig.from_dict({"data.dataset": "digits", "data.num_tasks": 2, "model.network":
                                          "resnet32", "data.image_size": 64, "train.batch_size": 1500,
                                          "train.nepochs": 1, "run.device": "cuda:0"})
        try:
            next(run(cfg))
        except CudaOutOfMemoryError as err:
            print("OOM:", err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                         cwd=ROOT)
    assert "OOM: CUDA out of memory" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "peak allocated" in out.stdout
    if hasattr(torch.cuda, "get_per_process_memory_fraction"):  # newer torch reads the cap back
        assert "per-process memory fraction 0.002" in out.stdout
    assert "resources.gpu" in out.stdout and "train.batch_size" in out.stdout
