"""FACIL's "realistic" hyper-parameter search, run inside a task before the task trains.

For each task ``t < train.gridsearch_tasks`` (config section ``gridsearch.*``):

1. Maximal plasticity: a finetuning copy of the model (without exemplars, as in FACIL's search) trains
   task t once per candidate learning rate; the lr with the best validation TAw accuracy on task t wins
   (ties: the first tried). Candidates: ``gridsearch.lr_first`` at task 0; later, the
   ``gridsearch.lr_searches`` largest values of ``gridsearch.lr`` below task 0's choice.
2. Stability decay (t >= 1, approaches whose registry entry declares a stability knob): a copy of the
   approach, its model and its memory trains task t with the chosen lr and the knob at
   ``knob_start``, ``knob_start * hparam_decay``, ...; the first value whose validation TAw accuracy is
   at least ``(1 - acc_drop_thr)`` times finetuning's best wins. When ``max_num_searches`` values all
   lose too much, FACIL decays once more and takes that value untested; so does this search.

The task then trains once, with the chosen values, through the approach's usual hooks. Tasks after
the searched ones keep the last chosen values (FACIL sets them on the approach, where they stay);
task 0 keeps the knob's config value (there is nothing to forget yet, so FACIL does not search it).

Determinism: every candidate of a phase draws from one generator seed derived from (seed, task,
stream), the same for each candidate (FACIL reseeds before each) and distinct from the task's own
training draws, which the search therefore leaves untouched. The values carried across tasks are part
of the resumable state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cil.approaches import approach_class
from cil.approaches.base import Approach, TaskContext, train_task
from cil.approaches.registry import LOSS_PRESET_KEYS, SECTIONS, SPECS
from cil.config import ExperimentConfig, GridSearchConfig
from cil.memory import ExemplarMemory
from cil.results_schema import GRIDSEARCH_COLUMNS

#: generator streams of the candidate trainings (see TaskContext.new_generator)
LR_STREAM = 101
KNOB_STREAM = 102


class Trial(NamedTuple):
    """One candidate training: the value tried and its validation TAw accuracy on the task."""

    value: float
    val_acc: float


@dataclass
class TaskSearch:
    """What the search decided for one task: the lr and knob value the task trained with, and the
    candidates behind them (empty for a task after the searched ones)."""

    task: int
    searched: bool
    lr: float
    knob: str | None
    knob_value: float | None
    ft_acc: float | None = None
    lr_trials: list[Trial] = field(default_factory=list)
    knob_trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    def columns(self) -> dict[str, Any]:
        """The task's result columns (cil.results_schema.GRIDSEARCH, one value per task, repeated on the
        task's rows); the trace is JSON of the trials."""
        trace = {"lr": [list(tr) for tr in self.lr_trials], "knob": [list(tr) for tr in self.knob_trials]}
        return dict(zip(GRIDSEARCH_COLUMNS, (self.searched, self.lr, self.knob, self.knob_value, self.ft_acc,
                                  json.dumps(trace), self.seconds), strict=True))


# ---- the protocol's decisions (pure) --------------------------------------------------------------------

def lr_candidates(g: GridSearchConfig, t: int, lr_first: float | None) -> list[float]:
    """Task 0: ``g.lr_first`` as given. Later: the ``g.lr_searches`` largest of ``g.lr`` below task 0's
    chosen lr, largest first (the config guarantees at least one)."""
    if t == 0 or lr_first is None:
        return list(g.lr_first)
    return sorted((lr for lr in g.lr if lr < lr_first), reverse=True)[: g.lr_searches]


def pick_lr(candidates: list[float], accuracy: Callable[[float], float]) -> tuple[float, float, list[Trial]]:
    """The candidate with the best accuracy (the first on ties), its accuracy and every trial.
    (FACIL starts from accuracy 0 with lr 0, so a task where every candidate scores 0 trained at lr 0.)"""
    trials = [Trial(lr, accuracy(lr)) for lr in candidates]
    best = max(trials, key=lambda tr: tr.val_acc)  # max keeps the first of equal values
    return best.value, best.val_acc, trials


def decay_knob(start: float, decay: float, max_num_searches: int, floor: float,
               accuracy: Callable[[float], float]) -> tuple[float, list[Trial]]:
    """FACIL's stability decay: try ``start``, ``start * decay``, ... and keep the first value whose
    accuracy is at least ``floor``; after ``max_num_searches`` failures, one more decay, untested."""
    value, trials = start, []
    for _ in range(max_num_searches):
        acc = accuracy(value)
        trials.append(Trial(value, acc))
        if acc >= floor:
            return value, trials
        value *= decay
    return value, trials


# ---- the search inside a run ------------------------------------------------------------------------------

def finetuning_config(cfg: ExperimentConfig, **dotted: Any) -> ExperimentConfig:
    """The finetuning twin of ``cfg`` used by the lr search: the same data, model and schedule, no
    exemplars (FACIL's search finetunes without them), the approach's own keys dropped."""
    owned = {f"loss.{k}" for k in LOSS_PRESET_KEYS} | {"gridsearch.knob_start"}
    flat = {k: v for k, v in cfg.to_flat().items()
            if k not in owned and k.partition(".")[0] not in SECTIONS}
    flat |= {"approach": "finetuning", "memory.num_exemplars": 0, "memory.num_exemplars_per_class": 0}
    return ExperimentConfig.from_dict(flat | dotted)


