"""What a sweep will cost, before it runs: device-hours and wall time per trial group and in total.

Each (trial, task) the sweep trains is priced in seconds from one of two sources, named in the output:

- **history**: earlier rows (``task_results``) of a results folder with the same approach, data set,
  network, ``train.batch_size``, ``train.nepochs``, task and device kind (else any approach with the
  rest equal): the mean ``train_seconds`` of the rows a trial trained itself;
- **calibration**: a short run of the trial's config on this machine (tasks 0 and 1, two epochs each),
  in this process: its epoch records price an epoch of each task, the rest of the task's wall time its
  fixed part (set-up, validation, evaluation, the end-of-task work). Later tasks are priced like task
  1, scaled by their share of the classes. Grouped by what sets the cost (the approach's class, data, network,
  batch size, exemplars), so each group is timed once.

Prefix sharing (tune/prefix.py) is accounted for: a (trial, task) whose prefix key another trial of
the sweep trains first costs nothing. The wall time spreads the trials' seconds over the slots of
``nodes`` nodes shaped like this machine (CPUs / ``resources.cpu``, or GPUs / ``resources.gpu``), at
least the longest trial, plus :data:`SWEEP_OVERHEAD_S` for starting Ray and the trials.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cil.approaches.registry import SPECS
from cil.config import ExperimentConfig
from tune.budget import device_share
from tune.spec import SEEDS_KEY, SweepSpec

SWEEP_OVERHEAD_S = 15.0  # starting a local Ray and its first worker processes (the quickstart's start-up)
CALIBRATION_EPOCHS = 2  # per task of the calibration run (tasks 0 and 1)


@dataclass
class Group:
    """A group of trials as the report groups them (approach and swept keys except the seed)."""

    name: str
    trials: int = 0
    tasks: int = 0
    shared: int = 0
    seconds: float = 0.0
    sources: set[str] = field(default_factory=set)


@dataclass
class Estimate:
    groups: list[Group]
    device_hours: float
    wall_seconds: float
    slots: int
    nodes: int
    share: float
    price: float | None = None

    def lines(self) -> list[str]:
        out = [f"estimate ({self.nodes} node{'s' if self.nodes > 1 else ''} like this one: {self.slots} trials at a "
               f"time, {self.share:g} device per trial):"]
        for g in self.groups:
            out.append(f"  {g.name}: {g.trials} trials, {g.tasks} tasks trained ({g.shared} shared), "
                       f"{g.seconds * self.share / 3600:.3g} device-hours [{', '.join(sorted(g.sources))}]")
        total = f"  total: {self.device_hours:.3g} device-hours, wall {_duration(self.wall_seconds)}"
        if self.price is not None:
            total += f", {self.device_hours * self.price:.2f} at {self.price:g} per device-hour"
        out.append(total)
        return out


def _duration(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def run_configs(spec: SweepSpec) -> list[tuple[int, ExperimentConfig]]:
    """(trial index, cil config) of every cil run of the sweep (search mode: sampled points x seeds)."""
    device = "cpu"
    out = []
    for i, config in enumerate(spec.trial_configs()):
        flat = {k: v for k, v in config.items() if not k.startswith("_")} | {"run.device": device}
        for seed in config.get(SEEDS_KEY) or [flat.get("run.seed", 0)]:
            out.append((i, ExperimentConfig.from_dict(flat | {"run.seed": seed})))
    return out


def work(spec: SweepSpec, share: bool) -> list[tuple[int, ExperimentConfig, int, bool]]:
    """(trial, config, task, shared) for every task of every run, in trial order; ``shared``: another
    run of the sweep trains this prefix first."""
    from tune.prefix import prefix_key

    env = {"estimate": "one numeric environment"}
    seen: set[str] = set()
    out = []
    for i, cfg in run_configs(spec):
        for t in range(cfg.run.stop_at_task or cfg.data.num_tasks):
            key = prefix_key(cfg, t, env)
            out.append((i, cfg, t, share and key in seen))
            seen.add(key)
    return out


def cost_group(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """What sets a task's cost, for timing each group once."""
    return (SPECS[cfg.approach].impl, cfg.data.dataset, cfg.model.network, cfg.train.batch_size,
            cfg.memory.num_exemplars, cfg.memory.num_exemplars_per_class, cfg.data.num_tasks, cfg.data.nc_first_task,
            cfg.train.eval_on_train, cfg.train.gridsearch_tasks)


