"""Approaches that reduce to another one at a setting give that one's numbers bit for bit on the CPU:
LwM with ``lwm.gamma: 0`` is LwF (``beta`` = ``lamb``, the same ``T``); EEIL with ``eeil.lamb: 0`` and no
balanced stage is finetuning with exemplars over all heads; LUCIR with its distillation and margin
terms off (and its old heads trainable) is finetuning of the same cosine-classifier network. The random
streams (shuffling, augmentation, heads, exemplar choice) are shared, so the comparison is exact."""

from __future__ import annotations

import pytest
import torch

import cil.loop
from cil import ExperimentConfig, run
from cil.approaches.base import Approach
from cil.networks import CosineLinear

BASE = {"data.dataset": "digits", "data.num_tasks": 3, "model.network": "convnet", "train.nepochs": 1,
        "train.batch_size": 64, "run.device": "cpu", "run.seed": 3}


def _trace(cfg: dict) -> list[tuple]:
    """Per task: the accuracy matrices so far and the model's weights."""
    out = []
    for r in run(ExperimentConfig.from_dict(BASE | cfg)):
        out.append((r.acc_taw[: r.task + 1].copy(), r.acc_tag[: r.task + 1].copy(),
                    {k: v.clone() for k, v in r.state["model"].items()}))
    return out


def _assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for t, ((taw_a, tag_a, wa), (taw_b, tag_b, wb)) in enumerate(zip(a, b, strict=True)):
        assert (taw_a == taw_b).all() and (tag_a == tag_b).all(), f"task {t}: {tag_a} != {tag_b}"
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"task {t}: weight {k} differs"


@pytest.mark.parametrize("exemplars", [0, 60])
def test_lwm_without_attention_is_lwf(exemplars):
    common = {"loss.T": 3.0, "memory.num_exemplars": exemplars}
    _assert_same(_trace(common | {"approach": "lwm", "lwm.gamma": 0.0, "lwm.beta": 2.0}),
                 _trace(common | {"approach": "lwf", "loss.lamb": 2.0}))


def test_lwm_attention_changes_the_numbers():
    """The reduction above is not vacuous: the attention term trains the model."""
    a = _trace({"approach": "lwm", "lwm.gamma": 1.0, "data.num_tasks": 2})
    b = _trace({"approach": "lwf", "data.num_tasks": 2})
    assert not all(torch.equal(v, b[-1][2][k]) for k, v in a[-1][2].items())


def test_eeil_without_distillation_or_balanced_stage_is_finetuning_with_exemplars():
    common = {"memory.num_exemplars": 60, "train.all_outputs": True}
    _assert_same(_trace(common | {"approach": "eeil", "eeil.lamb": 0.0, "eeil.nepochs_finetuning": 0}),
                 _trace(common | {"approach": "finetuning"}))


class CosineFinetuning(Approach):
    """Finetuning of LUCIR's network: cosine heads sharing one sigma, the last ReLU removed, no clipping."""

    clip_gradients = False

    def prepare_model(self, model):
        model.set_last_relu(False)

    def make_head(self, model, t, n_classes):
        return CosineLinear(model.out_dim, n_classes, model.heads[t - 1].sigma if t > 0 else None)


def test_lucir_without_its_terms_is_cosine_finetuning(monkeypatch):
    common = {"memory.num_exemplars": 60}
    lucir = _trace(common | {"approach": "lucir", "lucir.lamb": 0.0, "lucir.margin_ranking": False,
                             "lucir.less_forget": False})
    make = cil.loop.make_approach
    monkeypatch.setattr(cil.loop, "make_approach",
                        lambda cfg: CosineFinetuning(cfg) if cfg.approach == "finetuning" else make(cfg))
    _assert_same(lucir, _trace(common | {"approach": "finetuning"}))


def test_ordering_preset_gives_every_approach_the_same_exemplars():
    import os

    from tune.spec import load_spec

    spec = load_spec(os.path.join(os.path.dirname(os.path.dirname(__file__)), "tune", "presets",
                                  "synthetic_facil_ordering.yaml"))
    assert spec.num_trials == 40 and spec.grid["run.seed"] == [0, 1, 2, 3, 4]
    assert {"finetuning", "icarl", "eeil", "bic", "lucir", "il2m", "lwf", "lwm"} == set(spec.grid["approach"])
    assert spec.base["memory.num_exemplars"] == 50 and "memory.num_exemplars" not in spec.grid
