"""iCaRL: the nearest-mean-of-exemplars classifier, its distillation term, its defaults, its resume."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cil.approaches.base import train_task
from cil.approaches.icarl import class_means, distill_bce, nme_scores
from cil.config import ExperimentConfig
from cil.loop import Experiment, run

FAST = {"approach": "icarl", "data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet",
        "train.nepochs": 1, "memory.num_exemplars": 30, "run.device": "cpu"}
TIMING = ["train_seconds"]


def test_class_means_and_nme_scores_match_a_hand_computation():
    # class 0: (2, 0) and (0, 3) normalise to (1, 0) and (0, 1): mean (.5, .5), re-normalised (s, s)
    # class 1: (-4, 0) -> (-1, 0); class 2 has no exemplar
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-4.0, 0.0]])
    means = class_means(feats, torch.tensor([0, 0, 1]), 3)
    s = 1 / math.sqrt(2)
    assert torch.allclose(means[:2], torch.tensor([[s, s], [-1.0, 0.0]]))
    assert means[2].isnan().all()
    # query (3, 4) -> (.6, .8): squared distances 2 - 2 * (.6 s + .8 s) and 2 - 2 * (-.6)
    scores = nme_scores(torch.tensor([[3.0, 4.0], [-1.0, 0.1]]), means, [2, 1])
    assert [tuple(h.shape) for h in scores] == [(2, 2), (2, 1)]
    expected0 = torch.tensor([-(2 - 2 * 1.4 * s), -(2 + 2 * 0.6)])
    assert torch.allclose(scores[0][0], expected0, atol=1e-6)
    assert scores[1].isinf().all() and (scores[1] < 0).all()  # no mean: never predicted
    assert torch.cat(scores, 1).argmax(1).tolist() == [0, 1]


def test_distillation_is_a_per_class_sum_of_bce_zero_gradient_at_the_old_outputs():
    old = [torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0], [-1.0]])]
    new = [o.clone().requires_grad_(True) for o in old]
    loss = distill_bce(new, old)
    p = torch.sigmoid(torch.cat(old, 1))
    by_hand = sum(F.binary_cross_entropy(p[:, c], p[:, c]) for c in range(3))
    assert torch.allclose(loss, by_hand)
    loss.backward()
    assert all(torch.allclose(n.grad, torch.zeros_like(n)) for n in new)  # BCE(q, q) is its minimum
    moved = distill_bce([new[0] + 1, new[1]], old)
    assert moved > loss


def test_icarl_defaults_to_herding_and_an_explicit_selection_wins():
    assert ExperimentConfig.from_dict(FAST).memory.selection == "herding"
    assert ExperimentConfig.from_dict(FAST | {"memory.selection": "random"}).memory.selection == "random"
    assert ExperimentConfig.from_dict(FAST | {"approach": "lwf"}).memory.selection == "random"


def test_nme_accuracy_is_the_nearest_exemplar_mean_of_the_trained_model():
    cfg = ExperimentConfig.from_dict(FAST | {"data.num_tasks": 2})
    exp = Experiment(cfg)
    tests = [exp.scenario.task_split(u, "test") for u in range(2)]
    for t in range(2):
        ctx = exp.begin_task(t)
        report = train_task(exp.approach, ctx)
        assert ("bce_distill" in report.records[-1].terms) == (t > 0)
        named = exp.trainer.evaluate_named(exp.approach, ctx, tests[: t + 1])
        assert list(named) == ["nme", "heads"]
        # by hand: the exemplars' features -> class means -> nearest mean of each test sample
        exp.model.eval()
        with torch.no_grad():
            f = F.normalize(exp.model(exp.trainer.inputs(exp.memory.x), return_features=True)[1], dim=1)
            means = torch.stack([F.normalize(f[exp.memory.y == c].mean(0), dim=0)
                                 for c in range(exp.model.task_offsets[t] + exp.model.task_cls[t])])
            assert torch.allclose(exp.approach.means, means, atol=1e-5)
            for u, (x, y) in enumerate(tests[: t + 1]):
                g = F.normalize(exp.model(exp.trainer.inputs(x), return_features=True)[1], dim=1)
                pred = torch.cdist(g, means).argmin(1)
                assert named["nme"][1][u] == pytest.approx((pred == y).sum().item() / len(y))
                lo, hi = exp.model.task_offsets[u], exp.model.task_offsets[u] + exp.model.task_cls[u]
                pred_taw = torch.cdist(g, means[lo:hi]).argmin(1) + lo
                assert named["nme"][0][u] == pytest.approx((pred_taw == y).sum().item() / len(y))
    assert named["nme"] != named["heads"]  # two classifiers, two accuracies


def test_stop_after_task_1_and_resume_gives_the_uninterrupted_matrices(tmp_path):
    cfg = ExperimentConfig.from_dict(FAST)
    full = list(run(cfg))
    torch.save(full[1].state, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["approach"]["means"].shape[0] == 7  # classes seen after task 1: 4 + 3
    resumed = list(run(cfg, state=state))
    assert len(resumed) == 1
    for name in ("acc_taw", "acc_tag"):
        assert (getattr(resumed[0], name) == getattr(full[2], name)).all()
    assert resumed[0].acc_other.keys() == {"acc_taw_heads", "acc_tag_heads"}
    for name, mat in full[2].acc_other.items():
        assert (resumed[0].acc_other[name] == mat).all()
    rows = pd.DataFrame([*full[0].task_rows, *full[1].task_rows, *resumed[0].task_rows]).drop(columns=TIMING)
    pd.testing.assert_frame_equal(rows, pd.DataFrame([r for x in full for r in x.task_rows]).drop(columns=TIMING))
    assert {"acc_taw_heads", "acc_tag_heads"} <= set(rows.columns)
