"""Where a scenario's splits live, and how their batches reach the training device.

A split (a task's train, val or test images, or joint's union of tasks) is taken once and kept where
:class:`DeviceScenario` places it: on the training device while it fits the data's share of the device
memory, else on the host, from where :func:`rows` copies each batch over (gathered into pinned memory
and copied without blocking on CUDA). The numbers are the same either way: the same rows in the same
order reach the model. ``data.on_device`` true or false forces a placement; null (the default) lets
the split's size decide against :func:`memory_budget`. While a task trains, a background thread
decodes the next task's images into the decoded-image cache (:mod:`cil.data.cache`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cil.data.scenario import Scenario, SplitName

DATA_SHARE = 0.5  # of the trial's device memory, what resident data may take (the rest: model, activations)
GIB = 2**30

Split = tuple[torch.Tensor, torch.Tensor]


def memory_budget(device: torch.device, budget_gib: float | None = None) -> int | None:
    """Bytes of split data the device may hold (None: no limit).

    ``budget_gib`` (``data.device_memory_budget``) when given. Else on CUDA: :data:`DATA_SHARE` of
    what this process may still allocate, the smaller of the card's free memory and the trial's share
    (``torch.cuda.set_per_process_memory_fraction``, which a fractional-GPU trial sets) less what it
    holds already. On other devices the data is on the host anyway: no limit.
    """
    if budget_gib is not None:
        return int(budget_gib * GIB)
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    mine = torch.cuda.get_per_process_memory_fraction(device) * total - torch.cuda.memory_reserved(device)
    return int(DATA_SHARE * max(0.0, min(float(free), mine)))


def rows(x: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x[idx]`` on ``device``; ``idx`` lives where ``x`` does (``Trainer.batches(..., on=x.device)``).

    From the host to CUDA the rows are gathered into pinned memory and copied without blocking, so the
    host gathers batch k+1 while the device computes batch k.
    """
    if x.device.type == device.type:
        return x[idx]
    if device.type == "cuda":
        out = torch.empty((idx.numel(), *x.shape[1:]), dtype=x.dtype, pin_memory=True)
        torch.index_select(x, 0, idx, out=out)
        return out.to(device, non_blocking=True)
    return x[idx].to(device)


def nbytes(split: Split) -> int:
    return sum(t.numel() * t.element_size() for t in split)


class _Prefetch:
    """One background decode of a task's training images, whose error the training thread re-raises."""

    def __init__(self, task: int, work: Callable[[], None]) -> None:
        self.task = task
        self.error: BaseException | None = None
        # a daemon: a run abandoned mid-way (a stopped trial) does not wait for it to exit
        self.thread = threading.Thread(target=self._run, args=(work,), name=f"cil-prefetch-{task}", daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as e:  # re-raised by wait(), in the training thread
            self.error = e

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


class DeviceScenario:
    """A scenario whose splits are taken once and kept where the placement rule puts them.

    Every task's test split is kept; train and validation splits (and joint's unions) only for the task
    being trained, so a run holds one task's training images, not all of them. ``placements`` records
    where each split went (``"device"`` or ``"host"``), by ``(tasks, split)``.
    """

    def __init__(self, scenario: Scenario, device: torch.device, on_device: bool | None = None,
                 budget: int | None = None, stop: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.inner = scenario
        self.device = device
        self.on_device = on_device
        self.budget = budget
        self.stop = scenario.num_tasks if stop is None else stop  # no prefetch beyond the last task run
        self.log = log
        self.placements: dict[tuple[tuple[int, ...], str], str] = {}
        self._kept: dict[tuple[tuple[int, ...], str], Split] = {}
        self._prefetch: _Prefetch | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def task_split(self, t: int, split: SplitName) -> Split:
        """Task t's uint8 images and labels of ``split``, on the device or the host (see the module)."""
        return self.union_split([t], split)

    def union_split(self, tasks: Sequence[int], split: SplitName) -> Split:
        """The samples of ``tasks`` (in that order) of ``split``, kept together as one split."""
        key = (tuple(int(u) for u in tasks), split)
        if key not in self._kept:
            last = key[0][-1] if key[0] else -1
            if split != "test":  # train/val of the newest task only; test sets stay
                for old in [k for k in self._kept if k[1] != "test" and k[0][-1:] != key[0][-1:]]:
                    del self._kept[old]
            if self._prefetch is not None and self._prefetch.task in key[0]:
                prefetch, self._prefetch = self._prefetch, None
                prefetch.wait()
            image = self.inner.dataset.channels * self.inner.dataset.image_size ** 2
            size = self.inner.union_indices(key[0], split).numel() * (image + 8)  # uint8 images, int64 labels
            on_device = self._fits(size)
            home = self.device if on_device else torch.device("cpu")
            x, y = self.inner.union_split(key[0], split)
            self._kept[key] = (x.to(home), y.to(home))
            self.placements[key] = "device" if on_device else "host"
            if self.log is not None and not on_device:
                self.log(f"tasks {list(key[0])} {split}: {size / 2**20:.3g} MiB kept on the host "
                         f"({self._budget_text()})")
            if split == "train":
                self._start_prefetch(last + 1)
        return self._kept[key]

    def _fits(self, size: int) -> bool:
        """Whether a split of ``size`` bytes goes on the device: data.on_device when set, else whether it
        fits the budget beside the splits already there."""
        if self.on_device is not None:
            return self.on_device
        if self.budget is None:
            return True
        resident = sum(nbytes(s) for k, s in self._kept.items() if self.placements[k] == "device")
        return resident + size <= self.budget

    def _budget_text(self) -> str:
        if self.on_device is False:
            return "data.on_device: false"
        return f"device budget {self.budget / 2**20:.3g} MiB"

    def _start_prefetch(self, t: int) -> None:
        """Decode task t's training images (its classes' cache chunks) in the background."""
        if t >= self.stop or (self._prefetch is not None and self._prefetch.task == t):
            return
        idx = self.inner.task_indices(t, "train")  # val samples are in the same class chunks
        self._prefetch = _Prefetch(t, lambda: self.inner.dataset.train.prepare(idx))
