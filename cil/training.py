"""The one training loop every approach shares (FACIL's schedule), with the data on the device.

A task's images sit on the device as one uint8 tensor (on the host when they do not fit: each batch is
then copied over, cil.data.placement); each batch is gathered, augmented and normalised with tensor ops
there. Nothing in the per-batch path reads a value back to the host: every loss term is
summed on the device and read once per epoch, together with the validation loss the schedule needs.
What a batch computes (forward, loss, scores) is the approach's (cil.approaches.base).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable

import torch
import torch.fx.experimental.optimization as fx_optimization

from cil.approaches.base import Approach, EpochRecord, FitReport, Loss, Split, Step, TaskContext
from cil.config import ExperimentConfig, TrainConfig
from cil.data import Dataset, augment, normalize
from cil.data.placement import rows
from cil.errors import DivergedError
from cil.metrics import task_accuracies
from cil.networks import IncrementalNet


class Trainer:
    """Turns uint8 device tensors into batches and runs FACIL's schedule for one task."""

    def __init__(self, cfg: ExperimentConfig, dataset: Dataset, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        # Kept on the device: building them per batch would copy from the host every step.
        self.mean = torch.tensor(dataset.mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(dataset.std, dtype=torch.float32, device=device)
        self.augment_spec = dataset.augment
        cuda = device.type == "cuda"
        # channels_last pays on CUDA (tensor cores) and on CPU too (oneDNN: +25% for ResNet-32 here).
        self.channels_last = True
        self.autocast_dtype = torch.bfloat16 if (cuda and cfg.train.amp) else None
        # evaluation and exemplar passes only: the validation loss is a sum over batches that drives the
        # schedule, so it keeps the training batches (another batching would round it differently)
        self.eval_batch_size = cfg.train.eval_batch_size or cfg.train.batch_size

    # ---- inputs ----------------------------------------------------------------------------------
    def inputs(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 batch -> normalised float input on the device; augmented when a generator is given
        (training). A batch on the host is copied over first."""
        x = x.to(self.device, non_blocking=True)
        if generator is not None:
            x = augment(x, self.augment_spec, generator)
        x = normalize(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast with ``train.amp`` on CUDA, for the model's forward pass only: the heads
        (cil.networks), every loss term and the evaluation scores run in fp32 outside it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def batches(self, n: int, generator: torch.Generator | None, batch_size: int = 0,
                on: torch.device | None = None) -> list[torch.Tensor]:
        """Index batches of ``batch_size`` (0: train.batch_size): shuffled with the generator (training)
        or in order (evaluation), drawn on the device and moved once to ``on`` (where the data lives: a
        split kept on the host is indexed there).

        A trailing batch of one sample is dropped in training: BatchNorm cannot normalise it.
        """
        bs = batch_size or self.cfg.train.batch_size
        order = (torch.randperm(n, generator=generator, device=self.device) if generator is not None
                 else torch.arange(n, device=self.device))
        if on is not None:
            order = order.to(on)
        out = list(order.split(bs))
        if generator is not None and len(out) > 1 and out[-1].numel() == 1:
            out.pop()
        return out

    # ---- training --------------------------------------------------------------------------------
    def run_epoch(self, approach: Approach, ctx: TaskContext, data: Split, optimizer: torch.optim.Optimizer,
                  params: list[torch.nn.Parameter], loss_of: Callable[[Step], Loss], clip: bool,
                  after_step: Callable[[Step, Loss], None] | None = None) -> tuple[list[str], torch.Tensor | None]:
        """One pass over ``data`` in shuffled batches; returns the loss term names ("loss" first) and
        their sample-weighted sums, kept on the device (nothing is read back per batch).
        ``after_step`` runs after each optimizer step."""
        x, y = data
        names: list[str] = []
        sums = None
        for idx in self.batches(len(y), ctx.generator, on=x.device):
            xb, yb = self.inputs(rows(x, idx, self.device), ctx.generator), rows(y, idx, self.device)
            with self.autocast():
                step = approach.forward(ctx, xb, yb, "train")
            loss = loss_of(step)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, ctx.cfg.train.clipping)
            optimizer.step()
            if after_step is not None:
                after_step(step, loss)
            parts = torch.stack([loss.total.detach().float(), *(v.detach().float() for v in loss.terms.values())])
            if sums is None:
                names, sums = ["loss", *loss.terms], parts * len(idx)
            elif len(parts) != len(names):
                raise RuntimeError(f"{type(approach).__name__}.loss returned terms {list(loss.terms)} after "
                                   f"{names[1:]} in the same epoch: keep the same terms for a whole epoch")
            else:
                sums += parts * len(idx)
        return names, sums

    @torch.inference_mode()
    def validate(self, approach: Approach, ctx: TaskContext, data: Split) -> torch.Tensor:
        """Sample-weighted sum of the validation loss and the heads' task-aware hits over a set, as one
        device tensor ``[loss_sum, hits]`` (FACIL's validation loss and TAw accuracy; on the training set
        with ``train.eval_on_train``)."""
        x, y = data
        model = ctx.model
        model.eval()
        total = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device)
        bounds = torch.tensor(model.task_offsets[1:], device=self.device)
        head_of_column = torch.repeat_interleave(torch.arange(len(model.task_cls), device=self.device),
                                                 torch.tensor(model.task_cls, device=self.device))
        for idx in self.batches(len(y), None, on=x.device):
            xb, yb = self.inputs(rows(x, idx, self.device)), rows(y, idx, self.device)
            with self.autocast():
                step = approach.forward(ctx, xb, yb, "val")
            total += approach.validation_loss(ctx, step).float() * len(idx)
            scores = torch.cat(step.logits, dim=1).float()
            own = head_of_column == torch.bucketize(yb, bounds, right=True).unsqueeze(1)
            hits += (scores.masked_fill(~own, float("-inf")).argmax(dim=1) == yb).sum()
        return torch.stack([total, hits])

    def fit(self, approach: Approach, ctx: TaskContext, train: Split, val: Split) -> FitReport:
        """FACIL's train loop: warm-up, then SGD with lr decay on plateau and best-model restore (unless
        the approach's ``selects_best_epoch`` says no for this stage: then the last epoch's model).

        Reads the schedule from ``ctx.cfg.train`` (so a caller may re-run it with other values). Per
        epoch, one read from the device: the training loss terms, the validation loss/accuracy (and the
        training set's, with ``train.eval_on_train``). With ``train.fix_bn``, BatchNorm stays in eval mode
        in every task after the first. A non-finite loss term stops the run with
        :class:`~cil.errors.DivergedError`.
        """
        tc = ctx.cfg.train
        t, model = ctx.t, ctx.model
        start = time.perf_counter()
        if t > 0 and tc.warmup_nepochs > 0:
            self._warmup(approach, ctx)

        params = [p for p in approach.train_parameters(ctx) if p.requires_grad]
        lr = tc.lr
        optimizer = make_sgd(params, tc, lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
        select = approach.selects_best_epoch(ctx)
        best_loss, best_state, patience = float("inf"), _snapshot(model) if select else None, tc.lr_patience
        records: list[EpochRecord] = []

        def loss_of(step: Step) -> Loss:
            return approach.loss(ctx, step)

        def after_step(step: Step, loss: Loss) -> None:
            approach.after_step(ctx, step, loss)

        for epoch in range(tc.nepochs):
            epoch_start = time.perf_counter()
            approach.set_train_mode(ctx)
            if tc.fix_bn and t > 0:
                model.freeze_bn()  # FACIL's --fix-bn: after set_train_mode, so it holds for every approach
            names, sums = self.run_epoch(approach, ctx, train, optimizer, params, loss_of, approach.clip_gradients,
                                         after_step)
            has_val = len(val[1]) > 0
            parts = [] if sums is None else [sums]
            if tc.eval_on_train:
                parts.append(self.validate(approach, ctx, train))
            if has_val:
                parts.append(self.validate(approach, ctx, val))
            values = torch.cat(parts).tolist() if parts else []
            n_train = max(len(train[1]), 1)
            means = dict(zip(names, (v / n_train for v in values[: len(names)]), strict=True))
            val_loss, val_acc = ((values[-2] / len(val[1]), values[-1] / len(val[1])) if has_val else (0.0, 0.0))
            _check_finite(t, epoch + 1, means, val_loss)
            record = EpochRecord(epoch=epoch + 1, train_loss=means.get("loss", 0.0),
                                 terms={k: v for k, v in means.items() if k != "loss"}, val_loss=val_loss,
                                 val_acc_taw=val_acc, lr=lr, seconds=time.perf_counter() - epoch_start)
            if tc.eval_on_train:
                at = len(names)
                record.train_eval_loss, record.train_eval_acc_taw = values[at] / n_train, values[at + 1] / n_train
                if ctx.log:
                    ctx.log(f"  task {t} epoch {epoch + 1}: train loss {record.train_eval_loss:.4f} "
                            f"TAw acc {100 * record.train_eval_acc_taw:.1f}%")
            records.append(record)
            if ctx.after_epoch is not None:
                ctx.after_epoch(ctx, record)
            if not select:
                best_loss = val_loss  # the last epoch's: the model kept
            elif val_loss < best_loss:
                best_loss, best_state, patience = val_loss, _snapshot(model), tc.lr_patience
            else:
                patience -= 1
                if patience <= 0:
                    lr /= tc.lr_factor
                    if ctx.log:
                        ctx.log(f"  task {t} epoch {epoch + 1}: lr -> {lr:.2e}")
                    if lr < tc.lr_min:
                        break
                    patience = tc.lr_patience
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    model.load_state_dict(best_state)
            if ctx.log:
                ctx.log(f"  task {t} epoch {epoch + 1}/{tc.nepochs}: val loss {val_loss:.4f} lr {lr:.2e}")
        if select:
            model.load_state_dict(best_state)
        return FitReport(epochs=len(records), best_val_loss=best_loss, seconds=time.perf_counter() - start,
                         records=records)

    def _warmup(self, approach: Approach, ctx: TaskContext) -> None:
        """FACIL's warm-up: only the new head, on the new task's own samples (not the exemplars), with
        the approach's warm-up loss at lr * warmup_lr_factor; everything else stays in eval mode
        (BatchNorm statistics untouched) and the old model does not run."""
        tc = ctx.cfg.train
        head = ctx.model.heads[ctx.t]
        params = list(head.parameters())
        optimizer = make_sgd(params, tc, tc.lr * tc.warmup_lr_factor)
        wctx = dataclasses.replace(ctx, old_model=None)

        def loss_of(step: Step) -> Loss:
            return Loss(approach.warmup_loss(wctx, step), {})

        data = ctx.task_data("train")
        for epoch in range(tc.warmup_nepochs):
            ctx.model.eval()
            head.train()
            names, sums = self.run_epoch(approach, wctx, data, optimizer, params, loss_of, clip=True)
            if sums is not None:
                means = dict(zip(names, (v / max(len(data[1]), 1) for v in sums.tolist()), strict=True))
                _check_finite(ctx.t, epoch + 1, {f"warmup {k}": v for k, v in means.items()}, 0.0)

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self, approach: Approach, ctx: TaskContext, tests: list[Split],
                 tasks: list[int] | None = None) -> tuple[list[float], list[float]]:
        """Task-aware and task-agnostic accuracy on each given task's test set from the approach's
        evaluation scores (its first score set when it returns several); ``train.multi_softmax``
        applies to the task-agnostic one where the approach's ``multi_softmax_applies`` says so.
        ``tasks`` names the task of each set (default 0, 1, ...)."""
        return next(iter(self.evaluate_named(approach, ctx, tests, tasks).values()))

    @torch.inference_mode()
    def evaluate_named(self, approach: Approach, ctx: TaskContext, tests: list[Split],
                       tasks: list[int] | None = None) -> dict[str, tuple[list[float], list[float]]]:
        """Per score set of ``approach.eval_scores`` (``""`` when it returns one plain list), the
        task-aware and task-agnostic accuracy on each given task's test set, in the approach's order
        (one host read)."""
        ctx.model.eval()
        counts: list[dict[str, torch.Tensor]] = []
        multi = ctx.cfg.train.multi_softmax
        offsets = ctx.model.task_offsets
        for u, (x, y) in zip(range(len(tests)) if tasks is None else tasks, tests, strict=True):
            hits: dict[str, torch.Tensor] = {}
            for idx in self.batches(len(y), None, self.eval_batch_size, on=x.device):
                yb = rows(y, idx, self.device)
                with self.autocast():
                    step = approach.forward(ctx, self.inputs(rows(x, idx, self.device)), yb, "test")
                scores = approach.eval_scores(ctx, step)
                for name, s in (scores.items() if isinstance(scores, dict) else [("", scores)]):
                    taw_scores, tag_scores = s if isinstance(s, tuple) else (s, s)
                    soft = multi and approach.multi_softmax_applies(name)
                    taw, tag = task_accuracies([v.float() for v in taw_scores], yb, offsets, u, multi_softmax=soft)
                    if tag_scores is not taw_scores:
                        tag = task_accuracies([v.float() for v in tag_scores], yb, offsets, u,
                                              multi_softmax=soft)[1]
                    pair = torch.stack([taw, tag])
                    hits[name] = hits[name] + pair if name in hits else pair
            counts.append(hits)
        names = list(dict.fromkeys(n for c in counts for n in c)) or [""]
        zero = torch.zeros(2, dtype=torch.long, device=self.device)
        values = torch.stack([torch.stack([c.get(n, zero) for n in names]) for c in counts]).cpu().tolist()
        sizes = [max(len(y), 1) for _, y in tests]
        return {n: ([v[i][0] / size for v, size in zip(values, sizes, strict=True)],
                    [v[i][1] / size for v, size in zip(values, sizes, strict=True)]) for i, n in enumerate(names)}


_SGD_KWARGS = {"torch": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_sgd(params: list[torch.nn.Parameter], train: TrainConfig, lr: float, momentum: float = 0.0,
             weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD in the implementation ``train.sgd_impl`` names (bit-equal to each other on the CPU)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           **_SGD_KWARGS[train.sgd_impl])


def _check_finite(task: int, epoch: int, means: dict[str, float], val_loss: float) -> None:
    """Stop a diverged run, naming the first non-finite term (the parts before their total)."""
    ordered = [*(k for k in means if k != "loss"), *(k for k in means if k == "loss")]
    for name in ordered:
        if not math.isfinite(means[name]):
            raise DivergedError(task, epoch, name, means[name])
    if not math.isfinite(val_loss):
        raise DivergedError(task, epoch, "validation loss", val_loss)


def frozen_copy(model: IncrementalNet, fuse: bool = True) -> IncrementalNet:
    """The old model for distillation: a copy in eval mode whose parameters never train. With ``fuse``,
    BatchNorm is folded into the convolutions (eval-mode BN is affine, so the outputs are the same up to
    float rounding; the forward pass is ~15% cheaper on CPU); backbones that torch.fx cannot trace are
    kept unfused. An approach that needs the old model's layers as they are (hooks on a named layer,
    gradients w.r.t. its activations) asks for ``fuse=False``."""
    old = copy.deepcopy(model).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    if not fuse:
        return old
    try:
        old.backbone = fx_optimization.fuse(old.backbone)
    except Exception:  # noqa: BLE001 - fusion is an optimisation only; an untraceable backbone still works
        pass
    return old.to(memory_format=torch.channels_last)  # folded weights come back in the default layout


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
