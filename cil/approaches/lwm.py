"""Learning without Memorizing (Dhar et al., CVPR 2019): LwF's distillation plus attention distillation.

With ``beta = lwm.beta`` and ``gamma = lwm.gamma`` (the paper's Eq. 3, FACIL's names):

    L = the family's loss (cil.approaches.family.formula) with beta as its distillation weight
        + gamma * attention

The family terms are LwF's (cil.approaches.lwf), over the old heads at ``loss.T`` (2). ``attention``
compares Grad-CAM maps of ``lwm.gradcam_layer`` of the old and of the current model, both for the class
the old model scores highest on each sample: each map is L2-normalised and their L1 distance averaged
over the batch. The current model's map is differentiable in its parameters (the gradient of its class
score w.r.t. the layer's activations is taken with ``create_graph``), so the term trains the model.

``lwm.facil_attention: true`` reproduces FACIL's term instead: both maps from detached hooks (a constant
that trains nothing), the current model's from a separate eval-mode pass, each model's own top class
over all of its heads, the class score averaged over the batch-by-batch block ``logits[:, classes]``
(every sample's map mixes the whole batch's classes), and unnormalised maps. The validation loss
includes the attention term in both modes, as FACIL's does; Grad-CAM needs gradients, so validation
leaves inference mode for it.

Both models' maps come from eval-mode passes, as in FACIL: in training mode BatchNorm after the layer
(ConvNet's ``bn_fc``) would mix the samples' gradients through the batch statistics, and the two models
would be compared under different normalisations. The current model therefore runs twice per training
batch (an eval-mode pass for its map, a training-mode pass for the other terms).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cil.approaches.base import Loss, Phase, Step, TaskContext
from cil.approaches.lwf import LwF
from cil.approaches.registry import LwmSection, section_defaults
from cil.config import ConfigError
from cil.networks import IncrementalNet

#: FACIL's default layer, ResNet-32's last stage; on a backbone without it, the last layer with a spatial
#: output stands for it (ConvNet: ``bns.1``)
FACIL_DEFAULT_LAYER = section_defaults("lwm")["gradcam_layer"]


def grad_cam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM maps ``[N, H, W]``: ReLU of the activation channels weighted by their mean gradient."""
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # fp32 under train.amp's autocast too
    return F.relu((weights * activations.float()).sum(dim=1))


def attention_distillation(maps: Tensor, old_maps: Tensor, normalize: bool = True) -> Tensor:
    """Batch mean of the L1 distance between two models' attention maps ``[N, H, W]``; with ``normalize``
    each vectorised map is L2-normalised first (the paper's Eq. 2), without it FACIL's raw distance."""
    a, b = maps.float().flatten(1), old_maps.float().flatten(1)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (a - b).abs().sum(dim=1).mean()


def top_class_columns(scores: Tensor, classes: Tensor) -> Tensor:
    """``scores[:, classes]`` (``[N, len(classes)]``) as a masked sum over the classes: its backward is a
    reduction, deterministic on CUDA (the indexing's backward accumulates with atomics), in fp32 under
    TF32 too (a matmul would not be), and on the CPU the same numbers as the indexing's."""
    pick = F.one_hot(classes, scores.shape[1]).to(torch.float32).T  # [classes, len(classes)]
    return (scores.float().unsqueeze(2) * pick.unsqueeze(0)).sum(dim=1)


@dataclass
class _Captured:
    value: Tensor | None = None


@contextlib.contextmanager
def capture(module: nn.Module, leaf: bool) -> Iterator[_Captured]:
    """Record ``module``'s output during a forward pass. With ``leaf``, the output is cut from the graph
    below and made a leaf that requires grad (gradients w.r.t. the activations only; needed for a frozen
    model, whose output has no graph). The rest of the network gets a copy, so an in-place op after the
    module (a ReLU) leaves the recorded activations as the module produced them."""
    captured = _Captured()

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        if leaf:
            output = output.detach().requires_grad_(True)
        captured.value = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for a while; every module's training flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def spatial_layers(backbone: nn.Module, x: Tensor) -> list[str]:
    """Names of the backbone's modules whose output on ``x`` is a 4-D map, in the order they run."""
    names: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, n=name: names.append(n)
                                       if isinstance(out, Tensor) and out.dim() == 4 else None)
               for name, m in backbone.named_modules() if name]
    try:
        with eval_mode(backbone), torch.no_grad():
            backbone(x)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(names))


def resolve_layer(backbone: nn.Module, name: str, x: Tensor) -> str:
    """The module name ``lwm.gradcam_layer`` means: an exact name, or the one module whose dotted name
    ends with it (torchvision's ResNet-18 sits under ``net.``); FACIL's default on a backbone without
    it is the last spatial layer. Anything else is a ConfigError listing the valid names."""
    valid = spatial_layers(backbone, x)
    if name in valid:
        return name
    tails = [v for v in valid if v.endswith("." + name)]
    if len(tails) == 1:
        return tails[0]
    if name == FACIL_DEFAULT_LAYER and valid and name not in dict(backbone.named_modules()):
        return valid[-1]
    raise ConfigError(f"lwm.gradcam_layer = {name!r} is not a layer of {type(backbone).__name__} with a "
                      f"spatial output; valid: {', '.join(valid)}")


