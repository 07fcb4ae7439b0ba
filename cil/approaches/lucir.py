"""LUCIR (Hou et al., CVPR 2019) with FACIL's semantics, and the paper's loss family on top of it.

Cosine-normalised heads ``sigma * cos(f, w_c)`` with one learnable ``sigma`` shared by all heads, the
backbone's last ReLU removed, old heads frozen from task 1 on (with the less-forget constraint). The loss
is the family's (:func:`cil.approaches.family.formula`) with ``less_forget`` as the approach's own
distillation term, weighted by ``lamb_t = lucir.lamb * sqrt(old classes / new classes)``
(``lucir.adapt_lamb``; else ``lucir.lamb``), its ``ce_pred`` and ``bce_pred`` over all heads' scaled
cosines, plus ``lucir.lamb_mr * margin_ranking``.

``less_forget = mean(1 - cos(f, f_old))`` (with ``lucir.less_forget: false``, FACIL's ablation: the MSE
between the old heads' cosines of both models, times the number of old classes, and nothing frozen);
``kd_task`` and ``bce_kd`` run over the old heads' scaled cosines of both models (``kd_task`` at
``loss.T``); ``margin_ranking`` asks each old-class sample's own cosine to beat its top ``lucir.K``
new-class cosines by ``lucir.dist``. As in FACIL: no gradient clipping, warm-up on the new head's
unscaled cosines, validation loss = the cross-entropy alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cil import losses
from cil.approaches.base import Approach, Loss, Phase, Step, TaskContext, warn_without_exemplars
from cil.approaches.registry import LucirSection
from cil.config import ConfigError, ExperimentConfig
from cil.networks import CosineLinear, IncrementalNet, ResNet18, ResNet32, full_precision


class LUCIR(Approach):
    needs_old_model = True
    old_model_phases = ("train",)  # FACIL validates LUCIR on the cross-entropy alone
    clip_gradients = False

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__(cfg)
        warn_without_exemplars(cfg, "LUCIR")
        self._params: tuple[ExperimentConfig, LucirSection] | None = None

    def params(self, ctx: TaskContext) -> LucirSection:
        """The ``lucir.*`` values of ctx's config (built once per config, not per batch)."""
        if self._params is None or self._params[0] is not ctx.cfg:
            self._params = (ctx.cfg, ctx.cfg.section("lucir"))
        return self._params[1]

    def lamb_t(self, ctx: TaskContext) -> float:
        """LUCIR's adaptive weight (Eq. 7): lamb * sqrt(old classes / new classes)."""
        p = self.params(ctx)
        if not p.adapt_lamb or ctx.t == 0:
            return p.lamb
        return p.lamb * math.sqrt(ctx.num_old_classes / ctx.num_new_classes)

    # ---- structure ------------------------------------------------------------------------------------
    def prepare_model(self, model: IncrementalNet) -> None:
        """Features may be negative (LUCIR Sec. 4.1): the backbone's last ReLU goes; with
        ``lucir.facil_relu`` the one FACIL removes (``layer3[-1]``'s on a ResNet, none otherwise)."""
        if not self.cfg.section("lucir").facil_relu:
            model.set_last_relu(False)
        elif isinstance(model.backbone, ResNet18):
            model.backbone.layer3_relu = False
        elif isinstance(model.backbone, ResNet32):
            model.set_last_relu(False)

    def make_head(self, model: IncrementalNet, t: int, n_classes: int) -> nn.Module:
        sigma = model.heads[t - 1].sigma if t > 0 else None  # one sigma shared by every head
        return CosineLinear(model.out_dim, n_classes, sigma)

    def before_task(self, ctx: TaskContext) -> None:
        p = self.params(ctx)
        if ctx.t == 0:
            return
        if p.margin_ranking and p.K > ctx.num_new_classes:
            raise ConfigError(f"lucir.K = {p.K} is not valid: task {ctx.t} has only {ctx.num_new_classes} "
                              f"classes to take hard negatives from (use lucir.K <= {ctx.num_new_classes})")
        if p.less_forget:
            for head in ctx.model.heads[: ctx.t]:
                for param in head.parameters():
                    param.requires_grad_(False)
            ctx.model.heads[ctx.t].sigma.requires_grad_(True)  # shared: frozen with the old heads above

    def train_parameters(self, ctx: TaskContext) -> Iterable[nn.Parameter]:
        if self.params(ctx).less_forget:
            return [*ctx.model.backbone.parameters(), *ctx.model.heads[ctx.t].parameters()]
        return ctx.model.parameters()

    # ---- forward and losses ---------------------------------------------------------------------------
    @staticmethod
    def _heads(model: IncrementalNet, features: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        with full_precision(features.device.type):  # train.amp: the cosine heads in fp32
            cosines = [head.cosine(features) for head in model.heads]
        return [head.sigma * c for head, c in zip(model.heads, cosines, strict=True)], cosines

    def forward(self, ctx: TaskContext, x: Tensor, y: Tensor, phase: Phase) -> Step:
        step_old = {}
        if ctx.old_model is not None and phase in self.old_model_phases:
            with torch.no_grad():
                old_features = ctx.old_model.features(x)
                old_logits, old_cosines = self._heads(ctx.old_model, old_features)
            step_old = {"old_logits": old_logits, "old_features": old_features}
        features = ctx.model.features(x)
        logits, cosines = self._heads(ctx.model, features)
        step = Step(x, y, logits, features, **step_old)
        step.extras["cosines"] = cosines
        if step_old:
            step.extras["old_cosines"] = old_cosines
        return step

    def loss(self, ctx: TaskContext, step: Step) -> Loss:
        p, w, t = self.params(ctx), ctx.cfg.loss, ctx.t
        scores = torch.cat(step.logits, dim=1).float()
        ce = F.cross_entropy(scores, step.y)
        terms = {"ce_pred": ce}
        loss = ce
        if w.w_bce_pred:  # the paper's lucir-br2: over all heads, unweighted by lamb
            terms["bce_pred"] = losses.bce_pred(scores, step.y)
            loss = loss + w.w_bce_pred * terms["bce_pred"]
        if t == 0 or step.old_features is None:
            return Loss(loss, terms)
        new_old, old = step.logits[:t], step.old_logits[:t]
        if p.less_forget:
            own_name, own = "less_forget", lambda: losses.less_forget(step.features, step.old_features)
        else:
            def own() -> Tensor:
                now = torch.cat(step.extras["cosines"][:t], dim=1).float()
                before = torch.cat(step.extras["old_cosines"][:t], dim=1).float()
                return F.mse_loss(now, before) * ctx.num_old_classes
            own_name = "cosine_mse"
        distill = losses.family_distillation(new_old, old, w, (own_name, own), terms)
        loss = loss + self.lamb_t(ctx) * distill
        if p.margin_ranking and p.lamb_mr:
            cosines = torch.cat(step.extras["cosines"], dim=1).float()
            terms["margin_ranking"] = losses.margin_ranking(cosines, step.y, ctx.num_old_classes, p.K, p.dist)
            loss = loss + p.lamb_mr * terms["margin_ranking"]
        return Loss(loss, terms)

    def validation_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        return F.cross_entropy(torch.cat(step.logits, dim=1).float(), step.y)

    def warmup_loss(self, ctx: TaskContext, step: Step) -> Tensor:
        """FACIL's LUCIR warms the new head up on its unscaled cosines."""
        return F.cross_entropy(step.extras["cosines"][ctx.t].float(), step.y - ctx.offset)
