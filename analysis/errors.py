"""The exception the package raises for bad input, so callers can catch it apart from bugs, and the
warning it gives for bad input it can work around (a results file it skips)."""

from __future__ import annotations


class ResultsError(ValueError):
    """Results that cannot be analysed: the message names the path, column or value at fault."""


class ResultsWarning(UserWarning):
    """Results read with something left out (an unreadable or foreign file): the message names it.
    ``strict=True`` in the loaders (``--strict`` on the command line) raises ResultsError instead."""
