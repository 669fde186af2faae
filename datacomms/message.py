"""The Message a subscriber receives.

The class below is the reference; when the extensions are built, the
compiled twin in datacomms/_message.pyx (same attributes, same repr) takes
its name, so every transport and backend hands out one type.
"""

from __future__ import annotations

from typing import Any


class Message:
    """One received message.

    ``data`` is what the publisher sent (numpy arrays as arrays, bytes-like
    payloads as a bytes-like object, JSON values as Python values), ``seq`` is
    the publisher's counter (None when the source has no counter, such as a
    plain JSON file written by another program) and ``timestamp_ns`` is the
    publisher's ``time.time_ns()`` at send. ``source`` says which publisher
    sent it where a subscriber can hear several: the key it was published on
    (zenoh), the peer's "host:port" ("[addr]:port" for IPv6) of the connection
    it came on (tcp) or of the datagram's sender (udp); None where a name has
    one publisher (shm, json, hdf5).
    """

    __slots__ = ("data", "seq", "timestamp_ns", "source")

    def __init__(self, data: Any, seq: int | None, timestamp_ns: int, source: str | None = None) -> None:
        self.data = data
        self.seq = seq
        self.timestamp_ns = timestamp_ns
        self.source = source

    def __repr__(self) -> str:
        kind = type(self.data).__name__
        src = "" if self.source is None else f", source={self.source!r}"
        return f"Message(seq={self.seq}, timestamp_ns={self.timestamp_ns}{src}, data=<{kind}>)"


try:
    from ._message import Message  # type: ignore[assignment]  # noqa: F811
except ImportError:   # not built: the class above it is
    pass
