"""How long trials wait for decoded images, alone and as a sweep of concurrent trials on one node; and
the peak memory of ``joint`` with its rows.

``decode``: each trial replays a run's image reads without training (every task's test split at the
start, then per task the approach's training and validation sets, as ``cil.run`` asks for them) through
the library's own scenario and approach, and reports the seconds it spent. ``--trials N`` starts N
such trials at once (seeds 0..N-1: different class orders), each with ``OMP_NUM_THREADS`` = its CPU
share, all sharing one cache folder; it prints per-trial seconds, the sweep's wall seconds and, where
the cache exists, the images the decoder decoded (its ``decodes.log``). It also runs at a commit
without the cache (``PYTHONPATH=<checkout of that commit>``), which is how the "before" figures are made.

``train``: one ``cil.run`` of the approach (a small network, one epoch) printing its accuracy rows,
peak resident memory (``ru_maxrss``: anonymous memory plus the mapped cache pages it touched) and, on
CUDA, the peak device memory.

Usage::

    python -m benchmarks.fake_imagenet /tmp/tree --classes 20 --train 40 --test 10
    python -m benchmarks.decode_cache decode /tmp/tree --approach joint --tasks 10 --trials 1 --cache /tmp/c1
    python -m benchmarks.decode_cache decode /tmp/tree --approach joint --tasks 10 --trials 4 --cache /tmp/c4
    python -m benchmarks.decode_cache train /tmp/tree --approach joint --tasks 2 --set data.device_memory_budget=0.01
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(a: argparse.Namespace, seed: int) -> dict:
    cfg = {"approach": a.approach, "data.dataset": "imagenet100", "data.data_root": a.root,
           "data.image_size": a.size, "data.num_tasks": a.tasks, "model.network": "convnet",
           "train.nepochs": 1, "run.device": a.device, "run.seed": seed}
    for item in a.set:
        key, _, value = item.partition("=")
        cfg[key] = json.loads(value) if value not in ("", "null") else None
    return cfg


def replay(a: argparse.Namespace, seed: int) -> dict:
    """One trial's image reads, in the order cil.run makes them; seconds spent in them."""
    import torch

    from cil.approaches import make_approach
    from cil.config import ExperimentConfig
    from cil.data import load_dataset, make_scenario

    cfg = ExperimentConfig.from_dict(_config(a, seed))
    d = cfg.data
    extra = {"cache_dir": a.cache} if "cache_dir" in inspect.signature(load_dataset).parameters else {}
    approach = make_approach(cfg)  # imports the approach's modules before the clock starts
    start = time.perf_counter()
    ds = load_dataset(d.dataset, d.data_root, image_size=d.image_size, **extra)
    sc = make_scenario(ds, d.num_tasks, d.nc_first_task, seed, val_fraction=d.val_fraction)
    try:
        from cil.data.placement import DeviceScenario
        dsc = DeviceScenario(sc, torch.device("cpu"))
    except ImportError:  # a commit before the cache: the loop's own DeviceScenario
        from cil.loop import DeviceScenario
        dsc = DeviceScenario(sc, torch.device("cpu"), True)
    images = sum(len(dsc.task_split(u, "test")[1]) for u in range(sc.num_tasks))
    for t in range(sc.num_tasks):
        ctx = types.SimpleNamespace(scenario=dsc, t=t, memory=types.SimpleNamespace(size=0),
                                    task_data=lambda split="train", t=t: dsc.task_split(t, split))
        images += len(approach.training_set(ctx)[1]) + len(approach.validation_set(ctx)[1])
    import cil

    return {"seed": seed, "seconds": round(time.perf_counter() - start, 2), "images_read": images,
            "code": os.path.dirname(os.path.dirname(os.path.abspath(cil.__file__)))}


def decode(a: argparse.Namespace) -> dict:
    if a.trial is not None:
        return replay(a, a.trial)
    cpus = len(os.sched_getaffinity(0))
    share = max(1, cpus // a.trials)
    env = dict(os.environ, OMP_NUM_THREADS=str(share), PYTHONPATH=os.environ.get("PYTHONPATH", ROOT))
    # run as a file, so the trials import cil from PYTHONPATH (another commit's checkout), not from the cwd
    argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    start = time.perf_counter()
    procs = [subprocess.Popen([*argv, "--trial", str(s)], env=env, stdout=subprocess.PIPE, text=True)
             for s in range(a.trials)]
    trials = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    out = {"trials": trials, "sweep_seconds": round(time.perf_counter() - start, 2), "threads_per_trial": share}
    log = os.path.join(a.cache, "decodes.log") if a.cache else None
    if log and os.path.exists(log):
        with open(log) as f:
            records = [json.loads(line) for line in f if line.strip()]
        out |= {"decoded_images": sum(r["images"] for r in records), "chunks": len(records),
                "decoder_seconds": round(sum(r["seconds"] for r in records), 2)}
    return out


def train(a: argparse.Namespace) -> dict:
    import torch

    from cil import ExperimentConfig, run

    cfg = _config(a, 0)
    if a.cache:
        cfg["data.cache_dir"] = a.cache
    start = time.perf_counter()
    rows = [[r["task"], r["eval_task"], r["acc_taw"], r["acc_tag"]]
            for result in run(ExperimentConfig.from_dict(cfg)) for r in result.task_rows]
    out = {"rows": rows, "seconds": round(time.perf_counter() - start, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "device": a.device}
    if torch.cuda.is_available() and a.device.startswith("cuda"):
        out["peak_device_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("decode", "train"))
    p.add_argument("root", help="an ImageNet-shaped tree (python -m benchmarks.fake_imagenet)")
    p.add_argument("--approach", default="joint")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--trials", type=int, default=1, help="decode: concurrent trials on this node")
    p.add_argument("--cache", default=None, help="data.cache_dir (default: the library's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="KEY=JSON config overrides")
    p.add_argument("--trial", type=int, default=None, help=argparse.SUPPRESS)  # one trial of a sweep
    a = p.parse_args(argv)
    print(json.dumps(decode(a) if a.mode == "decode" else train(a)))


if __name__ == "__main__":
    main()
