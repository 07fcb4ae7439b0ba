"""The one error type of ``cil.data``."""


class DataError(ValueError):
    """A data set or scenario that cannot be used as asked: names the path or value and what was expected.

    A subclass of ValueError so callers that validate configs can catch both the same way.
    """
