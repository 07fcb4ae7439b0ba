"""The incremental loop: train task after task, yield results and a resumable state after each.

Every random draw of task t comes from generators seeded by (seed, t), and the old model of task t+1
is the model after task t, so the state after a task is just the model, the memory, the approach's own
state and the results so far: resuming from it gives the numbers of an uninterrupted run. The order in
which the loop calls an approach's hooks is described in cil.approaches.base.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cil import metrics, numerics
from cil.approaches import make_approach
from cil.approaches.base import TaskContext, task_seed, train_task
from cil.config import MACHINE_KEYS, ExperimentConfig
from cil.data import Dataset, load_dataset, make_scenario
from cil.data.placement import DeviceScenario, memory_budget
from cil.device import apply_numerics, check_amp, oom_error, provenance
from cil.gridsearch import GridSearch, TaskSearch
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet, make_backbone
from cil.results_schema import TERM_PREFIX, config_values
from cil.training import EpochRecord, FitReport, Trainer, frozen_copy

STATE_VERSION = 2  # 2: the approach's own state ("approach") joined the model and the memory
Log = Callable[[str], None]
AfterEpoch = Callable[[TaskContext, EpochRecord], None]


@dataclass
class TaskResult:
    """What one trained task produced. ``state`` is torch.save-able and weights_only-loadable."""

    task: int
    task_rows: list[dict[str, Any]]
    head_rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    state: dict[str, Any] = field(repr=False)
    acc_taw: np.ndarray = field(repr=False)
    acc_tag: np.ndarray = field(repr=False)
    fit: FitReport | None = field(default=None, repr=False)
    #: the accuracy matrices of an approach's other score sets, by column name (``acc_taw_heads``)
    acc_other: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    gridsearch: TaskSearch | None = field(default=None, repr=False)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)  # the epochs table: one row per epoch


class Experiment:
    """Everything built once per run: data, scenario, model, approach, memory, trainer."""

    def __init__(self, cfg: ExperimentConfig, log: Log | None = None, after_epoch: AfterEpoch | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.after_epoch = after_epoch
        numerics.apply(cfg.run.threads, cfg.run.cpu_isa)  # before the run's first kernel
        self.device = torch.device(cfg.resolved_device())
        check_amp(cfg.train.amp, self.device)
        apply_numerics(cfg.run.deterministic, cfg.train.tf32, cfg.train.cudnn_benchmark, self.device)
        d = cfg.data
        self.dataset: Dataset = load_dataset(d.dataset, d.data_root, image_size=d.image_size,
                                             fixed_class_order=d.fixed_class_order, augment=d.augment,
                                             cache_dir=d.cache_dir)
        scenario = make_scenario(self.dataset, d.num_tasks, d.nc_first_task, cfg.run.seed,
                                 val_fraction=d.val_fraction)
        self.scenario = DeviceScenario(scenario, self.device, d.on_device,
                                       memory_budget(self.device, d.device_memory_budget),
                                       stop=cfg.run.stop_at_task or None, log=log)
        torch.manual_seed(cfg.run.seed)
        backbone, dim = make_backbone(cfg.model.network, self.dataset.channels, self.dataset.image_size)
        self.model = IncrementalNet(backbone, dim).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.approach = make_approach(cfg)
        self.approach.prepare_model(self.model)
        m = cfg.memory
        self.memory = ExemplarMemory(m.num_exemplars, m.num_exemplars_per_class, m.selection)
        self.trainer = Trainer(cfg, self.dataset, self.device)
        if cfg.train.compile:  # the backbone only: heads are added per task (state_dict keys unchanged)
            self.model.backbone.compile()
        #: what ran (cil.results_schema.PROVENANCE): a column of every task_results row
        self.provenance = provenance(self.device, self.trainer.autocast_dtype is not None, cfg.to_flat())

    def add_head(self, t: int) -> None:
        """Task t's head, built by the approach from a generator seeded by (seed, t)."""
        torch.manual_seed(task_seed(self.cfg.run.seed, t, 0))
        n = self.scenario.taskcla[t][1]
        self.model.add_head(n, self.approach.make_head(self.model, t, n))
        self.model.heads[t].to(self.device)

    def begin_task(self, t: int) -> TaskContext:
        """The old model (the model after task t-1, when the approach uses one), task t's head, and the
        context every hook of task t receives."""
        old_model = None
        if self.approach.needs_old_model and t > 0:
            old_model = frozen_copy(self.model, fuse=not self.approach.old_model_grad)
            if self.cfg.train.compile:  # a copy is not compiled
                old_model.backbone.compile()
        self.add_head(t)
        gen = torch.Generator(device=self.device).manual_seed(task_seed(self.cfg.run.seed, t, 1))
        return TaskContext(t=t, cfg=self.cfg, model=self.model, old_model=old_model, memory=self.memory,
                           scenario=self.scenario, device=self.device, generator=gen, trainer=self.trainer,
                           log=self.log, after_epoch=self.after_epoch)


