"""FACIL's class-incremental scenario: class order, classes per task, label remapping, validation split.

Everything random here depends on ``seed`` only, and draws exactly what FACIL draws after
``seed_everything(seed)``: the class order is numpy's legacy shuffle of ``range(num_classes)``
(``np.random.seed(seed); np.random.shuffle(order)``) and the validation samples come from Python's
``random.sample`` seeded with ``seed``, class by class in label order. So for the same data a
seed gives the same class order and validation split as a FACIL run with that seed; private
generator objects are used, so no global random state is touched.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from cil.data.dataset import Dataset
from cil.data.errors import DataError

SplitName = Literal["train", "val", "test"]


@dataclass
class Scenario:
    """Tasks cut from a data set. Labels are remapped so that ``class_order[k]`` becomes label ``k``;
    task ``t`` owns labels ``offsets[t] .. offsets[t] + taskcla[t][1] - 1``."""

    dataset: Dataset
    num_tasks: int
    taskcla: list[tuple[int, int]]
    offsets: list[int]
    class_order: list[int]
    num_classes: int
    seed: int
    val_fraction: float
    task_of_label: torch.Tensor  # [num_classes] int64: the task that owns each remapped label
    _labels: dict[str, torch.Tensor] = field(repr=False)  # remapped label per sample, -1 if dropped
    _member: dict[str, torch.Tensor] = field(repr=False)  # which base-set samples belong to the split

    def task_indices(self, t: int, split: SplitName) -> torch.Tensor:
        """Indices (into ``dataset.train`` for train/val, ``dataset.test`` for test) of task t's samples."""
        self._check(t, split)
        key = "train" if split == "val" else split
        lab = self._labels[key]
        inside = (lab >= self.offsets[t]) & (lab < self.offsets[t] + self.taskcla[t][1])
        return (inside & self._member[split]).nonzero().squeeze(1)

    def task_split(self, t: int, split: SplitName) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[n, C, H, W]`` and remapped int64 labels of task t's samples in ``split``."""
        return self.union_split([t], split)

    def union_split(self, tasks: Sequence[int], split: SplitName) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of several tasks' ``split``, task after task (joint training's data), in one take."""
        idx = self.union_indices(tasks, split)
        source = self.dataset.test if split == "test" else self.dataset.train
        key = "train" if split == "val" else split
        return source.take(idx), self._labels[key][idx]

    def union_indices(self, tasks: Sequence[int], split: SplitName) -> torch.Tensor:
        """:meth:`task_indices` of each task in ``tasks``, concatenated."""
        parts = [self.task_indices(u, split) for u in tasks]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def classes_seen(self, t: int) -> int:
        """How many classes tasks 0..t cover together (the head size of a task-agnostic model)."""
        self._check(t, "train")
        return self.offsets[t] + self.taskcla[t][1]

    def _check(self, t: int, split: str) -> None:
        if not 0 <= t < self.num_tasks:
            raise DataError(f"task {t} does not exist: the scenario has tasks 0..{self.num_tasks - 1}")
        if split not in ("train", "val", "test"):
            raise DataError(f"split {split!r} is not one of 'train', 'val', 'test'")


def classes_per_task(num_classes: int, num_tasks: int, nc_first_task: int | None) -> list[int]:
    """FACIL's split: even, the remainder one by one to the first tasks (after task 0 if it is fixed)."""
    if not _is_int(num_tasks) or not 1 <= num_tasks <= num_classes:
        raise DataError(f"num_tasks = {num_tasks!r} is not valid: need 1 <= num_tasks <= {num_classes} "
                        f"(the number of classes)")
    if nc_first_task is None:
        base, extra = divmod(num_classes, int(num_tasks))
        return [base + (i < extra) for i in range(num_tasks)]
    if not _is_int(nc_first_task) or nc_first_task < 1:
        raise DataError(f"nc_first_task = {nc_first_task!r} is not valid: need a positive integer or None")
    num_tasks, nc_first_task = int(num_tasks), int(nc_first_task)
    rest = num_classes - nc_first_task
    if num_tasks == 1:
        if rest != 0:
            raise DataError(f"nc_first_task = {nc_first_task} with num_tasks = 1 must equal the number of "
                            f"classes ({num_classes})")
        return [nc_first_task]
    if rest < num_tasks - 1:
        raise DataError(f"nc_first_task = {nc_first_task} leaves {rest} of {num_classes} classes for "
                        f"{num_tasks - 1} remaining tasks: each task needs at least one class")
    base, extra = divmod(rest, num_tasks - 1)
    return [nc_first_task] + [base + (i < extra) for i in range(num_tasks - 1)]


