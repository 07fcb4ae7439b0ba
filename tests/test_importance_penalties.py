"""EWC, MAS, Path Integral, RWalk: the penalty, each importance against a hand computation on a tiny
model, the path integral's accumulation, and resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cil.approaches import make_approach
from cil.approaches.base import TaskContext
from cil.approaches.importance import (
    backbone_parameters,
    fisher_objective,
    gradient_importance,
    mix,
    old_share,
    output_norm,
)
from cil.config import ConfigError, ExperimentConfig
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet
from cil.run import run

FAST = {"data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet", "train.nepochs": 1,
        "train.batch_size": 128, "run.device": "cpu"}


def tiny_net(seed: int = 0) -> IncrementalNet:
    """Backbone: one linear layer 4 -> 3 (no BatchNorm: per-sample gradients are well defined); two heads
    of 2 classes."""
    torch.manual_seed(seed)
    net = IncrementalNet(nn.Linear(4, 3), 3)
    net.add_head(2)
    net.add_head(2)
    return net


def tiny_ctx(approach: str, net: IncrementalNet, t: int = 1, **over) -> TaskContext:
    cfg = ExperimentConfig.from_dict({"approach": approach, "run.device": "cpu", **over})
    return TaskContext(t=t, cfg=cfg, model=net, old_model=None, memory=ExemplarMemory(0, 0, "random"),
                       scenario=None, device=torch.device("cpu"), generator=torch.Generator(), trainer=None)


def batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


def as_np(t):
    return t.detach().double().numpy()


# ---- the penalty ---------------------------------------------------------------------------------------

def test_ewc_penalty_is_zero_at_the_old_parameters_and_grows_with_fisher_weighted_distance():
    net = tiny_net()
    ctx = tiny_ctx("ewc", net, **{"ewc.lamb": 3.0})
    ewc = make_approach(ctx.cfg)
    ewc.before_task(ctx)  # anchor = the parameters now, zero Fisher
    fisher = {"weight": torch.rand(3, 4) + 0.1, "bias": torch.zeros(3)}
    ewc.store["fisher"] = fisher
    ewc.before_task(ctx)
    x, y = batch()
    y = 2 + y % 2  # task 1's classes
    at_anchor = ewc.loss(ctx, ewc.forward(ctx, x, y, "train"))
    assert at_anchor.terms["penalty"].item() == 0.0
    assert at_anchor.total.item() == at_anchor.terms["ce_pred"].item()

    direction = torch.randn(3, 4)
    anchor = net.backbone.weight.detach().clone()
    penalties = []
    for scale in (0.5, 1.0, 2.0):
        with torch.no_grad():
            net.backbone.weight.copy_(anchor + scale * direction)
            net.backbone.bias.add_(1.0)  # zero Fisher: moving the bias costs nothing
        loss = ewc.loss(ctx, ewc.forward(ctx, x, y, "train"))
        hand = 3.0 * (as_np(fisher["weight"]) * (scale * as_np(direction)) ** 2).sum() / 2
        assert loss.total.item() - loss.terms["ce_pred"].item() == pytest.approx(hand, rel=1e-5)
        penalties.append(loss.terms["penalty"].item())
    assert penalties[0] < penalties[1] < penalties[2]
    assert penalties[2] == pytest.approx(4 * penalties[1], rel=1e-5)   # quadratic in the distance
    # the penalty's gradient pulls each weight back in proportion to its Fisher value
    grad = torch.autograd.grad(ewc.penalised(ctx, ewc.forward(ctx, x, y, "train")).terms["penalty"],
                               net.backbone.weight)[0]
    np.testing.assert_allclose(as_np(grad), as_np(fisher["weight"] * 2.0 * direction), rtol=1e-5)


def test_no_penalty_on_the_first_task():
    net = tiny_net()
    ctx = tiny_ctx("ewc", net, t=0)
    ewc = make_approach(ctx.cfg)
    ewc.before_task(ctx)
    x, y = batch()
    assert set(ewc.loss(ctx, ewc.forward(ctx, x, y % 2, "train")).terms) == {"ce_pred"}


# ---- importances against hand computations ---------------------------------------------------------------

def _per_sample_backbone_grads(net, x, dscores):
    """d(objective)/d(backbone weight) for a linear backbone and linear heads, per sample, given the
    objective's derivative w.r.t. the concatenated scores (n x classes)."""
    w2 = np.concatenate([as_np(h.weight) for h in net.heads])              # classes x 3
    dfeat = dscores @ w2                                                    # n x 3
    return np.einsum("nf,ni->nfi", dfeat, as_np(x)), dfeat                  # weight: n x 3 x 4, bias: n x 3


def _scores(net, x):
    return np.concatenate([as_np(h(net.backbone(x))) for h in net.heads], axis=1)


