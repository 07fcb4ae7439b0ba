"""``python -m cil.bench``: training throughput of the real loop, to compare with FACIL's.

Times epochs of task 0 (finetuning: no old model), of task 1 of LwF (the frozen old model's forward
included) and of task 1 of LUCIR (cosine heads, less-forget and margin-ranking terms) through the same
Trainer that ``cil.run`` uses, and prints one JSON line
``{"finetuning_img_s": ..., "lwf_img_s": ..., "lucir_img_s": ..., "lucir_over_lwf": ..., "window": ...}``
(``lucir_over_lwf``: the LUCIR epoch's time over the LwF epoch's). Run ``python -m benchmarks.facil_style_loop``
on the same data, batch size and device beside it for the ratio (docs/performance.md, docs/gpu.md).

The timed window (:class:`Window`, shared with the FACIL-style loop): in each of ``--epochs`` epochs the
first ``--warmup-batches`` batches run untimed (CUDA handles, lazy kernel loading, cuDNN's choice, the
FACIL loop's DataLoader workers starting); the timer starts after them (the device synchronised) and
stops after the epoch's last batch (synchronised); the rate reported is the median over the epochs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import torch
import yaml

from cil.approaches.base import TaskContext
from cil.config import ConfigError, ExperimentConfig
from cil.data import DataError
from cil.loop import Experiment
from cil.training import make_sgd


@dataclass(frozen=True)
class Window:
    """What both benchmarks time: per epoch, the batches after the first ``warmup_batches``; the median
    images per second over ``epochs`` epochs."""

    warmup_batches: int = 3
    epochs: int = 3
    statistic: str = "median"

    def describe(self) -> dict[str, object]:
        return asdict(self) | {"timer_starts": "after the warm-up batches, device synchronised",
                               "timer_stops": "after the epoch's last batch, device synchronised"}

    def rate(self, per_epoch: list[tuple[int, float]]) -> float:
        """Median images per second of the timed parts ``(images, seconds)`` of each epoch."""
        return statistics.median(n / s for n, s in per_epoch)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_window_arguments(p: argparse.ArgumentParser) -> None:
    """The flags both benchmarks share (same names, same defaults)."""
    w = Window()
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda, cuda:N")
    p.add_argument("--warmup-batches", type=int, default=w.warmup_batches,
                   help="untimed batches at the start of every epoch")
    p.add_argument("--epochs", type=int, default=w.epochs, help="timed epochs per task (the median is reported)")
    p.add_argument("--limit", type=int, default=0, help="cap images per epoch, warm-up included (0: the whole task)")


def _time_epochs(exp: Experiment, ctx: TaskContext, window: Window, limit: int) -> float:
    """Images per second over the window, the data already resident (as in a real run)."""
    a = exp.approach
    x, y = a.training_set(ctx)
    if limit:
        x, y = x[:limit], y[:limit]
    cut = window.warmup_batches * exp.cfg.train.batch_size
    if cut >= len(y):
        raise ConfigError(f"--warmup-batches {window.warmup_batches} of {exp.cfg.train.batch_size} leave no "
                          f"image of {len(y)} to time: lower it or raise --limit")
    params = [p for p in a.train_parameters(ctx) if p.requires_grad]
    optimizer = make_sgd(params, exp.cfg.train, exp.cfg.train.lr)
    a.set_train_mode(ctx)
    timed = []
    for _ in range(window.epochs):
        exp.trainer.run_epoch(a, ctx, (x[:cut], y[:cut]), optimizer, params, lambda step: a.loss(ctx, step),
                              a.clip_gradients)
        synchronize(exp.device)
        start = time.perf_counter()
        exp.trainer.run_epoch(a, ctx, (x[cut:], y[cut:]), optimizer, params, lambda step: a.loss(ctx, step),
                              a.clip_gradients)
        synchronize(exp.device)
        timed.append((len(y) - cut, time.perf_counter() - start))
    return window.rate(timed)


def _time_task(exp: Experiment, t: int, window: Window, limit: int) -> float:
    ctx = exp.begin_task(t)
    exp.approach.before_task(ctx)
    return _time_epochs(exp, ctx, window, limit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cil.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="cifar100")
    p.add_argument("--data-root", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--network", default="resnet32")
    p.add_argument("--approaches", default="lwf,lucir", help="lwf (finetuning and LwF), lucir, or both")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set train.amp=true --set train.compile=true")
    add_window_arguments(p)
    args = p.parse_args(argv)
    base = {"data.dataset": args.datasets, "data.data_root": args.data_root, "data.num_tasks": args.num_tasks,
            "model.network": args.network, "train.batch_size": args.batch_size, "run.device": args.device,
            "train.nepochs": 1}
    for item in args.set:
        key, _, raw = item.partition("=")
        base[key.strip()] = yaml.safe_load(raw)
    window = Window(args.warmup_batches, args.epochs)
    results: dict[str, object] = {}
    try:
        for approach in args.approaches.split(","):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # LUCIR's "expected to use exemplars": the timing does not care
                exp = Experiment(ExperimentConfig.from_dict(base | {"approach": approach}))
            if approach == "lwf":
                results["finetuning_img_s"] = round(_time_task(exp, 0, window, args.limit), 1)
            else:
                exp.begin_task(0)
            results[f"{approach}_img_s"] = round(_time_task(exp, 1, window, args.limit), 1)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "lwf_img_s" in results and "lucir_img_s" in results:
        results["lucir_over_lwf"] = round(results["lwf_img_s"] / results["lucir_img_s"], 2)
    print(json.dumps(results | {"device": str(exp.device), "batch_size": args.batch_size,
                                "window": window.describe(), "config": {k: v for k, v in base.items()
                                                                         if k not in ("data.data_root",)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
