"""The one exception the package raises for bad input, so callers can catch it apart from bugs."""

from __future__ import annotations


class ResultsError(ValueError):
    """Results that cannot be analysed: the message names the path, column or value at fault."""