class Calibration:
    """Prices (config, task) from two short runs per cost group on this machine."""

    source = "calibrated on this machine"

    def __init__(self) -> None:
        self.fits: dict[tuple[Any, ...], tuple[list[float], list[float], list[int]]] = {}

    def _fit(self, cfg: ExperimentConfig) -> tuple[list[float], list[float], list[int]]:
        group = cost_group(cfg)
        if group not in self.fits:
            from cil.loop import run

            short = cfg.replace(**{"train.nepochs": CALIBRATION_EPOCHS, "run.stop_at_task": min(2, cfg.data.num_tasks),
                                   "train.gridsearch_tasks": 0})
            if not self.fits:  # the process's first run pays one-off costs (imports, kernels): untimed
                for _ in run(short.replace(**{"train.nepochs": 1, "run.stop_at_task": 1})):
                    pass
            epoch, fixed = [], []
            start = time.perf_counter()
            for result in run(short):
                now = time.perf_counter()
                seconds = [r.seconds for r in result.fit.records] if result.fit else []
                epoch.append(sum(seconds) / max(len(seconds), 1))
                fixed.append(max(now - start - sum(seconds), 0.0))
                start = now
            self.fits[group] = (epoch, fixed, _classes(cfg))
        return self.fits[group]

    def seconds(self, cfg: ExperimentConfig, t: int) -> float:
        epoch, fixed, classes = self._fit(cfg)
        u = min(t, len(epoch) - 1)
        scale = classes[t] / classes[u] if classes[u] else 1.0
        return fixed[u] + cfg.train.nepochs * epoch[u] * scale


def _classes(cfg: ExperimentConfig) -> list[int]:
    """Classes per task (the scenario's split, without loading the data)."""
    from cil.config import KNOWN_NUM_CLASSES
    from cil.data.scenario import classes_per_task

    base, _, params = cfg.data.dataset.partition(":")
    n = KNOWN_NUM_CLASSES.get(base, 100)
    if params:
        from cil.data.builtin import parse_synthetic

        n = parse_synthetic(params)["classes"]
    return list(classes_per_task(n, cfg.data.num_tasks, cfg.data.nc_first_task))


class History:
    """Prices (config, task) from earlier rows of a results folder."""

    def __init__(self, folder: str, device_kind: str) -> None:
        import pandas as pd

        df = pd.read_parquet(os.path.join(folder, "task_results"))
        if "shared_from" in df:
            df = df[df["shared_from"].isna()]
        if "device_kind" in df:
            df = df[df["device_kind"] == device_kind]
        df = df.drop_duplicates(["trial_id", "task"])
        self.folder = folder
        self.rows = df
        self.source = f"rows of {folder}"

    def seconds(self, cfg: ExperimentConfig, t: int) -> float | None:
        want = {"dataset": cfg.data.dataset, "network": cfg.model.network, "train.batch_size": cfg.train.batch_size,
                "train.nepochs": cfg.train.nepochs, "num_tasks": cfg.data.num_tasks, "task": t}
        df = self.rows
        for key, value in want.items():
            if key not in df:
                return None
            df = df[df[key] == value]
        same = df[df["approach"] == cfg.approach] if "approach" in df else df
        pick = same if len(same) else df
        return float(pick["train_seconds"].mean()) if len(pick) else None


def estimate(spec: SweepSpec, *, share: bool = True, nodes: int = 1, history: str | None = None,
             price: float | None = None, group_keys: Iterable[str] = ("approach",)) -> Estimate:
    """The sweep's estimate (see the module doc)."""
    r = spec.resources
    per_trial = device_share(r.cpu, r.gpu)
    if r.gpu > 0:
        import torch

        per_node = math.floor(max(torch.cuda.device_count(), 1) / r.gpu)
    else:
        per_node = math.floor((os.cpu_count() or 1) / r.cpu)
    slots = max(1, nodes * max(per_node, 1))
    if spec.max_concurrent:
        slots = min(slots, spec.max_concurrent)
    past = History(history, "cuda" if r.gpu > 0 else "cpu") if history else None
    if r.gpu == 0:  # calibrate with a trial's threads (Ray gives a CPU trial as many as its CPUs)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(r.cpu)))
    try:
        return _estimate(spec, share, nodes, past, price, list(group_keys), per_trial, slots)
    finally:
        if r.gpu == 0:
            torch.set_num_threads(threads)


def _estimate(spec: SweepSpec, share: bool, nodes: int, past: History | None, price: float | None,
              keys: list[str], per_trial: float, slots: int) -> Estimate:
    calibration = Calibration()
    groups: dict[str, Group] = {}
    trial_seconds: dict[int, float] = defaultdict(float)
    trial_groups: dict[int, str] = {}
    for i, cfg, t, shared in work(spec, share):
        flat = cfg.to_flat()
        name = " ".join(f"{k}={flat.get(k)}" for k in keys) or "all"
        g = groups.setdefault(name, Group(name))
        if i not in trial_groups:
            trial_groups[i] = name
            g.trials += 1
        g.tasks += 1
        if shared:
            g.shared += 1
            continue
        seconds = past.seconds(cfg, t) if past else None
        source = past.source if seconds is not None and past else calibration.source
        if seconds is None:
            seconds = calibration.seconds(cfg, t)
        g.seconds += seconds
        g.sources.add(source)
        trial_seconds[i] += seconds
    total = sum(g.seconds for g in groups.values())
    wall = max(max(trial_seconds.values(), default=0.0), total / slots) + SWEEP_OVERHEAD_S
    return Estimate(list(groups.values()), total * per_trial / 3600, wall, slots, nodes, per_trial, price)
