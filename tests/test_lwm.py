"""LwM: the attention term as published (per-sample maps for the old model's top class, differentiable
in the current model) and FACIL's (a constant), the Grad-CAM layer's validation, the paper's presets."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from cil.approaches.base import train_task
from cil.approaches.lwm import attention_distillation, grad_cam, resolve_layer
from cil.approaches.registry import LOSS_WEIGHT_NAMES, SPECS
from cil.config import ConfigError, ExperimentConfig
from cil.loop import Experiment
from cil.networks import make_backbone

CFG = {"approach": "lwm", "data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet",
       "train.nepochs": 1, "run.device": "cpu"}


def _task1(**over):
    """An LwM experiment after task 0 (one epoch), at the start of task 1: context, a batch."""
    exp = Experiment(ExperimentConfig.from_dict(CFG | over))
    train_task(exp.approach, exp.begin_task(0))
    ctx = exp.begin_task(1)
    exp.approach.before_task(ctx)
    x, y = ctx.task_data("train")
    return exp.approach, ctx, exp.trainer.inputs(x[:32]), y[:32]


def _perturb(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def published():
    return _task1()


@pytest.fixture(scope="module")
def facil():
    return _task1(**{"lwm.facil_attention": True})


def test_identical_models_have_the_same_maps(published):
    approach, ctx, x, y = published
    ctx.model.train()
    loss = approach.loss(ctx, approach.forward(ctx, x, y, "train"))
    assert float(loss.terms["attention"].detach()) == pytest.approx(0.0, abs=1e-5)


def test_attention_term_has_a_gradient_in_the_model_unless_facil(published, facil):
    for (approach, ctx, x, y), trains in ((published, True), (facil, False)):
        ctx = dataclasses.replace(ctx, model=copy.deepcopy(ctx.model))
        _perturb(ctx.model)
        ctx.model.train()
        term = approach.loss(ctx, approach.forward(ctx, x, y, "train")).terms["attention"]
        assert float(term.detach()) > (0.01 if trains else 0.0)  # FACIL's maps are unnormalised, tiny
        assert term.requires_grad == trains
        if trains:
            grads = torch.autograd.grad(term, list(ctx.model.backbone.parameters()), allow_unused=True)
            assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_each_sample_has_its_own_map_unless_facil(published, facil):
    for (approach, ctx, x, y), own in ((published, True), (facil, False)):
        whole = approach.forward(ctx, x, y, "val").extras["attention"]
        half = approach.forward(ctx, x[:8], y[:8], "val").extras["attention"]
        for a, b in zip(whole, half, strict=True):
            assert torch.allclose(a[:8], b, atol=1e-6) == own


def test_validation_loss_runs_in_inference_mode(published):
    approach, ctx, x, y = published
    with torch.inference_mode():
        step = approach.forward(ctx, x, y, "val")
        value = approach.validation_loss(ctx, step)
    assert "attention" in step.extras and torch.isfinite(value)


def test_attention_distillation_normalises_maps():
    maps = torch.rand(4, 3, 3)
    assert float(attention_distillation(maps, 5 * maps)) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_distillation(maps, 5 * maps, normalize=False)) > 0
    # Grad-CAM: channels weighted by their mean gradient, then ReLU
    act = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # [1, 2, 1, 2]
    grad = torch.tensor([[[[1.0, 1.0]], [[-1.0, 0.0]]]])  # channel means 1, -0.5
    assert grad_cam(act, grad).tolist() == [[[0.0, 0.0]]]  # relu([1 - 1.5, -2 - 0.5])
    assert grad_cam(act, -grad).tolist() == [[[0.5, 2.5]]]


def test_gradcam_layer_must_name_a_spatial_layer():
    convnet, _ = make_backbone("convnet", 1, 8)
    resnet, _ = make_backbone("resnet32", 1, 8)
    x = torch.zeros(2, 1, 8, 8)
    assert resolve_layer(resnet, "layer3", x) == "layer3"
    assert resolve_layer(convnet, "layer3", x) == "bns.1"  # FACIL's default: the last spatial layer
    assert resolve_layer(convnet, "convs.0", x) == "convs.0"
    for bad in ("layer9", "fc", "bn_fc"):
        with pytest.raises(ConfigError, match=rf"{bad}.*valid: convs\.0, bns\.0, convs\.1, bns\.1"):
            resolve_layer(convnet, bad, x)


def test_paper_presets_are_lwf_s_loss_weights():
    for suffix in ("", "-s", "-sr", "-br", "-br2", "-bsr"):
        lwm, lwf = SPECS["lwm" + suffix].loss, SPECS["lwf" + suffix].loss
        assert {k: lwm[k] for k in LOSS_WEIGHT_NAMES} == {k: lwf[k] for k in LOSS_WEIGHT_NAMES}
        assert lwm["T"] == 2.0 and "lamb" not in lwm and SPECS["lwm" + suffix].section == "lwm"
    with pytest.raises(ConfigError, match="lwm.beta"):
        ExperimentConfig.from_dict(CFG | {"loss.lamb": 2.0})


@pytest.mark.parametrize("facil", [False, True])
def test_fix_bn_holds_for_lwm_unless_facils_train_mode_undoes_it(facil):
    """train.fix_bn freezes BatchNorm's statistics after task 0; FACIL's LwM calls model.train() after
    each Grad-CAM pass, so there they train again (lwm.facil_fix_bn)."""
    exp = Experiment(ExperimentConfig.from_dict(CFG | {"train.fix_bn": True, "lwm.facil_fix_bn": facil}))
    train_task(exp.approach, exp.begin_task(0))
    before = exp.model.backbone.bns[0].running_mean.clone()
    train_task(exp.approach, exp.begin_task(1))
    assert torch.equal(exp.model.backbone.bns[0].running_mean, before) != facil
