"""Finetuning: the lower bound, new task trained with plain cross-entropy (FACIL's default)."""

from cil.approaches.base import Approach


class Finetuning(Approach):
    """Every hook as in :class:`~cil.approaches.base.Approach`."""