class GridSearch:
    """The search across a run's tasks: which tasks search, and the values carried between tasks."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.g = cfg.gridsearch
        stability = SPECS[cfg.approach].stability
        self.knob = stability.key if stability is not None and self.g.search_knob else None
        self.lr_first: float | None = None  # task 0's chosen lr: later tasks search below it
        self.lr: float | None = None  # the last chosen values, kept by the tasks after the search
        self.knob_value: float | None = None

    def run_task(self, approach: Approach, ctx: TaskContext) -> tuple[TaskContext, TaskSearch]:
        """Search task ``ctx.t`` when it is one of the first ``train.gridsearch_tasks``; return the
        context the task trains with (its config carrying the chosen values) and the decision."""
        t, start = ctx.t, time.perf_counter()
        searched = t < self.cfg.train.gridsearch_tasks
        ft_acc, lr_trials, knob_trials = None, [], []
        if searched:
            self.lr, ft_acc, lr_trials = pick_lr(lr_candidates(self.g, t, self.lr_first),
                                                 lambda lr: self._finetuning_accuracy(ctx, lr))
            if t == 0:
                self.lr_first = self.lr
            if self.knob is not None and t > 0:
                floor = (1.0 - self.g.acc_drop_thr) * ft_acc
                self.knob_value, knob_trials = decay_knob(
                    self.g.knob_start, self.g.hparam_decay, self.g.max_num_searches, floor,
                    lambda value: self._approach_accuracy(approach, ctx, value, floor))
        values = self._values(self.lr if self.lr is not None else self.cfg.train.lr, self.knob_value)
        cfg = self.cfg.replace(**values)
        report = TaskSearch(t, searched, cfg.train.lr, self.knob,
                            _get(cfg, self.knob) if self.knob else None, ft_acc, lr_trials, knob_trials,
                            time.perf_counter() - start)
        if ctx.log and searched:
            knob = f", {self.knob} {report.knob_value:g}{' (not searched at task 0)' if t == 0 else ''}"
            knob = knob if self.knob else ""
            ctx.log(f"task {t}: grid search chose lr {report.lr:g}{knob}")
        return ctx.with_cfg(cfg), report

    def _values(self, lr: float, knob_value: float | None) -> dict[str, Any]:
        values: dict[str, Any] = {"train.lr": lr}
        if self.g.facil_warmup_lr and lr != self.cfg.train.lr:  # the warm-up keeps the configured lr
            values["train.warmup_lr_factor"] = self.cfg.train.warmup_lr_factor * self.cfg.train.lr / lr
        if self.knob is not None and knob_value is not None:
            values[self.knob] = knob_value
        return values

    def _candidate_epochs(self) -> dict[str, Any]:
        return {} if self.g.nepochs is None else {"train.nepochs": self.g.nepochs}

    def _finetuning_accuracy(self, ctx: TaskContext, lr: float) -> float:
        """Validation TAw accuracy on task t of a finetuning copy of the model trained with ``lr``."""
        cfg = finetuning_config(self.cfg, **{"train.lr": lr} | self._candidate_epochs())
        finetuning = approach_class("finetuning")(cfg)
        fctx = dataclasses.replace(ctx, cfg=cfg, model=copy.deepcopy(ctx.model), old_model=None,
                                   memory=ExemplarMemory(), generator=ctx.new_generator(LR_STREAM), log=None)
        acc = _train_and_validate(finetuning, fctx)
        if ctx.log:
            ctx.log(f"task {ctx.t}: grid search lr {lr:g}: finetuning val TAw {100 * acc:.1f}%")
        return acc

    def _approach_accuracy(self, run_approach: Approach, ctx: TaskContext, value: float, floor: float) -> float:
        """Validation TAw accuracy on task t of a copy of the approach, model and memory trained with
        the chosen lr and the knob at ``value`` (the old model is shared: it never trains)."""
        cfg = self.cfg.replace(**self._values(self.lr, value) | self._candidate_epochs())
        memo = {} if ctx.old_model is None else {id(ctx.old_model): ctx.old_model}
        approach, model, memory = copy.deepcopy((run_approach, ctx.model, ctx.memory), memo)
        cctx = dataclasses.replace(ctx, cfg=cfg, model=model, memory=memory,
                                   generator=ctx.new_generator(KNOB_STREAM), log=None)
        acc = _train_and_validate(approach, cctx)
        if ctx.log:
            ctx.log(f"task {ctx.t}: grid search {self.knob} {value:g}: val TAw {100 * acc:.1f}% "
                    f"(kept if >= {100 * floor:.1f}%)")
        return acc

    # ---- resumable state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"lr_first": self.lr_first, "lr": self.lr, "knob_value": self.knob_value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            raise ValueError("the state holds no grid search values: it was saved by a run without "
                             "train.gridsearch_tasks; resume it with the config that saved it")
        self.lr_first, self.lr, self.knob_value = state["lr_first"], state["lr"], state["knob_value"]


def _train_and_validate(approach: Approach, ctx: TaskContext) -> float:
    """Every training hook of task t on this context (through the memory update, as the task itself
    trains), then the approach's validation TAw accuracy on task t's own validation split."""
    train_task(approach, ctx)
    taw, _ = ctx.trainer.evaluate(approach, ctx, [ctx.task_data("val")], tasks=[ctx.t])
    return taw[0]


def _get(cfg: ExperimentConfig, key: str) -> Any:
    return cfg.to_flat()[key]
