"""DMC: a new-task specialist learns task t alone; double distillation on auxiliary data brings the student
closer to both teachers; the auxiliary data comes from cil.data in the main data's shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cil.approaches.base import task_seed, train_task
from cil.approaches.dmc import DoubleDistillation, match_channels, reinitialise
from cil.config import ConfigError, ExperimentConfig
from cil.loop import Experiment, run
from cil.training import frozen_copy

CFG = {"approach": "dmc", "data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet",
       "train.nepochs": 4, "dmc.aux_dataset": "synthetic:classes=4,train=100,test=50", "run.device": "cpu"}


def test_specialist_then_double_distillation():
    exp = Experiment(ExperimentConfig.from_dict(CFG))
    train_task(exp.approach, exp.begin_task(0))
    ctx = exp.begin_task(1)
    dmc = exp.approach
    dmc.before_task(ctx)
    (x_aux, y_aux), (x_val, _) = dmc.aux_data(ctx)
    assert x_aux.shape[1:] == (1, 8, 8) and x_aux.dtype == torch.uint8 and (y_aux == -1).all()

    train, val = dmc.training_set(ctx), dmc.validation_set(ctx)
    assert set(train[1].tolist()) == set(range(ctx.offset, ctx.offset + ctx.num_new_classes))  # no exemplars
    reinitialise(ctx.model, task_seed(0, 1, 3))
    specialist, _ = dmc.train_new_model(ctx, train, val)
    assert all(float(p.abs().sum()) == 0 and not p.requires_grad for p in specialist.heads[0].parameters())
    tests = [ctx.scenario.task_split(u, "test") for u in (0, 1)]
    taw, _ = exp.trainer.evaluate(dmc, dataclasses.replace(ctx, model=specialist), tests)
    assert taw[1] > 0.9  # it learned task 1 alone

    consolidation = DoubleDistillation(ctx.cfg, specialist)
    x = exp.trainer.inputs(x_val)

    def distance(model):
        model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(torch.cat(model(x), dim=1), consolidation.targets(ctx, x)))

    before = distance(frozen_copy(ctx.model))
    report = dmc.consolidate(ctx, specialist)
    after = distance(ctx.model)
    assert after < 0.6 * before, (before, after)
    assert all("double_distillation" in r.terms for r in report.records)
    # the targets: the old model's old head and the specialist's new head, each column centred
    target = consolidation.targets(ctx, x)
    with torch.no_grad():
        old, new = ctx.old_model(x)[0], specialist(x)[1]
    assert torch.allclose(target[:, : ctx.offset], old - old.mean(0), atol=1e-5)
    assert torch.allclose(target[:, ctx.offset:], new - new.mean(0), atol=1e-5)


def test_bad_settings_fail_before_training():
    with pytest.raises(ConfigError, match="no exemplars"):
        Experiment(ExperimentConfig.from_dict(CFG | {"memory.num_exemplars": 20}))
    with pytest.raises(ConfigError, match="dmc.aux_dataset = 'imagenet_32'.*synthetic"):
        Experiment(ExperimentConfig.from_dict(CFG | {"dmc.aux_dataset": "imagenet_32"}))


def test_channels_are_matched():
    rgb = torch.tensor([[[[255]], [[0]], [[0]]]], dtype=torch.uint8)
    assert match_channels(rgb, 1).tolist() == [[[[76]]]]  # 0.299 * 255
    assert match_channels(match_channels(rgb, 1), 3).shape == (1, 3, 1, 1)



def test_resume_after_task_1_gives_the_uninterrupted_matrices(tmp_path):
    """The re-initialisation reseeds torch's global generator and the auxiliary data is reloaded: a resumed
    run still gives the numbers of an uninterrupted one."""
    cfg = ExperimentConfig.from_dict(CFG | {"data.num_tasks": 3, "train.nepochs": 1})
    full = list(run(cfg))
    torch.save(full[1].state, tmp_path / "state.pt")
    resumed = list(run(cfg, state=torch.load(tmp_path / "state.pt", weights_only=True)))
    assert [r.task for r in resumed] == [2]
    assert (resumed[-1].acc_taw == full[-1].acc_taw).all() and (resumed[-1].acc_tag == full[-1].acc_tag).all()
