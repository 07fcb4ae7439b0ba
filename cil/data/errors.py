"""The one error type of ``cil.data``."""

from cil.errors import PermanentError


class DataError(PermanentError, ValueError):
    """A data set or scenario that cannot be used as asked: names the path or value and what was expected.

    A subclass of ValueError so callers that validate configs can catch both the same way, and a
    PermanentError: a sweep does not retry a trial whose data is missing or corrupt.
    """
