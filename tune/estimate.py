"""What a sweep will cost, before it runs: device-hours and wall time per trial group and in total.

Each (trial, task) the sweep trains is priced in seconds from one of two sources, named in the output:

- **history**: earlier rows (``task_results``) of a results folder with the same approach, data set,
  network, ``train.batch_size``, ``train.nepochs``, task and device kind (else any approach with the
  rest equal): the mean ``train_seconds`` of the rows a trial trained itself;
- **calibration**: a short run of the trial's config on this machine (tasks 0 and 1, two epochs each),
  in this process. It measures each part of a task: an epoch's seconds per training image (training
  and validation), the end-of-task evaluation's seconds per class seen, the trainable's per-task work
  (its rows written to Parquet, its checkpoint saved and copied as Tune persists it) and the rest of the
  task's wall time (set-up, the approach's end-of-task work). Task 0 is priced as measured; later tasks
  as task 1 with each part scaled by what it grows with: the epochs by the task's training images (the
  union of the tasks seen for ``joint``, plus the exemplars kept), the evaluation by the classes seen.
  The timed run has neighbours: as many processes as trials run beside each one on a node (CPU
  trials) train the same short run meanwhile, so it pays the sharing of cores and memory bandwidth the
  sweep's trials pay. Grouped by what sets the cost (the approach's class, data, network, batch size,
  exemplars), so each group is timed once.

Prefix sharing (tune/prefix.py) is accounted for: a (trial, task) whose prefix key another trial of
the sweep trains first costs nothing. The wall time places the trials, in the order the sweep starts
them, each on the first free slot of ``nodes`` nodes shaped like this machine (CPUs / ``resources.cpu``,
or GPUs / ``resources.gpu``), plus :data:`SWEEP_OVERHEAD_S` for starting Ray and the trials.
"""

from __future__ import annotations

import heapq
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


@dataclass
class TaskTiming:
    """One calibrated task: its parts, each measured by the calibration run."""

    epoch_per_image: float  # an epoch's seconds (training and validation) per training image
    eval_per_class: float  # the end-of-task evaluation's seconds per class seen
    io: float  # the trainable's per-task work: the checkpoint written and copied, the rows written
    fixed: float  # the rest of the task's wall time: set-up, heads, the approach's end-of-task work


class Calibration:
    """Prices (config, task) from two short runs per cost group on this machine (see the module doc)."""

    source = "calibrated on this machine"

    def __init__(self, neighbours: int = 0) -> None:
        self.neighbours = neighbours  # other trials that run beside each one on its node (CPU trials)
        self.fits: dict[tuple[Any, ...], list[TaskTiming]] = {}
        self.sizes: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}

    def _fit(self, cfg: ExperimentConfig) -> tuple[list[TaskTiming], tuple[list[int], list[int]]]:
        group = cost_group(cfg)
        if group not in self.fits:
            from cil.loop import run

            short = cfg.replace(**{"train.nepochs": CALIBRATION_EPOCHS, "run.stop_at_task": min(2, cfg.data.num_tasks),
                                   "train.gridsearch_tasks": 0})
            if not self.fits:  # the process's first run pays one-off costs (imports, kernels): untimed
                for _ in run(short.replace(**{"train.nepochs": 1, "run.stop_at_task": 1})):
                    pass
            images, classes = self.sizes[group] = train_images(cfg)
            fits = []
            with Neighbours(short, self.neighbours):
                results = list(_timed(run(short)))
            for result, elapsed in results:
                seconds = [r.seconds for r in result.fit.records] if result.fit else []
                epoch = sum(seconds) / max(len(seconds), 1)
                evaluation = float(result.metrics.get("eval_seconds", 0.0))
                io = _per_task_io(result)
                t = result.task
                fits.append(TaskTiming(epoch_per_image=epoch / max(images[t], 1),
                                       eval_per_class=evaluation / max(sum(classes[: t + 1]), 1), io=io,
                                       fixed=max(elapsed - sum(seconds) - evaluation, 0.0)))
            self.fits[group] = fits
        return self.fits[group], self.sizes[group]

    def seconds(self, cfg: ExperimentConfig, t: int) -> float:
        """Task ``t``: task 0 as measured; later tasks as task 1, each part scaled by what it grows with
        (the epochs by the training images, the evaluation by the classes seen)."""
        fits, (images, classes) = self._fit(cfg)
        f = fits[min(t, len(fits) - 1)]
        return (f.fixed + f.io + f.eval_per_class * sum(classes[: t + 1])
                + cfg.train.nepochs * f.epoch_per_image * images[t])


def _timed(runs: Iterable[Any]) -> Iterable[tuple[Any, float]]:
    """Each task's result of a run with the seconds it took."""
    start = time.perf_counter()
    for result in runs:
        yield result, time.perf_counter() - start
        start = time.perf_counter()