def test_fisher_is_facils_batch_estimate_of_squared_cross_entropy_gradients():
    net = tiny_net()
    params = backbone_parameters(net)
    x, y = batch(6)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    fisher = gradient_importance(net, params, batches, fisher_objective("true"), lambda g: g.pow(2))
    hand_w, hand_b = np.zeros((3, 4)), np.zeros(3)
    for xb, yb in batches:
        s = _scores(net, xb)
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - np.eye(4)[yb.numpy()]) / len(yb)                          # d mean CE / d scores
        gw, gb = _per_sample_backbone_grads(net, xb, d)
        hand_w += gw.sum(0) ** 2 * len(yb)
        hand_b += gb.sum(0) ** 2 * len(yb)
    np.testing.assert_allclose(as_np(fisher["weight"]), hand_w / 6, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(as_np(fisher["bias"]), hand_b / 6, rtol=1e-4, atol=1e-9)
    # max_pred: the same with the model's own top class as the label
    top = torch.from_numpy(_scores(net, x).argmax(1))
    by_pred = gradient_importance(net, params, batches, fisher_objective("max_pred"), lambda g: g.pow(2))
    as_labels = gradient_importance(net, params, [(x[:4], top[:4]), (x[4:], top[4:])], fisher_objective("true"),
                                    lambda g: g.pow(2))
    torch.testing.assert_close(by_pred, as_labels)


def test_multinomial_fisher_draws_one_label_per_sample_from_the_generator():
    net = tiny_net()
    x, y = batch(8)

    def fisher(seed):
        return gradient_importance(net, backbone_parameters(net), [(x, y)],
                                   fisher_objective("multinomial", torch.Generator().manual_seed(seed)),
                                   lambda g: g.pow(2))
    torch.testing.assert_close(fisher(3), fisher(3))
    assert not torch.equal(fisher(3)["weight"], fisher(4)["weight"])


def test_mas_importance_is_the_mean_absolute_gradient_of_the_output_l2_norm():
    net = tiny_net()
    x, y = batch(5)
    one_by_one = [(x[i:i + 1], y[i:i + 1]) for i in range(5)]
    omega = gradient_importance(net, backbone_parameters(net), one_by_one, output_norm, lambda g: g.abs())
    s = _scores(net, x)
    gw, gb = _per_sample_backbone_grads(net, x, s / np.linalg.norm(s, axis=1, keepdims=True))
    np.testing.assert_allclose(as_np(omega["weight"]), np.abs(gw).mean(0), rtol=1e-4)
    np.testing.assert_allclose(as_np(omega["bias"]), np.abs(gb).mean(0), rtol=1e-4)


def test_alpha_mixes_old_and_new_importance():
    old, new = {"a": torch.tensor([4.0])}, {"a": torch.tensor([0.0])}
    assert mix(old, new, 0.25)["a"].item() == 1.0
    net = tiny_net()                                  # heads of 2 and 2 classes
    assert old_share(0.3, net, 1) == 0.3
    assert old_share(-1, net, 1) == 0.5 and old_share(-1, net, 0) == 0.0


def test_section_values_are_checked():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"approach": "ewc", "ewc.alpha": 1.5, "ewc.fi_num_samples": 0,
                                    "ewc.fi_sampling_type": "empirical"})
    for fragment in ("ewc.alpha = 1.5", "ewc.fi_num_samples = 0", "ewc.fi_sampling_type = 'empirical'"):
        assert fragment in str(err.value)
    assert ExperimentConfig.from_dict({"approach": "ewc", "ewc.alpha": -1}).section("ewc").alpha == -1


# ---- end to end ------------------------------------------------------------------------------------------

def _rows(cfg, state=None):
    rows, last = [], None
    for r in run(cfg, state=state):
        rows += r.task_rows
        last = r
    return rows, last


def test_ewc_resumes_to_the_uninterrupted_run(tmp_path):
    cfg = ExperimentConfig.from_dict(FAST | {"approach": "ewc", "ewc.lamb": 50000.0})
    full, last = [], None
    for r in run(cfg):
        full += r.task_rows
        if r.task == 1:
            torch.save(r.state, tmp_path / "state.pt")
            fisher = r.state["approach"]["fisher"]
        last = r
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    rest, resumed = _rows(cfg, state)
    np.testing.assert_array_equal(resumed.acc_taw, last.acc_taw)
    np.testing.assert_array_equal(resumed.acc_tag, last.acc_tag)
    cols = ["task", "eval_task", "acc_taw", "acc_tag"]
    pd.testing.assert_frame_equal(pd.DataFrame(rest)[cols], pd.DataFrame(full)[cols].iloc[3:].reset_index(drop=True))
    assert resumed.fit.records[0].terms["penalty"] > 0
