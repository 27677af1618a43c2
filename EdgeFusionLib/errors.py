"""Exceptions with messages meant for the user (one line, naming the problem)."""


class InputError(ValueError):
    """Bad input detected before any work starts (missing file, wrong shape, NaN, ...)."""


class MissingWeightsError(InputError):
    """No bundled (or user-supplied) weights for the requested task."""


class FusionCancelled(Exception):
    """The user cancelled a running fusion; nothing was returned or written."""
