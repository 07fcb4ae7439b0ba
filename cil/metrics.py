"""FACIL-compatible metrics: accuracy matrices, forgetting and their summaries.

Matrices are [num_tasks, num_tasks] with row t = after training task t, column u = tested task u;
only u <= t is filled. All accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch


def task_accuracies(logits: list[torch.Tensor], targets: torch.Tensor, offsets: list[int],
                    eval_task: int, multi_softmax: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of correct predictions (task-aware, task-agnostic) for a batch of task ``eval_task``.

    Task-aware: argmax within that task's head. Task-agnostic: argmax over all heads given, of the raw
    scores, or with ``multi_softmax`` (FACIL's flag) of each head's log-softmax, so heads whose scores
    live on different scales are compared as per-task probabilities.
    Returned as device tensors so callers can sum over batches without syncing.
    """
    head = logits[eval_task]
    pred_taw = head.argmax(dim=1) + offsets[eval_task]
    if multi_softmax:
        logits = [torch.log_softmax(s.float(), dim=1) for s in logits]
    pred_tag = torch.cat(logits, dim=1).argmax(dim=1)
    return (pred_taw == targets).sum(), (pred_tag == targets).sum()


def forgetting(acc: np.ndarray) -> np.ndarray:
    """forg[t, u] = max over t' < t of acc[t', u] - acc[t, u] for u < t, else 0."""
    n = acc.shape[0]
    forg = np.zeros_like(acc, dtype=float)
    for t in range(1, n):
        for u in range(t):
            forg[t, u] = acc[u:t, u].max() - acc[t, u]
    return forg


def average_accuracy(acc: np.ndarray, t: int) -> float:
    """Mean over u <= t of acc[t, u]: the average accuracy after task t."""
    return float(acc[t, : t + 1].mean())


def average_incremental_accuracy(acc: np.ndarray, last: int | None = None) -> float:
    """Mean over t <= last of the average accuracy after t."""
    last = acc.shape[0] - 1 if last is None else last
    return float(np.mean([average_accuracy(acc, t) for t in range(last + 1)]))


def average_forgetting(forg: np.ndarray, t: int) -> float:
    """Mean over u < t of forg[t, u]; 0 after the first task (nothing to forget yet)."""
    return float(forg[t, :t].mean()) if t > 0 else 0.0


def format_matrix(name: str, mat: np.ndarray, upto: int, forgetting: bool = False) -> str:
    """FACIL-style printout: one line per trained task, percentages of the tested tasks.

    The average is over the tested tasks, or for forgetting over the old ones (u < t), as FACIL prints it.
    """
    lines = [f"{name}"]
    for t in range(upto + 1):
        cells = "".join(f"{100 * mat[t, u]:6.1f}% " for u in range(t + 1))
        avg = average_forgetting(mat, t) if forgetting else average_accuracy(mat, t)
        lines.append(f"  {cells}| Avg.: {100 * avg:5.1f}%")
    return "\n".join(lines)
