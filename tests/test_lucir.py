"""LUCIR on the approach interface: its structure, its loss terms against hand computations, the
paper's variants, resume bit for bit, its config section and CLI flags."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cil import ExperimentConfig, losses, run
from cil.approaches.base import train_task
from cil.config import ConfigError
from cil.loop import Experiment
from cil.networks import CosineLinear

FAST = {"data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet", "train.nepochs": 2,
        "train.lr_patience": 1, "run.device": "cpu", "memory.num_exemplars": 30, "approach": "lucir"}
TIMING = ["train_seconds"]


def _cfg(**over):
    return ExperimentConfig.from_dict(FAST | over)


def _rows(cfg, state=None):
    rows, last = [], None
    for r in run(cfg, state=state):
        rows += r.task_rows
        last = r
    return pd.DataFrame(rows), last


def test_resume_after_task_1_gives_the_uninterrupted_numbers(tmp_path):
    cfg = _cfg(**{"memory.selection": "herding", "train.warmup_nepochs": 1})
    rows, full_last = [], None
    for r in run(cfg):  # uninterrupted, keeping the state it yields after task 1
        rows += r.task_rows
        full_last = r
        if r.task == 1:
            torch.save(r.state, tmp_path / "state.pt")
            first = list(rows)
    full = pd.DataFrame(rows)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    rest, last = _rows(cfg, state=state)
    assert (last.acc_taw == full_last.acc_taw).all() and (last.acc_tag == full_last.acc_tag).all()
    resumed = pd.concat([pd.DataFrame(first), rest], ignore_index=True)
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMING), full.drop(columns=TIMING))
    assert (full["lucir.lamb_mr"] == 1.0).all() and full["loss.lamb"].isna().all()


def _trained(cfg, tasks):
    """An experiment after ``tasks`` tasks, and the context of the next one (its head added)."""
    exp = Experiment(cfg)
    for t in range(tasks):
        train_task(exp.approach, exp.begin_task(t))
    return exp, exp.begin_task(tasks)


def test_structure_cosine_heads_one_sigma_no_last_relu_old_heads_frozen():
    exp, ctx = _trained(_cfg(), 1)
    heads = exp.model.heads
    assert all(isinstance(h, CosineLinear) for h in heads)
    assert heads[0].sigma is heads[1].sigma
    assert exp.model.backbone.last_relu is False
    exp.approach.before_task(ctx)
    trained = {id(p) for p in exp.approach.train_parameters(ctx) if p.requires_grad}
    assert id(heads[0].weight) not in trained and id(heads[1].weight) in trained and id(heads[1].sigma) in trained
    x, y = ctx.task_data("train")
    step = exp.approach.forward(ctx, exp.trainer.inputs(x[:8]), y[:8], "train")
    assert (step.features < 0).any()  # no ReLU after the last layer
    scaled = torch.cat(step.logits, 1)
    cos = torch.cat(step.extras["cosines"], 1)
    torch.testing.assert_close(scaled, heads[0].sigma * cos)
    assert cos.abs().max() <= 1 + 1e-6


def test_less_forget_off_trains_old_heads_and_uses_the_cosine_mse():
    exp, ctx = _trained(_cfg(**{"lucir.less_forget": False}), 1)
    exp.approach.before_task(ctx)
    params = {id(p) for p in exp.approach.train_parameters(ctx) if p.requires_grad}
    assert id(exp.model.heads[0].weight) in params
    x, y = exp.approach.training_set(ctx)
    step = exp.approach.forward(ctx, exp.trainer.inputs(x[:32]), y[:32], "train")
    loss = exp.approach.loss(ctx, step)
    assert "cosine_mse" in loss.terms and "less_forget" not in loss.terms


def _step_and_loss(cfg):
    exp, ctx = _trained(cfg, 1)
    exp.approach.before_task(ctx)
    x, y = exp.approach.training_set(ctx)  # new task + exemplars of the old classes
    pick = torch.cat([torch.arange(16), torch.arange(len(y) - 16, len(y))])
    exp.model.train()
    step = exp.approach.forward(ctx, exp.trainer.inputs(x[pick]), y[pick], "train")
    return exp, ctx, step, exp.approach.loss(ctx, step)


def test_lucir_loss_matches_its_formula():
    exp, ctx, step, loss = _step_and_loss(_cfg())
    n_old, n_new = ctx.num_old_classes, ctx.num_new_classes
    lamb_t = 5.0 * math.sqrt(n_old / n_new)
    ce = F.cross_entropy(torch.cat(step.logits, 1), step.y)
    lf = (1 - F.cosine_similarity(step.features, step.old_features)).mean()
    # margin ranking by hand: old-class samples only, top-2 new-class cosines, margin 0.5
    cos = torch.cat(step.extras["cosines"], 1)
    pairs = []
    for i in range(len(step.y)):
        if step.y[i] < n_old:
            for hard in cos[i, n_old:].topk(2).values:
                pairs.append(torch.relu(0.5 - cos[i, step.y[i]] + hard))
    assert pairs, "the batch should hold exemplars of old classes"
    mr = torch.stack(pairs).mean()
    assert set(loss.terms) == {"ce_pred", "less_forget", "margin_ranking"}
    torch.testing.assert_close(loss.terms["margin_ranking"], mr)
    torch.testing.assert_close(loss.total, ce + lamb_t * lf + 1.0 * mr)
    assert exp.approach.lamb_t(ctx) == pytest.approx(lamb_t)


def test_margin_ranking_is_zero_without_old_class_samples():
    cos = torch.rand(4, 6) * 2 - 1
    assert losses.margin_ranking(cos, torch.tensor([3, 4, 5, 3]), 3, 2, 0.5).item() == 0.0


def test_the_papers_variants_add_their_terms_over_the_old_heads():
    _, ctx, step, loss = _step_and_loss(_cfg(approach="lucir-bsr", **{"lucir.adapt_lamb": False}))
    t = ctx.t
    kd_task = sum(losses.kd(a, b, 1.0) for a, b in zip(step.logits[:t], step.old_logits[:t], strict=True))
    torch.testing.assert_close(loss.terms["kd_task"], kd_task)
    torch.testing.assert_close(loss.terms["bce_kd"], losses.bce_kd(step.logits[:t], step.old_logits[:t]))
    expected = (loss.terms["ce_pred"] + 5.0 * (loss.terms["less_forget"] + 0.1 * kd_task + 1.0 * loss.terms["bce_kd"])
                + loss.terms["margin_ranking"])
    torch.testing.assert_close(loss.total, expected)
    _, _, step, loss = _step_and_loss(_cfg(approach="lucir-br2"))
    scores = torch.cat(step.logits, 1)
    one_hot = F.one_hot(step.y, scores.shape[1]).float()
    torch.testing.assert_close(loss.terms["bce_pred"], F.binary_cross_entropy_with_logits(scores, one_hot))


def test_lucir_warns_without_exemplars_and_checks_K():
    with pytest.warns(UserWarning, match="exemplars"):
        Experiment(_cfg(**{"memory.num_exemplars": 0, "data.num_tasks": 2}))
    cfg = _cfg(**{"data.num_tasks": 5, "lucir.K": 3})  # 2 classes per task
    exp = Experiment(cfg)
    train_task(exp.approach, exp.begin_task(0))
    with pytest.raises(ConfigError, match="lucir.K = 3"):
        train_task(exp.approach, exp.begin_task(1))


@pytest.mark.parametrize("values, fragment", [
    ({"approach": "lwf", "lucir.K": 3}, "lucir.K is set but approach is 'lwf'"),
    ({"lucir.lamb_rm": 1}, "did you mean 'lucir.lamb_mr'"),
    ({"loss.lamb": 2}, r"does not use it \(use lucir.lamb\)"),
    ({"lucir.dist": -1}, "lucir.dist = -1.0 is not valid"),
])
def test_config_section_errors(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ExperimentConfig.from_dict(FAST | values)


def test_cli_lucir_flags_and_set_reach_the_parquet_rows(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cil", "--approach", "lucir-sr", "--datasets", "digits",
                          "--num-tasks", "2", "--nepochs", "1", "--device", "cpu", "--num-exemplars", "20",
                          "--lamb", "3", "--K", "1", "--remove-adapt-lamda", "--set", "lucir.lamb_mr=0.5",
                          "--results-path", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    df = pd.read_parquet(tmp_path / "digits_lucir-sr" / "results" / "task_results")
    assert len(df) == 3
    assert (df["lucir.lamb_mr"] == 0.5).all() and (df["lucir.lamb"] == 3.0).all() and (df["lucir.K"] == 1).all()
    assert (~df["lucir.adapt_lamb"]).all() and (df["loss.w_task"] == 0.1).all() and (df["loss.T"] == 1.0).all()


@pytest.mark.parametrize("argv, expected", [
    (["--approach", "lucir", "--lamb", "3", "--remove-less-forget"], {"lucir.lamb": 3.0, "lucir.less_forget": False}),
    (["--approach", "lwf", "--lamb", "3", "--T", "4"], {"loss.lamb": 3.0, "loss.T": 4.0, "lucir.lamb": None}),
    (["--approach", "lwf", "--lamb-mr", "2"], "--lamb-mr is not used by approach 'lwf'"),
])
def test_facil_flags_map_to_the_approachs_keys(argv, expected):
    from cil.cli import build_parser, config_from_args

    args = build_parser().parse_args(argv)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            config_from_args(args)
        return
    flat = config_from_args(args).to_flat()
    assert {k: flat[k] for k in expected} == expected


def test_paper_lucir_sweep_preset_lists_its_trials():
    import os

    from tune.spec import load_spec

    spec = load_spec(os.path.join(os.path.dirname(os.path.dirname(__file__)), "tune", "presets",
                                  "cifar100_lucir_paper.yaml"))
    assert spec.num_trials == 54
    assert spec.base["memory.num_exemplars_per_class"] == 20 and spec.base["memory.selection"] == "herding"
    assert spec.grid["loss.w_task"] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("network, negative", [("resnet18", False), ("resnet32", True), ("convnet", False)])
def test_facil_relu_removes_the_relu_facil_removes(network, negative):
    """lucir.facil_relu: FACIL's swap of layer3[-1] (the last block of ResNet-32, an inner one of
    ResNet-18, whose features stay non-negative); nothing on the ConvNet."""
    from cil.approaches.lucir import LUCIR
    from cil.networks import IncrementalNet, make_backbone

    backbone, dim = make_backbone(network, 1, 16)
    model = IncrementalNet(backbone, dim)
    LUCIR(_cfg(**{"lucir.facil_relu": True, "model.network": network})).prepare_model(model)
    model.eval()
    features = model.features(torch.randn(4, 1, 16, 16))
    assert bool((features < 0).any()) is negative
    if network == "resnet18":
        assert backbone.last_relu and not backbone.layer3_relu
