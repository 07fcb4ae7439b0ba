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
from cil.loop import run
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet

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


# ---- the path integral (Path Integral, RWalk) ------------------------------------------------------------

def _train_steps(approach, ctx, xs, ys, lr):
    """The trainer's per-batch path with plain SGD: forward, loss, backward, step, after_step."""
    opt = torch.optim.SGD(ctx.model.parameters(), lr=lr)
    ws = []
    for x, y in zip(xs, ys, strict=True):
        step = approach.forward(ctx, x, y, "train")
        loss = approach.loss(ctx, step)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        approach.after_step(ctx, step, loss)
        ws.append({n: v.clone() for n, v in approach.w.items()})
    return ws


def test_path_integral_accumulates_gradient_times_update_over_steps():
    net, ref = tiny_net(), tiny_net()
    ctx = tiny_ctx("path_integral", net, t=0, **{"path_integral.damping": 0.2})
    pi = make_approach(ctx.cfg)
    pi.before_task(ctx)
    pi.reset_path(ctx)
    start = detached_copy_of(net)
    xs, ys = zip(*(batch(6, seed=s) for s in range(3)), strict=True)
    ys = [y % 2 for y in ys]                                               # task 0's classes
    ws = _train_steps(pi, ctx, xs, ys, lr=0.1)

    hand = {n: torch.zeros_like(p) for n, p in backbone_parameters(ref).items()}
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x)[0], y).backward()
        for n, p in backbone_parameters(ref).items():
            hand[n] += 0.1 * p.grad.pow(2)                 # -g * delta with delta = -lr * g at task 0
        opt.step()
        for n in hand:
            torch.testing.assert_close(ws[k][n], hand[n])
    for n in hand:                                          # non-negative, growing step after step
        assert (ws[0][n] >= 0).all() and (ws[2][n] >= ws[1][n]).all() and (ws[2][n] > ws[0][n]).any()

    pi.after_memory_update(ctx)
    for n, p in backbone_parameters(net).items():
        expected = ws[-1][n] / ((p.detach() - start[n]).pow(2) + 0.2)
        torch.testing.assert_close(pi.store["importance"][n], expected)
        assert (pi.store["importance"][n] >= 0).all()
        torch.testing.assert_close(pi.anchor[n], p.detach())   # the new anchor: the parameters after the task


def detached_copy_of(net):
    return {n: p.detach().clone() for n, p in backbone_parameters(net).items()}


def test_the_path_gradient_leaves_the_penalty_out():
    net = tiny_net()
    ctx = tiny_ctx("path_integral", net, t=1, **{"path_integral.lamb": 10.0})
    pi = make_approach(ctx.cfg)
    pi.before_task(ctx)
    pi.store["importance"] = {n: torch.ones_like(v) for n, v in pi.anchor.items()}
    pi.before_task(ctx)
    with torch.no_grad():
        net.backbone.weight.add_(0.5)                        # away from the anchor: the penalty pulls
    x, y = batch()
    step = pi.forward(ctx, x, 2 + y % 2, "train")
    loss = pi.loss(ctx, step)
    ce_grad = torch.autograd.grad(loss.terms["ce_pred"], net.backbone.weight, retain_graph=True)[0]
    total_grad = torch.autograd.grad(loss.total, net.backbone.weight)[0]
    torch.testing.assert_close(step.extras["path_grads"][0], ce_grad)
    assert not torch.allclose(total_grad, ce_grad)


def test_rwalk_path_loss_is_the_trained_cross_entropy_unless_facil_path_loss():
    x, y = batch()
    y = 2 + y % 2
    grads = {}
    for facil in (False, True):
        net = tiny_net()
        ctx = tiny_ctx("r_walk", net, t=1, **{"r_walk.facil_path_loss": facil})
        rw = make_approach(ctx.cfg)
        rw.before_task(ctx)
        step = rw.forward(ctx, x, y, "train")
        rw.loss(ctx, step)
        grads[facil] = step.extras["path_grads"][0]
        scores = torch.cat(step.logits, dim=1) if facil else step.logits[1]
        target = y if facil else y - 2
        expected = torch.autograd.grad(torch.nn.functional.cross_entropy(scores, target), net.backbone.weight)[0]
        torch.testing.assert_close(grads[facil], expected)
    assert not torch.allclose(grads[False], grads[True])


def test_rwalk_fisher_and_scores_are_non_negative_and_averaged_over_tasks(tmp_path):
    cfg = ExperimentConfig.from_dict(FAST | {"approach": "r_walk", "data.num_tasks": 2})
    states = [r.state["approach"] for r in run(cfg)]
    torch.save(states[1], tmp_path / "rwalk.pt")
    assert torch.load(tmp_path / "rwalk.pt", weights_only=True).keys() == {"anchor", "fisher", "scores"}
    first, second = states
    for n in first["fisher"]:
        for group in ("fisher", "scores"):
            assert (first[group][n] >= 0).all() and (second[group][n] >= 0).all()
            # alpha = 0.5 mixing and score averaging: the new part is >= 0, so half the old one remains
            assert (second[group][n] >= first[group][n] / 2 - 1e-12).all()
        assert not torch.equal(first["anchor"][n], second["anchor"][n])
    assert any(s.sum() > 0 for s in first["scores"].values())
    assert any((second["scores"][n] != first["scores"][n] / 2).any() for n in first["scores"])


@pytest.mark.parametrize("num_samples, expected", [(-1, "full"), (100, 100), (129, 128), (10**6, "all")])
def test_importance_pass_sample_counts(num_samples, expected):
    from cil.approaches.importance import importance_batches
    from cil.loop import Experiment

    exp = Experiment(ExperimentConfig.from_dict(FAST | {"approach": "ewc", "train.batch_size": 64}))
    ctx = exp.begin_task(0)
    n = len(ctx.task_data("train")[1])
    sizes = [len(y) for _, y in importance_batches(ctx, num_samples, ctx.new_generator(3))]
    want = {"full": n // 64 * 64, "all": n - (n % 64 == 1)}.get(expected, expected)
    assert n % 64 not in (0, 1)  # so that -1 (full batches) and "every sample" differ
    assert sum(sizes) == want and all(s == 64 for s in sizes[:-1])