def _validate_state(cfg: ExperimentConfig, state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"state version {state.get('version')!r} is not supported (expected {STATE_VERSION})")
    # where a run happens, and where it stops (a run stopped early continues with a later stop), may differ
    saved = {k: v for k, v in state["config"].items() if k not in (*MACHINE_KEYS, "run.stop_at_task")}
    now = {k: v for k, v in cfg.to_flat().items() if k in saved}
    diff = sorted(k for k in saved if saved[k] != now.get(k))
    if diff:
        raise ValueError("the state was saved by a different experiment config; differing keys: "
                         + ", ".join(f"{k} ({saved[k]!r} != {now.get(k)!r})" for k in diff))


def run(cfg: ExperimentConfig, state: dict[str, Any] | None = None, *,
        log: Log | None = None, after_epoch: AfterEpoch | None = None) -> Iterator[TaskResult]:
    """Train every task of the scenario in turn (or the first ``run.stop_at_task``), yielding after each.

    Pass a ``state`` yielded earlier (possibly saved and loaded with ``weights_only=True``) to continue
    with the next task. ``after_epoch(ctx, record)`` is called after every training epoch (progress
    displays; see ``TaskContext.after_epoch``). CUDA running out of memory is a
    :class:`~cil.device.CudaOutOfMemoryError` (a permanent error naming the allocator's figures and the fix).
    """
    try:
        yield from _run(cfg, state, log, after_epoch)
    except torch.OutOfMemoryError as err:
        raise oom_error(err) from err


def _run(cfg: ExperimentConfig, state: dict[str, Any] | None, log: Log | None,
         after_epoch: AfterEpoch | None) -> Iterator[TaskResult]:
    if state is not None:
        _validate_state(cfg, state)
    exp = Experiment(cfg, log, after_epoch)
    T = exp.scenario.num_tasks
    acc_taw = np.zeros((T, T))
    acc_tag = np.zeros((T, T))
    acc_other: dict[str, np.ndarray] = {}  # column name -> matrix, for an approach's other score sets
    seconds: list[float] = []
    start_task = 0
    if state is not None:
        start_task = int(state["next_task"])
        for t in range(start_task):
            exp.add_head(t)
        exp.model.load_state_dict(state["model"])
        exp.memory.load_state_dict(state["memory"])
        exp.approach.load_state_dict(state["approach"])
        acc_taw[:start_task] = np.asarray(state["acc_taw"], dtype=float)
        acc_tag[:start_task] = np.asarray(state["acc_tag"], dtype=float)
        for column, rows in state.get("acc_other", {}).items():
            acc_other[column] = np.zeros((T, T))
            acc_other[column][:start_task] = np.asarray(rows, dtype=float)
        seconds = [float(s) for s in state["train_seconds"]]
    search = GridSearch(cfg) if cfg.train.gridsearch_tasks > 0 else None
    if search is not None and state is not None:
        search.load_state_dict(state["gridsearch"])

    flat = cfg.to_flat()
    row_config = config_values(flat)  # run.threads as text: one Parquet type across trials
    tests: list[tuple[torch.Tensor, torch.Tensor]] = [exp.scenario.task_split(u, "test") for u in range(T)]
    for t in range(start_task, cfg.run.stop_at_task or T):
        ctx = exp.begin_task(t)
        chosen = None
        if search is not None:
            ctx, chosen = search.run_task(exp.approach, ctx)
        report = train_task(exp.approach, ctx)
        seconds.append(report.seconds)
        eval_start = time.perf_counter()
        named = exp.trainer.evaluate_named(exp.approach, ctx, tests[: t + 1])
        (taw, tag), *others = named.values()
        acc_taw[t, : t + 1], acc_tag[t, : t + 1] = taw, tag
        for name, (taw, tag) in zip(list(named)[1:], others, strict=True):
            for column, values in ((f"acc_taw_{name}", taw), (f"acc_tag_{name}", tag)):
                acc_other.setdefault(column, np.zeros((T, T)))[t, : t + 1] = values
        del ctx  # the old model goes with it
        result = _task_result(cfg, flat, row_config, exp, t, acc_taw, acc_tag, acc_other, seconds,
                              time.perf_counter() - eval_start, search, chosen)
        result.fit = report
        result.epoch_rows = epoch_rows(cfg, t, report)
        yield result


