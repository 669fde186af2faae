"""The exceptions datacomms raises. Every one derives from DataCommsError."""

from __future__ import annotations


class DataCommsError(Exception):
    """Base class of every datacomms error."""


class Timeout(DataCommsError, TimeoutError):
    """A wait ran out of time (``recv``, ``latest``, ``send`` in block mode, ...)."""


class Closed(DataCommsError):
    """The channel or its peer is gone: closed locally, or the other side died."""


class FrameError(DataCommsError, ValueError):
    """Malformed, oversized or unencodable data."""


# Every recv, latest and send with a timeout refuses NaN before anything else, alike on every
# transport (a deadline at NaN never comes, or comes at once, or becomes undefined in C).
NAN_TIMEOUT = "timeout must be a number of seconds or None, not nan"


def check_timeout(timeout: object) -> None:
    """ValueError for a NaN timeout (the pure-Python code's check; the compiled modules
    make the same one inline)."""
    if timeout is not None and timeout != timeout:
        raise ValueError(NAN_TIMEOUT)
