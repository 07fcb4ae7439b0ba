"""``python -m cil.bench``: training throughput of the real loop, to compare with FACIL's.

Times one training epoch of task 0 (finetuning: no old model), one of task 1 of LwF (the frozen old
model's forward included) and one of task 1 of LUCIR (cosine heads, less-forget and margin-ranking
terms) through the same Trainer that ``cil.run`` uses, and prints one JSON line
``{"finetuning_img_s": ..., "lwf_img_s": ..., "lucir_img_s": ..., "lucir_over_lwf": ...}``
(``lucir_over_lwf``: the LUCIR epoch's time over the LwF epoch's). Run ``python -m benchmarks.facil_style_loop`` on the
same data, batch size and device beside it for the ratio (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import torch

from cil.approaches.base import TaskContext
from cil.config import ConfigError, ExperimentConfig
from cil.data import DataError
from cil.loop import Experiment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_epoch(exp: Experiment, ctx: TaskContext, limit: int) -> float:
    """Images per second of one epoch of ctx's task (the data already resident, as in a real run)."""
    a = exp.approach
    train = a.training_set(ctx)
    if limit:
        train = (train[0][:limit], train[1][:limit])
    params = [p for p in a.train_parameters(ctx) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=exp.cfg.train.lr)
    a.set_train_mode(ctx)
    _sync(exp.device)
    start = time.perf_counter()
    exp.trainer.run_epoch(a, ctx, train, optimizer, params, lambda step: a.loss(ctx, step), a.clip_gradients)
    _sync(exp.device)
    return len(train[1]) / (time.perf_counter() - start)


def _time_task(exp: Experiment, t: int, limit: int, warmup: int) -> float:
    ctx = exp.begin_task(t)
    exp.approach.before_task(ctx)
    if warmup:
        _time_epoch(exp, ctx, warmup)
    return _time_epoch(exp, ctx, limit)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cil.bench", description=__doc__)
    p.add_argument("--datasets", default="cifar100")
    p.add_argument("--data-root", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--network", default="resnet32")
    p.add_argument("--limit", type=int, default=0, help="cap images per epoch (0: the whole task)")
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed batches first (CUDA kernels, caches)")
    args = p.parse_args(argv)
    base = {"data.dataset": args.datasets, "data.data_root": args.data_root, "data.num_tasks": args.num_tasks,
            "model.network": args.network, "train.batch_size": args.batch_size, "run.device": args.device,
            "train.nepochs": 1}
    warmup = args.warmup_batches * args.batch_size
    results = {}
    try:
        for approach in ("lwf", "lucir"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # LUCIR's "expected to use exemplars": the timing does not care
                exp = Experiment(ExperimentConfig.from_dict(base | {"approach": approach}))
            if approach == "lwf":
                results["finetuning_img_s"] = round(_time_task(exp, 0, args.limit, warmup), 1)
            else:
                exp.begin_task(0)
            results[f"{approach}_img_s"] = round(_time_task(exp, 1, args.limit, warmup), 1)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results["lucir_over_lwf"] = round(results["lwf_img_s"] / results["lucir_img_s"], 2)
    print(json.dumps(results | {"device": str(exp.device), "batch_size": args.batch_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