def epoch_rows(cfg: ExperimentConfig, t: int, report: FitReport) -> list[dict[str, Any]]:
    """Task t's rows of the epochs table (cil.results_schema.EPOCH_COLUMNS), one per epoch of its FitReport;
    each loss term's mean is a column ``term.<name>``."""
    ident = {"approach": cfg.approach, "seed": cfg.run.seed, "task": t}
    return [ident | {"epoch": r.epoch, "train_loss": r.train_loss, "val_loss": r.val_loss,
                     "val_acc_taw": r.val_acc_taw, "lr": r.lr, "seconds": r.seconds,
                     "train_eval_loss": r.train_eval_loss, "train_eval_acc_taw": r.train_eval_acc_taw}
            | {TERM_PREFIX + name: value for name, value in r.terms.items()}
            for r in report.records]


def _task_result(cfg: ExperimentConfig, flat: dict[str, Any], row_config: dict[str, Any], exp: Experiment, t: int,
                 acc_taw: np.ndarray,
                 acc_tag: np.ndarray, acc_other: dict[str, np.ndarray], seconds: list[float],
                 eval_seconds: float, search: GridSearch | None, chosen: TaskSearch | None) -> TaskResult:
    forg_taw, forg_tag = metrics.forgetting(acc_taw[: t + 1, : t + 1]), metrics.forgetting(acc_tag[: t + 1, : t + 1])
    classes_seen = sum(n for _, n in exp.scenario.taskcla[: t + 1])
    ident = {"approach": cfg.approach, "seed": cfg.run.seed}
    common = ident | {"dataset": cfg.data.dataset, "num_tasks": exp.scenario.num_tasks,
                      "network": cfg.model.network, "task": t, "classes_seen": classes_seen,
                      "train_seconds": seconds[t]} | exp.provenance
    task_rows = [common | {"eval_task": u, "acc_taw": float(acc_taw[t, u]), "acc_tag": float(acc_tag[t, u]),
                           "forg_taw": float(forg_taw[t, u]), "forg_tag": float(forg_tag[t, u])}
                 | {column: float(mat[t, u]) for column, mat in acc_other.items()} | row_config
                 | ({} if chosen is None else chosen.columns()) for u in range(t + 1)]
    head_rows = [ident | {"task": t, "head": h, "weight_norm": float(norm), "bias_mean": float(bias)}
                 for h, (norm, bias) in enumerate(exp.model.head_stats())]
    summary = {
        "task": t, "classes_seen": classes_seen,
        "avg_acc_taw": metrics.average_accuracy(acc_taw, t), "avg_acc_tag": metrics.average_accuracy(acc_tag, t),
        "avg_inc_acc_taw": metrics.average_incremental_accuracy(acc_taw, t),
        "avg_inc_acc_tag": metrics.average_incremental_accuracy(acc_tag, t),
        "forg_taw": metrics.average_forgetting(forg_taw, t), "forg_tag": metrics.average_forgetting(forg_tag, t),
        "train_seconds": seconds[t], "eval_seconds": eval_seconds, "num_tasks": exp.scenario.num_tasks,
        "last_task": (cfg.run.stop_at_task or exp.scenario.num_tasks) - 1,  # the run ends after it
    }
    state = {
        "version": STATE_VERSION, "config": {k: v for k, v in flat.items()}, "next_task": t + 1,
        "model": {k: v.detach().cpu().clone() for k, v in exp.model.state_dict().items()},
        "memory": exp.memory.state_dict(),
        "approach": exp.approach.state_dict(),
        "gridsearch": {} if search is None else search.state_dict(),
        "acc_taw": acc_taw[: t + 1].tolist(), "acc_tag": acc_tag[: t + 1].tolist(),
        "acc_other": {column: mat[: t + 1].tolist() for column, mat in acc_other.items()},
        "train_seconds": list(seconds),
    }
    return TaskResult(task=t, task_rows=task_rows, head_rows=head_rows, metrics=summary, state=state,
                      acc_taw=acc_taw.copy(), acc_tag=acc_tag.copy(),
                      acc_other={column: mat.copy() for column, mat in acc_other.items()}, gridsearch=chosen)
