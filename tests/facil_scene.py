"""The inputs of the FACIL differential check, built with this project's code from fixed seeds, and the
quantities this project computes on them.

``tools/facil_diff.py`` runs FACIL's approach classes on the same inputs (the same weights, old model,
exemplars, batch and hyper-parameters) and writes FACIL's numbers to ``tests/data/facil_golden.pt``;
``tests/test_facil_golden.py`` compares :func:`ours` with them on every run, without FACIL. The scene:
the synthetic set (12 classes of 1x8x8, 3 tasks of 4 classes, no augmentation), a small ConvNet (the
project's class, widths 4 and 8), task 2 being learned, the model after task 1 as the old model, the
current model that old model plus seeded noise (so that every distillation term is non-zero), 4
exemplars per old class, approach state from task 1 set to seeded values.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cil.approaches import importance
from cil.approaches.base import TaskContext
from cil.approaches.bic import BiC
from cil.approaches.dmc import DoubleDistillation
from cil.config import ExperimentConfig
from cil.loop import Experiment
from cil.networks import ConvNet, IncrementalNet

SEED = 0
T = 2  # the task being learned
EXEMPLARS = 4  # per old class: the first ones of each class's training samples (BiC: 1 held out, 3 stored)
BATCH_NEW = 10  # the training batch: task 2's first samples, then every other exemplar
BASE: dict[str, Any] = {
    "data.dataset": "synthetic:classes=12,channels=1,size=8,train=24,test=4",
    "data.num_tasks": 3, "data.augment": "none", "data.val_fraction": 0.25,
    "model.network": "convnet", "run.device": "cpu", "run.seed": SEED,
    "train.batch_size": 64, "train.lr": 0.1,
    "memory.num_exemplars_per_class": EXEMPLARS,
}
#: every approach FACIL has, with the keys that select FACIL's behaviour where this project's default
#: differs on purpose (the variant ``name@facil``); the default variant is compared too
NO_EXEMPLARS = {"memory.num_exemplars_per_class": 0}
APPROACHES: dict[str, dict[str, Any]] = {
    "finetuning": {},
    "finetuning@noex": NO_EXEMPLARS,
    "freezing": {},
    "joint": NO_EXEMPLARS,
    "lwf": {},
    "lwf@noex": NO_EXEMPLARS,
    "icarl": {"memory.selection": "herding"},
    "eeil": {"eeil.facil_finetuning": True},
    "eeil@balanced": {"eeil.facil_finetuning": True},  # a step of the balanced stage (stage 2)
    "eeil@default": {},
    "bic": {"bic.num_bias_epochs": 20},
    "bic@total": {"bic.num_bias_epochs": 20, "memory.num_exemplars_per_class": 0, "memory.num_exemplars": 40},
    "lucir": {"lucir.facil_relu": True},
    "lucir@mse": {"lucir.facil_relu": True, "lucir.less_forget": False},
    "il2m": {},
    "dmc": NO_EXEMPLARS,
    "ewc": {"ewc.fi_sampling_type": "max_pred"},
    "ewc@noex": NO_EXEMPLARS,
    "mas": {},
    "path_integral": {},
    "path_integral@noex": NO_EXEMPLARS,
    "r_walk": {"r_walk.facil_path_loss": True},
    "r_walk@noex": {"r_walk.facil_path_loss": True} | NO_EXEMPLARS,
    "r_walk@noex-default": NO_EXEMPLARS,
    "lwm": {"lwm.facil_attention": True, "lwm.facil_fix_bn": True},
    "lwm@noex": {"lwm.facil_attention": True, "lwm.facil_fix_bn": True} | NO_EXEMPLARS,
    "lwm@default": {},
}
#: the variants that differ from FACIL on purpose, and the key that gives FACIL's behaviour back
DELIBERATE = {"eeil@default": "eeil.facil_finetuning", "r_walk@noex-default": "r_walk.facil_path_loss",
              "lwm@default": "lwm.facil_attention, lwm.facil_fix_bn"}


def approach_of(variant: str) -> str:
    return variant.partition("@")[0]


def config(variant: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict(BASE | {"approach": approach_of(variant)} | APPROACHES[variant])


def small_net(seed: int) -> IncrementalNet:
    """The project's ConvNet at widths (4, 8), a 2x2 grid and 16 features: every gradient fits a fixture."""
    torch.manual_seed(seed)
    return IncrementalNet(ConvNet(1, 8, widths=(4, 8), grid=2, out_dim=16), 16)


