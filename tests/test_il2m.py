"""IL2M: the rectification formula, the statistics it reads, and its resume."""

from types import SimpleNamespace

import pandas as pd
import torch

from cil.approaches.base import Step, train_task
from cil.approaches.il2m import IL2M
from cil.config import ExperimentConfig
from cil.loop import Experiment, run

FAST = {"approach": "il2m", "data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet",
        "train.nepochs": 1, "memory.num_exemplars": 30, "run.device": "cpu"}
TIMING = ["train_seconds"]


def test_rectification_changes_old_class_scores_only_as_the_formula_says():
    approach = IL2M(ExperimentConfig.from_dict(FAST))
    # tasks of 2, 2 and 2 classes; the last one is new
    approach.init_means = torch.tensor([1.0, 2.0, 3.0, 4.0, 9.0, 9.0], dtype=torch.float64)
    approach.current_means = torch.tensor([2.0, 2.0, 1.0, 8.0], dtype=torch.float64)
    approach.confidence = torch.tensor([2.0, 4.0, 1.0], dtype=torch.float64)
    # factor_o = init/current * conf[2]/conf[task of o]: .5*.5, 1*.5, 3*.25, .5*.25
    factors = torch.tensor([0.25, 0.5, 0.75, 0.125])
    logits = [torch.tensor([[5.0, 1.0], [1.0, 2.0], [2.0, -1.0]]), torch.tensor([[0.5, 0.0], [4.0, 3.0], [1.0, 1.0]]),
              torch.tensor([[1.0, 2.0], [1.0, 4.5], [3.0, 0.0]])]
    ctx = SimpleNamespace(model=SimpleNamespace(task_cls=[2, 2, 2]), cfg=approach.cfg)
    scores = approach.eval_scores(ctx, Step(torch.zeros(3), torch.zeros(3, dtype=torch.long), logits,
                                            torch.zeros(3, 4)))
    taw, tag = scores["il2m"]
    assert taw is logits and scores["heads"] is logits  # task-aware prediction is not rectified
    raw, rect = torch.cat(logits, 1), torch.cat(tag, 1)
    # row 0: top class 0 is old -> unchanged; rows 1 and 2: top class is new -> old columns scaled
    assert torch.equal(rect[0], raw[0])
    assert torch.allclose(rect[1:, :4], raw[1:, :4] * factors) and torch.equal(rect[1:, 4:], raw[1:, 4:])
    assert rect.argmax(1).tolist() == [0, 5, 4]  # row 2: 2*.25 = .5 < 3 keeps the new class 4
    # after task 0 there is nothing to rectify
    first = logits[:1]
    single = approach.eval_scores(SimpleNamespace(model=SimpleNamespace(task_cls=[2]), cfg=approach.cfg),
                                  Step(torch.zeros(3), torch.zeros(3), first, torch.zeros(3, 4)))
    assert single["il2m"] is first


def test_statistics_are_the_mean_scores_of_the_training_data():
    exp = Experiment(ExperimentConfig.from_dict(FAST | {"data.num_tasks": 2}))
    for t in range(2):
        ctx = exp.begin_task(t)
        x, y = exp.approach.training_set(ctx)  # before the memory update: new samples + old exemplars
        train_task(exp.approach, ctx)
        a = exp.approach
        if t == 0:
            continue
        exp.model.eval()
        with torch.no_grad():
            scores = torch.cat(exp.model(exp.trainer.inputs(x)), 1).double()
        own = scores.gather(1, y[:, None]).squeeze(1)
        by_hand = torch.stack([own[y == c].mean() for c in range(ctx.offset + ctx.num_new_classes)])
        assert torch.allclose(a.current_means, by_hand[: ctx.offset], rtol=1e-5)
        assert torch.allclose(a.init_means[ctx.offset:], by_hand[ctx.offset:], rtol=1e-5)
        assert torch.allclose(a.confidence[1], scores[y >= ctx.offset].max(1).values.mean(), rtol=1e-5)
        assert len(a.init_means) == 10 and len(a.confidence) == 2


def test_stop_after_task_1_and_resume_gives_the_uninterrupted_matrices(tmp_path):
    cfg = ExperimentConfig.from_dict(FAST)
    full = list(run(cfg))
    torch.save(full[1].state, tmp_path / "state.pt")
    resumed = list(run(cfg, state=torch.load(tmp_path / "state.pt", weights_only=True)))
    for name in ("acc_taw", "acc_tag"):
        assert (getattr(resumed[0], name) == getattr(full[2], name)).all()
    rows = pd.DataFrame([*full[0].task_rows, *full[1].task_rows, *resumed[0].task_rows]).drop(columns=TIMING)
    pd.testing.assert_frame_equal(rows, pd.DataFrame([r for x in full for r in x.task_rows]).drop(columns=TIMING))
    assert (rows.acc_taw == rows.acc_taw_heads).all()  # IL2M leaves the task-aware prediction alone