def make_scenario(dataset: Dataset, num_tasks: int, nc_first_task: int | None, seed: int,
                  val_fraction: float = 0.1, class_order: list[int] | None = None) -> Scenario:
    """Cut ``dataset`` into ``num_tasks`` tasks the way FACIL does.

    Class order: ``class_order`` if given (it may name a subset of the classes: the others are
    dropped, as in FACIL), else the data set's fixed order, else a permutation drawn from ``seed``.
    Validation: per class, ``round(n * val_fraction)`` random training samples move to ``val``
    (FACIL's rule), but at least one when ``val_fraction > 0`` and never the last training sample
    (FACIL would give a class of fewer than 5 samples no validation sample at 10%).
    """
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise DataError(f"seed = {seed!r} is not valid: need an integer in 0 .. 2**32 - 1")
    if not isinstance(val_fraction, numbers.Real) or not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"val_fraction = {val_fraction!r} is not valid: need 0 <= val_fraction < 1")
    if class_order is None:
        class_order = dataset.class_order
    if class_order is None:
        order = np.random.RandomState(int(seed)).permutation(dataset.num_classes).tolist()
    else:
        order = _check_order(class_order, dataset.num_classes)
    k = len(order)
    cpt = classes_per_task(k, num_tasks, nc_first_task)
    num_tasks = len(cpt)
    offsets = np.concatenate(([0], np.cumsum(cpt)[:-1])).tolist()

    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(order)] = torch.arange(k)
    labels = {s: _remap(getattr(dataset, s).labels, remap, s) for s in ("train", "test")}
    is_val = _val_mask(labels["train"], k, float(val_fraction), random.Random(int(seed)), order)
    kept = labels["train"] >= 0
    member = {"train": kept & ~is_val, "val": is_val, "test": labels["test"] >= 0}
    task_of = torch.repeat_interleave(torch.arange(num_tasks), torch.tensor(cpt))
    return Scenario(dataset, num_tasks, [(t, n) for t, n in enumerate(cpt)], [int(o) for o in offsets], order,
                    k, int(seed), float(val_fraction), task_of, labels, member)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_order(class_order: list[int], num_classes: int) -> list[int]:
    try:
        order = [int(c) for c in class_order]
    except (TypeError, ValueError):
        raise DataError(f"class_order must be a list of class ids, got {class_order!r}") from None
    bad = [c for c in order if not 0 <= c < num_classes]
    if not order or bad or len(set(order)) != len(order):
        raise DataError(f"class_order must list distinct class ids in 0..{num_classes - 1} (at least one); "
                        f"got {len(order)} ids" + (f", out of range: {bad[:5]}" if bad else
                                                   ", with repeats" if order else ""))
    return order


def _remap(original: torch.Tensor, remap: torch.Tensor, split: str) -> torch.Tensor:
    if original.numel() and (original.min() < 0 or original.max() >= remap.numel()):
        raise DataError(f"{split} labels lie outside 0..{remap.numel() - 1}")
    return remap[original]


def _val_mask(labels: torch.Tensor, k: int, fraction: float, rng: random.Random,
              order: list[int]) -> torch.Tensor:
    """Per class, mark the validation samples; also checks every class has training samples.

    FACIL samples positions within each class's list of training samples (in data set order),
    one class after the other in remapped-label order; the same draws are made here.
    """
    counts = torch.bincount(labels[labels >= 0], minlength=k)
    missing = [order[c] for c in (counts == 0).nonzero().squeeze(1).tolist()]
    if missing:
        raise DataError(f"classes {missing[:10]} have no training samples")
    mask = torch.zeros(labels.numel(), dtype=torch.bool)
    if fraction <= 0:
        return mask
    by_class = torch.argsort(labels, stable=True)[labels.numel() - int(counts.sum()):]  # drops the -1s
    start = 0
    for n in counts.tolist():
        n_val = min(max(int(np.round(n * fraction)), 1), n - 1)
        if n_val > 0:
            pick = torch.tensor(rng.sample(range(n), n_val))
            mask[by_class[start:start + n][pick]] = True
        start += n
    return mask
