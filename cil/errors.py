"""Errors shared by cil and the sweep layer.

A :class:`PermanentError` is one a retry cannot fix (bad data, a diverging loss, storage that refuses
writes): a sweep fails such a trial once, with the message, instead of retrying it ``max_failures``
times.
"""

from __future__ import annotations


class PermanentError(RuntimeError):
    """An error that a retry of the same trial cannot fix."""


class DivergedError(PermanentError):
    """A training loss became NaN or infinite; names where, so the config can be fixed."""

    def __init__(self, task: int, epoch: int, term: str, value: float) -> None:
        self.task, self.epoch, self.term, self.value = task, epoch, term, value
        super().__init__(f"loss diverged in task {task}, epoch {epoch}: term {term!r} is {value} "
                         "(try a lower train.lr, smaller loss weights or a smaller train.clipping)")

    def __reduce__(self):  # picklable across Ray processes with its fields
        return (type(self), (self.task, self.epoch, self.term, self.value))


class ConfigError(ValueError):
    """A bad experiment config: the message names every bad key, its value and what is valid (re-exported
    by ``cil.config``; here so that modules below the config, such as ``cil.device``, can raise it)."""