class Neighbours:
    """``n`` processes that run the same short calibration over and over while the timed one runs, as
    the trials beside a trial do in the sweep (they share the node's cores and memory bandwidth)."""

    def __init__(self, cfg: ExperimentConfig, n: int) -> None:
        self.cfg, self.n, self.procs = cfg, n, []

    def __enter__(self) -> Neighbours:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        ready = [ctx.Event() for _ in range(self.n)]
        import torch

        self.procs = [ctx.Process(target=_neighbour, args=(self.cfg.to_flat(), torch.get_num_threads(), self.stop, r),
                                  daemon=True) for r in ready]
        for p in self.procs:
            p.start()
        for p, r in zip(self.procs, ready, strict=True):  # each has imported torch and started training
            while p.is_alive() and not r.wait(timeout=1.0):
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.procs:
            self.stop.set()
            for p in self.procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.terminate()


def _neighbour(flat: dict[str, Any], threads: int, stop: Any, ready: Any) -> None:
    import torch

    from cil.loop import run

    cfg = ExperimentConfig.from_dict(flat)
    torch.set_num_threads(threads)  # as the calibrating process (a trial's CPUs); the run may set its own
    first = True
    while not stop.is_set():
        for _ in run(cfg):
            if first:
                ready.set()
                first = False
            if stop.is_set():
                return


def _per_task_io(result: Any) -> float:
    """Seconds of what the trainable does after each task besides training (tune/trainable.py): its
    rows written to Parquet, its checkpoint saved and copied once more (Tune persists it)."""
    import shutil
    import tempfile

    import torch

    from cil.results import write_task

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tag = {"sweep": "calibration", "trial_id": "calibration"}
        write_task([tag | r for r in result.task_rows], [tag | r for r in result.head_rows], os.path.join(d, "rows"),
                   "calibration", result.task, [tag | r for r in result.epoch_rows])
        os.makedirs(os.path.join(d, "checkpoint"))
        torch.save({"states": [result.state]}, os.path.join(d, "checkpoint", "state.pt"))
        shutil.copytree(os.path.join(d, "checkpoint"), os.path.join(d, "persisted"))
    return time.perf_counter() - start


def train_images(cfg: ExperimentConfig) -> tuple[list[int], list[int]]:
    """Per task: the training images of an epoch (the task's training split; all tasks seen for an
    approach that sees every task's data, ``upper_bound``: joint; plus the exemplars kept from the tasks
    before, at most the budget), and the task's classes."""
    from cil.data import load_dataset, make_scenario
    from cil.memory import ExemplarMemory

    d = cfg.data
    data = load_dataset(d.dataset, d.data_root, image_size=d.image_size, fixed_class_order=d.fixed_class_order,
                        cache_dir=d.cache_dir)
    scenario = make_scenario(data, d.num_tasks, d.nc_first_task, cfg.run.seed, val_fraction=d.val_fraction)
    sizes = [len(scenario.task_split(t, "train")[1]) for t in range(d.num_tasks)]
    classes = [n for _, n in scenario.taskcla]
    memory = ExemplarMemory(cfg.memory.num_exemplars, cfg.memory.num_exemplars_per_class)
    out = []
    for t, n in enumerate(sizes):
        seen = sum(classes[:t])
        kept = min(memory.per_class_quota(seen) * seen, sum(sizes[:t]))  # the memory's own quota rule
        out.append(sum(sizes[: t + 1]) if SPECS[cfg.approach].upper_bound else n + kept)
    return out, classes


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
        # CPU trials at once on one node: the calibration runs beside as many others (GPU trials: none)
        neighbours = 0 if r.gpu > 0 else max(min(max(per_node, 1), slots) - 1, 0)
        return _estimate(spec, share, nodes, past, price, list(group_keys), per_trial, slots, neighbours)
    finally:
        if r.gpu == 0:
            torch.set_num_threads(threads)


def start_order(spec: SweepSpec, share: bool) -> list[int]:
    """The trials' indices in the order the sweep starts them (a grid with sharing: tune.prefix.spread)."""
    configs = spec.trial_configs()
    if not share or spec.search is not None:
        return list(range(len(configs)))
    from tune.prefix import spread

    index = {id(c): i for i, c in enumerate(configs)}
    return [index[id(c)] for c in spread(configs)]


def makespan(durations: list[float], slots: int) -> float:
    """When the last trial ends, each starting on the first free slot in the order given (as Tune does)."""
    free = [0.0] * max(slots, 1)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def _estimate(spec: SweepSpec, share: bool, nodes: int, past: History | None, price: float | None,
              keys: list[str], per_trial: float, slots: int, neighbours: int = 0) -> Estimate:
    calibration = Calibration(neighbours)
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
    wall = makespan([trial_seconds[i] for i in start_order(spec, share)], slots) + SWEEP_OVERHEAD_S
    return Estimate(list(groups.values()), total * per_trial / 3600, wall, slots, nodes, per_trial, price)