@torch.no_grad()
def _randomise_bn(model: IncrementalNet, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm running statistics and affine parameters (eval-mode passes see them)."""
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


@torch.no_grad()
def _perturb(model: IncrementalNet, gen: torch.Generator, scale: float = 0.5) -> None:
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale * (p.abs().mean() + 1e-3))


def first_per_class(x: Tensor, y: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """Samples ``start:stop`` of each class, class by class (in increasing label order)."""
    idx = torch.cat([torch.nonzero(y == c).flatten()[start:stop] for c in torch.unique(y).tolist()])
    return x[idx], y[idx]


@dataclass
class Scene:
    variant: str
    exp: Experiment
    ctx: TaskContext
    old_plain: IncrementalNet  # the model after task 1, unfused (FACIL's old model is a plain deep copy)
    x: Tensor  # the training batch, normalised
    y: Tensor
    test_x: Tensor
    test_y: Tensor
    imp_batches: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # importance pass / aux batches
    state: dict[str, Any] = field(default_factory=dict)  # approach state from task 1 (both sides get it)

    @property
    def approach(self):
        return self.exp.approach


def build(variant: str) -> Scene:
    """The scene for one approach variant, from fixed seeds; the approach's ``before_task`` has run."""
    cfg = config(variant)
    with torch.random.fork_rng():
        exp = Experiment(cfg)
    exp.model = small_net(SEED)
    exp.approach.prepare_model(exp.model)
    gen = torch.Generator().manual_seed(SEED + 1)
    exp.add_head(0)
    exp.add_head(1)
    _randomise_bn(exp.model, gen)
    if approach_of(variant) == "lucir":
        with torch.no_grad():
            exp.model.heads[0].sigma.fill_(2.5)
    old_plain = copy.deepcopy(exp.model).eval()
    a, sc = exp.approach, exp.scenario
    state: dict[str, Any] = {}
    name = approach_of(variant)
    # memory: the first exemplars of every old class (BiC: the first one held out, the next three stored)
    olds = [sc.task_split(u, "train") for u in range(T)]
    ox, oy = torch.cat([o[0] for o in olds]), torch.cat([o[1] for o in olds])
    if exp.memory.enabled:
        start = 1 if name == "bic" else 0
        exp.memory.x, exp.memory.y = first_per_class(ox, oy, start, EXEMPLARS)
    if name == "bic":
        a.held_x, a.held_y = first_per_class(ox, oy, 0, 1)
        a.alpha, a.beta = torch.tensor([1.0, 0.8]), torch.tensor([0.0, 0.3])
    if name in ("ewc", "mas", "path_integral", "r_walk"):
        params = importance.backbone_parameters(old_plain)
        a.anchor = importance.detached_copy(params)
        a.store = {g: {n: torch.rand(p.shape, generator=gen) * 0.5 for n, p in params.items()} for g in a.groups}
        state = {"anchor": a.anchor, **a.store}
    if name == "il2m":
        a.init_means = torch.rand(8, generator=gen, dtype=torch.float64) + 1.0
        a.confidence = torch.rand(2, generator=gen, dtype=torch.float64) + 1.5
        state = {"init_means": a.init_means.clone(), "confidence": a.confidence.clone()}
    ctx = exp.begin_task(T)
    _perturb(exp.model, gen)
    a.before_task(ctx)
    if variant == "eeil@balanced":
        a.balanced = True
    nx, ny = sc.task_split(T, "train")
    if name == "bic":
        nx, ny = a._task_train(ctx)
    mem_x, mem_y = (exp.memory.x[::2], exp.memory.y[::2]) if exp.memory.size else (nx[:0], ny[:0])
    if name == "joint":  # joint's batch: samples of every task seen
        mem_x, mem_y = first_per_class(ox, oy, 0, 1)
    xb, yb = torch.cat([nx[:BATCH_NEW], mem_x]), torch.cat([ny[:BATCH_NEW], mem_y])
    tests = [sc.task_split(u, "test") for u in range(T + 1)]
    test_x = torch.cat([t[0][:8] for t in tests])
    test_y = torch.cat([t[1][:8] for t in tests])
    tr = exp.trainer
    imp = [(tr.inputs(nx[i:i + 12]), ny[i:i + 12]) for i in (0, 12)]
    if name == "dmc":  # the auxiliary batch of the consolidation stage: other images of the set
        imp = [(tr.inputs(ox[:16]), oy[:16])]
    return Scene(variant, exp, ctx, old_plain, tr.inputs(xb), yb, tr.inputs(test_x), test_y, imp, state)


@contextlib.contextmanager
def importance_batches(batches: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """The importance pass over exactly ``batches`` (the harness gives FACIL the same ones, in order)."""
    saved = importance.importance_batches
    importance.importance_batches = lambda ctx, num_samples, generator: iter(batches)
    try:
        yield
    finally:
        importance.importance_batches = saved


def _grads(model: IncrementalNet, trained: list[torch.nn.Parameter]) -> dict[str, Tensor]:
    """The gradients of the parameters the optimizer updates (FACIL's quirks leave stale gradients on
    others, e.g. RWalk's first backward pass on heads its optimizer does not hold)."""
    ids = {id(p) for p in trained}
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None and id(p) in ids}


def predictions(s: Scene) -> dict[str, Tensor]:
    """Task-aware and task-agnostic hits of the approach's own classifier on the test batch."""
    a, ctx = s.approach, s.ctx
    ctx.model.eval()
    with torch.no_grad():
        step = a.forward(ctx, s.test_x, s.test_y, "test")
        scores = a.eval_scores(ctx, step)
    if isinstance(scores, dict):
        scores = next(iter(scores.values()))
    taw, tag = scores if isinstance(scores, tuple) else (scores, scores)
    offsets = ctx.model.task_offsets
    task = torch.bucketize(s.test_y, torch.tensor(offsets[1:]), right=True)
    pred_taw = torch.stack([taw[int(u)][i].argmax() + offsets[int(u)] for i, u in enumerate(task)])
    pred_tag = torch.cat([z.float() for z in tag], dim=1).argmax(1)
    return {"hits_taw": (pred_taw == s.test_y).float(), "hits_tag": (pred_tag == s.test_y).float()}


def ours(variant: str) -> dict[str, Any]:
    """What this project computes on the scene: the loss and its terms of one training step, every
    parameter's gradient, the approach's end-of-task effects, the test batch's predictions."""
    s = build(variant)
    a, ctx, model, name = s.approach, s.ctx, s.exp.model, approach_of(variant)
    out: dict[str, Any] = {}
    if name == "dmc":  # the consolidation stage's loss on an auxiliary batch
        new_model = copy.deepcopy(model).eval()
        stage = DoubleDistillation(ctx.cfg, new_model)
        model.train()
        step = stage.forward(ctx, s.imp_batches[0][0], s.imp_batches[0][1], "train")
        loss = stage.loss(ctx, step)
        loss.total.backward()
        out["loss"] = {"total": loss.total.detach(), **{k: v.detach() for k, v in loss.terms.items()}}
        out["grads"] = _grads(model, list(stage.train_parameters(ctx)))
        return out
    params = [p for p in a.train_parameters(ctx) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=ctx.cfg.train.lr)
    a.set_train_mode(ctx)
    if isinstance(a, importance.PathIntegralPenalty):
        a.reset_path(ctx)
    step = a.forward(ctx, s.x, s.y, "train")
    loss = a.loss(ctx, step)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    out["loss"] = {"total": loss.total.detach(), **{k: v.detach() for k, v in loss.terms.items()}}
    out["grads"] = _grads(model, params)
    if a.clip_gradients:
        torch.nn.utils.clip_grad_norm_(params, ctx.cfg.train.clipping)
    optimizer.step()
    a.after_step(ctx, step, loss)
    end: dict[str, Any] = {}
    if isinstance(a, importance.PathIntegralPenalty):
        end["w"] = {n: v.clone() for n, v in a.w.items()}
    if isinstance(a, importance.ImportancePenalty):
        with importance_batches(s.imp_batches):
            a.after_memory_update(ctx)
        end.update({g: dict(a.store[g]) for g in a.groups})
    if isinstance(a, BiC):
        a.after_fit(ctx)
        end["alpha"], end["beta"] = a.alpha.clone(), a.beta.clone()
    if name == "il2m":
        a.after_fit(ctx)
        end.update(init_means=a.init_means.clone(), current_means=a.current_means.clone(),
                   confidence=a.confidence.clone())
    if name == "icarl":  # herding from the stored exemplars and task 2's samples, then the class means
        a.update_memory(ctx)
        a.after_memory_update(ctx)
        end["exemplars_y"] = ctx.memory.y.clone()
        end["exemplars_x"] = ctx.memory.x.clone()
        end["means"] = a.means.clone()
    out["end"] = end
    out["predictions"] = predictions(s)
    return out


def compare(a: Tensor, b: Tensor, scale: float = 0.0) -> tuple[float, float]:
    """(max abs difference, that over the larger max magnitude, or over ``scale`` where larger):
    fp32 rounding shows as ~1e-7..1e-5."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    if a.shape != b.shape:
        return float("inf"), float("inf")
    if a.numel() == 0:
        return 0.0, 0.0
    d = float((a - b).abs().max())
    scale = max(scale, float(torch.maximum(a.abs().max(), b.abs().max())))
    return d, (d / scale if scale > 0 else d)


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Nested quantities as ``group/name`` -> tensor."""
    out: dict[str, Tensor] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = torch.as_tensor(v)
    return out


#: relative tolerance per quantity (difference over the larger magnitude): fp32 rounding of a few thousand
#: operations done in another order (FACIL's hooks and indexing, this project's fused old model); the
#: exemplars chosen and the predictions must be equal
TOLERANCE = {"loss": 1e-4, "grads": 1e-4, "end": 1e-4, "predictions": 0.0, "exemplars": 0.0}


def differences(theirs: dict[str, Any], mine: dict[str, Any]) -> list[tuple[str, float, float, float, bool]]:
    """Per quantity (each loss term, the gradients together, each end-of-task tensor, the predictions):
    (quantity, FACIL's scale, max abs difference, max relative difference, within tolerance). A gradient's
    relative difference is over the model's largest gradient: a parameter whose gradient is zero in exact
    arithmetic (a bias before BatchNorm) holds rounding noise only. A quantity only one side has counts
    as different."""
    a, b = flat(theirs), flat(mine)
    grads = [float(v.abs().max()) for k, v in a.items() if k.startswith("grads/") and v.numel()]
    scales = {"grads": max(grads, default=0.0)}
    groups: dict[str, tuple[float, float, float, bool]] = {}
    for key in sorted(set(a) | set(b)):
        group = key.split("/")[0]
        tol = TOLERANCE["exemplars" if key.startswith("end/exemplars_") else group]
        if key not in a or key not in b:
            scale, d, d_rel = 0.0, float("inf"), float("inf")
        else:
            scale = max(scales.get(group, 0.0), float(a[key].double().abs().max()) if a[key].numel() else 0.0)
            d, d_rel = compare(a[key], b[key], scales.get(group, 0.0))
        quantity = group if group in ("grads", "predictions") else key
        s0, d0, r0, ok0 = groups.get(quantity, (0.0, 0.0, 0.0, True))
        groups[quantity] = (max(s0, scale), max(d0, d), max(r0, d_rel), ok0 and d_rel <= tol)
    return [(q, *v) for q, v in groups.items()]


__all__ = ["APPROACHES", "DELIBERATE", "TOLERANCE", "Scene", "build", "compare", "config", "differences", "flat",
           "ours"]
