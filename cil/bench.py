"""``python -m cil.bench``: training throughput of the real loop, to compare with FACIL's.

Times one training epoch of task 0 (finetuning: no old model) and one of task 1 (LwF: the frozen old
model's forward included) through the same Trainer that ``cil.run`` uses, and prints one JSON line
``{"finetuning_img_s": ..., "lwf_img_s": ...}``. Run ``python -m benchmarks.facil_style_loop`` on the
same data, batch size and device beside it for the ratio (README, Performance).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from cil.config import ConfigError, ExperimentConfig
from cil.data import DataError
from cil.run import Experiment
from cil.training import frozen_copy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_epoch(exp: Experiment, t: int, old_model, limit: int) -> float:
    """Images per second of one epoch of task t (the data already resident, as in a real run)."""
    train = exp.approach.training_set(t, exp.scenario, exp.memory)
    if limit:
        train = (train[0][:limit], train[1][:limit])
    model = exp.model
    params = [p for p in exp.approach.train_parameters(model, t, exp.memory) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=exp.cfg.train.lr)
    offset = model.task_offsets[t]

    def loss_fn(out, yb, old_out):
        return exp.approach.criterion(t, out, yb, old_out, offset, False)

    gen = torch.Generator(device=exp.device).manual_seed(t)
    _sync(exp.device)
    start = time.perf_counter()
    exp.trainer._step_epoch(exp.approach, model, old_model, t, train, optimizer, params, loss_fn, gen)
    _sync(exp.device)
    return len(train[1]) / (time.perf_counter() - start)


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
    try:
        cfg = ExperimentConfig.from_dict({
            "approach": "lwf", "data.dataset": args.datasets, "data.data_root": args.data_root,
            "data.num_tasks": args.num_tasks, "model.network": args.network,
            "train.batch_size": args.batch_size, "run.device": args.device, "train.nepochs": 1})
        exp = Experiment(cfg)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = {}
    for t, key in ((0, "finetuning_img_s"), (1, "lwf_img_s")):
        old_model = None
        if t == 1:
            old_model = frozen_copy(exp.model)
        exp.add_head(t)
        if args.warmup_batches:
            _time_epoch(exp, t, old_model, args.warmup_batches * args.batch_size)
        results[key] = round(_time_epoch(exp, t, old_model, args.limit), 1)
    print(json.dumps(results | {"device": str(exp.device), "batch_size": args.batch_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
