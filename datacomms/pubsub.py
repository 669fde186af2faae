"""Publisher and Subscriber: the one API every transport implements.

``Publisher(url, ...)`` and ``Subscriber(url, ...)`` return an instance of the
transport class registered for the URL's scheme (a subclass of these), so a
call like ``pub.send`` goes straight to the transport with no extra layer.
"""

from __future__ import annotations

from typing import Any, Iterator

from . import url as _url
from .errors import Closed
from .message import Message
from .stats import Stats


class Publisher:
    """Sends messages to every subscriber of a URL. See DESIGN (docs) for the semantics."""

    url: str

    def __new__(cls, url: str, *args: Any, **kwargs: Any) -> "Publisher":
        if cls is Publisher:
            _, cls = _url.resolve(url, "publisher")
        return super().__new__(cls)

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Publishes data and returns its sequence number."""
        raise NotImplementedError

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        """Blocks until at least n subscribers are attached; returns how many are."""
        raise NotImplementedError

    @property
    def subscribers(self) -> int:
        """How many subscribers are attached now."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """Receives the messages published on a URL, each once, in order."""

    url: str
    stats: Stats

    def __new__(cls, url: str, *args: Any, **kwargs: Any) -> "Subscriber":
        if cls is Subscriber:
            _, cls = _url.resolve(url, "subscriber")
        return super().__new__(cls)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message not yet received; waits up to timeout (None: forever) or raises dc.Timeout."""
        raise NotImplementedError

    def latest(self, timeout: float | None = None) -> Message:
        """The newest message not yet received, counting those passed over in stats.skipped."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Message]:
        """Yields messages until the channel is closed."""
        while True:
            try:
                yield self.recv()
            except Closed:
                return

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
