"""The approach interface: every hook fires, in order, with the context it should see; the registry is
the one list of approaches; the approach's own state travels in the resumable state."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch

from cil import ExperimentConfig, run
from cil.approaches import APPROACHES, SPECS, approach_class
from cil.approaches.base import Approach, Loss, Step, TaskContext, train_task
from cil.approaches.registry import SECTIONS, section_users
from cil.config import valid_keys

run_module = importlib.import_module("cil.loop")
FAST = {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 2,
        "train.warmup_nepochs": 1, "memory.num_exemplars": 20, "run.device": "cpu", "approach": "lwf"}


class Recorder(Approach):
    """Finetuning with an old model that records every hook call and checks what the context holds."""

    needs_old_model = True

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        self.events: list[tuple] = []
        self.tasks_done = 0

    def _log(self, *event) -> None:
        self.events.append(event)

    def prepare_model(self, model):
        assert len(model.heads) == 0
        self._log("prepare_model")

    def make_head(self, model, t, n_classes):
        assert len(model.heads) == t and n_classes == 5
        self._log("make_head", t)
        return super().make_head(model, t, n_classes)

    def before_task(self, ctx: TaskContext):
        assert len(ctx.model.heads) == ctx.t + 1 and ctx.num_new_classes == 5 and ctx.offset == 5 * ctx.t
        assert (ctx.old_model is None) == (ctx.t == 0)
        assert ctx.cfg is self.cfg and ctx.device.type == "cpu" and isinstance(ctx.generator, torch.Generator)
        self._log("before_task", ctx.t)

    def training_set(self, ctx):
        x, y = super().training_set(ctx)
        assert (ctx.memory.size > 0) == (ctx.t > 0)  # exemplars of task 0 join task 1's data
        assert set(y.tolist()) == set(range(5 * ctx.t + 5))
        self._log("training_set", ctx.t)
        return x, y

    def validation_set(self, ctx):
        self._log("validation_set", ctx.t)
        return super().validation_set(ctx)

    def fit(self, ctx, train, val):
        self._log("fit", ctx.t)
        report = super().fit(ctx, train, val)
        assert len(report.records) == 2 and all(r.terms.keys() == {"ce_pred"} for r in report.records)
        return report

    def train_parameters(self, ctx):
        self._log("train_parameters", ctx.t)
        return super().train_parameters(ctx)

    def set_train_mode(self, ctx):
        self._log("set_train_mode", ctx.t)
        super().set_train_mode(ctx)

    def forward(self, ctx, x, y, phase):
        step = super().forward(ctx, x, y, phase)
        ran_old = step.old_logits is not None
        assert ran_old == (ctx.old_model is not None and phase != "test")
        assert step.features.shape == (len(y), ctx.model.out_dim) and len(step.logits) == ctx.t + 1
        self._log("forward", ctx.t, phase, ran_old)
        return step

    def loss(self, ctx, step: Step) -> Loss:
        assert ctx.model.training and step.x.dtype == torch.float32
        self._log("loss", ctx.t)
        return super().loss(ctx, step)

    def validation_loss(self, ctx, step):
        assert not ctx.model.training and not torch.is_grad_enabled()
        self._log("validation_loss", ctx.t)
        return Approach.loss(self, ctx, step).total  # the default, without recording a training loss

    def warmup_loss(self, ctx, step):
        assert ctx.t > 0 and ctx.old_model is None and ctx.model.heads[ctx.t].training
        assert not ctx.model.backbone.training
        self._log("warmup_loss", ctx.t)
        return super().warmup_loss(ctx, step)

    def after_fit(self, ctx):
        self._log("after_fit", ctx.t)

    def update_memory(self, ctx):
        self._log("update_memory", ctx.t)
        super().update_memory(ctx)
        assert set(ctx.memory.y.tolist()) == set(range(5 * ctx.t + 5))

    def after_memory_update(self, ctx):
        self.tasks_done = ctx.t + 1
        self._log("after_memory_update", ctx.t)

    def eval_scores(self, ctx, step):
        self._log("eval_scores", ctx.t, int(step.y[0]) // 5)
        return super().eval_scores(ctx, step)

    def state_dict(self):
        self._log("state_dict", self.tasks_done - 1)
        return {"tasks_done": torch.tensor(self.tasks_done)}

    def load_state_dict(self, state):
        self.tasks_done = int(state["tasks_done"])
        self._log("load_state_dict", self.tasks_done)


def _collapse(events):
    """Per-batch repeats as one: runs of the same event, then runs of the same pair of events
    (forward + loss of every batch)."""
    out = [e for e, _ in itertools.groupby(events)]
    pairs: list = []
    for e in out:
        pairs.append(e)
        if len(pairs) >= 4 and pairs[-2:] == pairs[-4:-2]:
            del pairs[-2:]
    return pairs


def _task_events(t):
    events = [("make_head", t), ("before_task", t), ("training_set", t), ("validation_set", t), ("fit", t)]
    if t > 0:
        events += [("forward", t, "train", False), ("warmup_loss", t)]
    events += [("train_parameters", t)]
    for _ in range(2):  # epochs
        events += [("set_train_mode", t), ("forward", t, "train", t > 0), ("loss", t),
                   ("forward", t, "val", t > 0), ("validation_loss", t)]
    events += [("after_fit", t), ("update_memory", t), ("after_memory_update", t)]
    for u in range(t + 1):
        events += [("forward", t, "test", False), ("eval_scores", t, u)]
    return [*events, ("state_dict", t)]


@pytest.fixture
def recorder(monkeypatch):
    made = []

    def make(cfg):
        made.append(Recorder(cfg))
        return made[-1]

    monkeypatch.setattr(run_module, "make_approach", make)
    return made


def test_every_hook_fires_in_order_with_its_context(recorder):
    results = list(run(ExperimentConfig.from_dict(FAST)))
    assert len(results) == 2
    assert _collapse(recorder[0].events) == [("prepare_model",), *_task_events(0), *_task_events(1)]
    assert results[1].state["approach"] == {"tasks_done": torch.tensor(2)}
    assert [r.epoch for r in results[1].fit.records] == [1, 2]


def test_resume_rebuilds_heads_then_loads_the_approach_state(recorder, tmp_path):
    cfg = ExperimentConfig.from_dict(FAST)
    first = next(iter(run(cfg)))
    torch.save(first.state, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    list(run(cfg, state=state))
    resumed = _collapse(recorder[1].events)
    assert resumed == [("prepare_model",), ("make_head", 0), ("load_state_dict", 1), *_task_events(1)]


def test_a_diverging_loss_names_task_epoch_and_term(monkeypatch):
    from cil.approaches.lwf import LwF
    from cil.errors import DivergedError

    real = LwF.loss

    def exploding(self, ctx, step):
        loss = real(self, ctx, step)
        if ctx.t == 1:
            loss.terms["kd_joint"] = loss.terms["kd_joint"] * float("inf")
        return loss

    monkeypatch.setattr(LwF, "loss", exploding)
    cfg = ExperimentConfig.from_dict(FAST | {"train.warmup_nepochs": 0})
    with pytest.raises(DivergedError) as err:
        list(run(cfg))
    assert (err.value.task, err.value.epoch, err.value.term) == (1, 1, "kd_joint")
    assert "kd_joint" in str(err.value)


def test_registry_is_the_one_list_of_approaches():
    assert set(APPROACHES) == set(SPECS)
    for name in APPROACHES:
        cls = approach_class(name)
        assert issubclass(cls, Approach)
        spec = SPECS[name]
        assert spec.section is None or spec.section in SECTIONS
    for section, cls in SECTIONS.items():
        assert section_users(section), f"section {section} is read by no approach"
        assert {f"{section}.{k}" for k in cls.__dataclass_fields__} <= set(valid_keys())


@pytest.mark.parametrize("with_exemplars", [True, False])
def test_bce_pred_with_exemplars_switch(with_exemplars):
    """Ours keeps the prediction BCE once exemplars are stored; `false` drops it, as the paper's lwf-br2."""
    from cil.loop import Experiment

    cfg = ExperimentConfig.from_dict(FAST | {"approach": "lwf-br2", "train.warmup_nepochs": 0, "train.nepochs": 1,
                                             "loss.bce_pred_with_exemplars": with_exemplars})
    exp = Experiment(cfg)
    report = train_task(exp.approach, exp.begin_task(0))
    assert "bce_pred" in report.records[0].terms  # no exemplars yet: both keep it
    report = train_task(exp.approach, exp.begin_task(1))
    assert ("bce_pred" in report.records[0].terms) == with_exemplars