class LwM(LwF):
    needs_old_model = True

    @property
    def old_model_grad(self) -> bool:
        """Grad-CAM differentiates the old model's scores w.r.t. its activations; with ``lwm.gamma: 0``
        there is no attention term, and the old model is LwF's (BatchNorm folded, no graph)."""
        return bool(self.cfg.section("lwm").gamma)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.layer: str | None = None  # the resolved module name

    def params(self, ctx: TaskContext) -> LwmSection:
        return ctx.cfg.section("lwm")

    def distillation_weight(self, ctx: TaskContext) -> float:
        return self.params(ctx).beta

    def before_task(self, ctx: TaskContext) -> None:
        """Resolve ``lwm.gradcam_layer`` on one training image, before any training."""
        x, _ = ctx.task_data("train")
        name = self.params(ctx).gradcam_layer
        self.layer = resolve_layer(ctx.model.backbone, name, ctx.trainer.inputs(x[:2]))
        if ctx.log and self.layer != name:
            ctx.log(f"lwm.gradcam_layer {name!r} is {self.layer!r} on {type(ctx.model.backbone).__name__}")

    def _module(self, model: IncrementalNet) -> nn.Module:
        return dict(model.backbone.named_modules())[self.layer]

    # ---- forward ------------------------------------------------------------------------------------
    def forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        p = self.params(ctx)
        if ctx.old_model is None or phase not in self.old_model_phases or not p.gamma:
            return super().forward(ctx, x, y, phase)  # the frozen old model builds no graph here
        with contextlib.ExitStack() as stack:
            if torch.is_inference_mode_enabled():  # validation: Grad-CAM needs autograd
                stack.enter_context(torch.inference_mode(False))
                x = x.clone()
            stack.enter_context(torch.enable_grad())
            if p.facil_attention:
                step = self._facil_forward(ctx, x, y, phase)
            else:
                step = self._forward(ctx, x, y, phase)
        return step

    def _forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        """As published: both maps for the old model's top class of each sample, the current model's
        differentiable in its parameters. Both maps come from eval-mode passes (BatchNorm on running
        statistics), so each sample's map is its own and the two models are compared alike."""
        old = ctx.old_model
        with capture(self._module(old), leaf=True) as old_act:
            old_logits, old_features = old(x, return_features=True)
        old_scores = torch.cat(old_logits, dim=1)
        top = old_scores.detach().argmax(dim=1, keepdim=True)
        (old_grad,) = torch.autograd.grad(old_scores.gather(1, top).sum(), old_act.value)
        old_map = grad_cam(old_act.value.detach(), old_grad)
        train = phase == "train"
        with eval_mode(ctx.model), capture(self._module(ctx.model), leaf=not train) as act:
            logits, features = ctx.model(x, return_features=True)
        score = torch.cat(logits[: ctx.t], dim=1).gather(1, top).sum()
        (grad,) = torch.autograd.grad(score, act.value, create_graph=train)
        cam = grad_cam(act.value, grad)
        if train:  # the loss terms other than attention come from a training-mode pass
            self._facil_train_mode(ctx)
            logits, features = ctx.model(x, return_features=True)
        else:
            logits, features, cam = [z.detach() for z in logits], features.detach(), cam.detach()
        step = Step(x, y, logits, features, [z.detach() for z in old_logits], old_features.detach())
        step.extras["attention"] = (cam, old_map)
        return step

    def _facil_cam(self, model: IncrementalNet, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """FACIL's GradCAM: the model's own top class over all heads, the mean of the [N, N] block of
        scores backpropagated, detached activations and gradients; model in eval mode."""
        with eval_mode(model), capture(self._module(model), leaf=True) as act:
            logits, features = model(x, return_features=True)
        scores = torch.cat(logits, dim=1)
        block = top_class_columns(scores, scores.detach().argmax(dim=1))
        (grad,) = torch.autograd.grad(block.mean(), act.value)
        cam = grad_cam(act.value.detach(), grad)
        return cam, [z.detach() for z in logits], features.detach()

    def _facil_forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        old_map, old_logits, old_features = self._facil_cam(ctx.old_model, x)
        cam, logits, features = self._facil_cam(ctx.model, x)
        if phase == "train":  # FACIL: the maps from an eval-mode pass, the loss from a training pass
            self._facil_train_mode(ctx)
            logits, features = ctx.model(x, return_features=True)
        step = Step(x, y, logits, features, old_logits, old_features)
        step.extras["attention"] = (cam, old_map)
        return step

    def _facil_train_mode(self, ctx: TaskContext) -> None:
        """With ``lwm.facil_fix_bn``, FACIL's ``model.train()`` after the Grad-CAM pass (BatchNorm trains
        again, whatever ``train.fix_bn`` froze)."""
        if self.params(ctx).facil_fix_bn:
            ctx.model.train()

    # ---- loss ---------------------------------------------------------------------------------------
    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        out = super().loss(ctx, step)
        maps = step.extras.get("attention")
        if maps is None:
            return out
        p = self.params(ctx)
        term = attention_distillation(*maps, normalize=not p.facil_attention)
        return Loss(out.total + p.gamma * term, {**out.terms, "attention": term})
