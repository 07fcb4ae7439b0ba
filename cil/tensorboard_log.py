"""``--log tensorboard``: a run's training curves and test accuracies as TensorBoard event files.

Written with tensorboardX after each task, from the rows that also go to Parquet (the epochs table and
task_results), so logging reads nothing more from the device. Tags follow FACIL's logger,
``t<task>/<group>_<name>``: per epoch (the step) ``train_loss``, ``train_<term>`` for each loss term,
``train_lr``, ``train_seconds``, ``valid_loss``, ``valid_acc_taw``; after task ``t``, ``test_acc_taw`` and
``test_acc_tag`` of each task ``u <= t`` with ``u`` as the step; and ``results/<metric>`` (the averages
that are printed after each task) with the task as the step.
"""

from __future__ import annotations

from typing import Any

from cil.extras import require
from cil.results_schema import TERM_PREFIX

EPOCH_SCALARS = {"train_loss": "train_loss", "lr": "train_lr", "seconds": "train_seconds",
                 "val_loss": "valid_loss", "val_acc_taw": "valid_acc_taw"}
SUMMARY_SCALARS = ("avg_acc_taw", "avg_acc_tag", "avg_inc_acc_taw", "avg_inc_acc_tag", "forg_taw", "forg_tag")


class TensorBoardLog:
    """One event-file folder per run (``logdir``); :meth:`write_task` after each task, then :meth:`close`."""

    def __init__(self, logdir: str) -> None:
        require("tensorboardX", "--log tensorboard")  # before any work, not after the first task
        self.logdir = logdir
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The SummaryWriter, made on first use: a run that fails before its first task leaves no folder."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(self.logdir)
        return self._writer

    def write_task(self, task: int, epoch_rows: list[dict[str, Any]], task_rows: list[dict[str, Any]],
                   summary: dict[str, Any]) -> None:
        """Task ``task``'s scalars (rows as cil.loop.TaskResult holds them), flushed to disk."""
        add = self.writer.add_scalar
        for row in epoch_rows:
            step = int(row["epoch"])
            for column, name in EPOCH_SCALARS.items():
                add(f"t{task}/{name}", float(row[column]), step)
            for column, value in row.items():
                if column.startswith(TERM_PREFIX):
                    add(f"t{task}/train_{column[len(TERM_PREFIX):]}", float(value), step)
        for row in task_rows:
            for name in ("acc_taw", "acc_tag"):
                add(f"t{task}/test_{name}", float(row[name]), int(row["eval_task"]))
        for name in SUMMARY_SCALARS:
            if name in summary:
                add(f"results/{name}", float(summary[name]), task)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
