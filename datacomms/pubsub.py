"""Publisher and Subscriber: the one API every transport implements.

``Publisher(url, ...)`` and ``Subscriber(url, ...)`` return an instance of the
transport class registered for the URL's scheme (a subclass of these), so a
call like ``pub.send`` goes straight to the transport with no extra layer.

The asyncio methods (``asend``, ``arecv``, ``alatest``, ``async for``) live
here, once, over each transport's non-waiting ``recv(0)``/``latest(0)`` and
its ``_aio_waiter()`` hook (datacomms/_aio.py, docs/aio.md).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

from . import _aio
from . import url as _url
from .errors import Closed, Timeout
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

    async def asend(self, data: Any, timeout: float | None = None) -> int:
        """``send`` for asyncio: never blocks the event loop. A send that cannot wait (drop
        mode, udp, files) runs at once; a block-mode send that must wait for room sleeps on
        a descriptor (shm, tcp) or on a worker thread of the loop's executor (zenoh; docs/aio.md)."""
        return await _aio.send(self, data, timeout)

    def _send_may_wait(self) -> bool:
        """Whether send can wait (block mode); transports override."""
        return False

    def _send_nowait(self, data: Any) -> int | None:
        """Sends data if that needs no wait (its seq), else None with nothing sent."""
        return None

    def _aio_send_waiter(self) -> _aio.Waiter | None:
        """What asend sleeps on while waiting for room, re-trying _send_nowait after each
        wake-up; None: the wait happens on a worker thread instead."""
        return None

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

    async def arecv(self, timeout: float | None = None, **kwargs: Any) -> Message:
        """``recv`` for asyncio: the event loop sleeps on the transport's file descriptors
        meanwhile. Cancelling it loses nothing (docs/aio.md); raises dc.Timeout like recv."""
        try:
            return self.recv(0, **kwargs)   # something there already: no wait to set up
        except Timeout:
            if timeout is not None and timeout <= 0:
                raise
        return await _aio.receive(self, lambda t: self.recv(t, **kwargs), timeout)

    async def alatest(self, timeout: float | None = None, **kwargs: Any) -> Message:
        """``latest`` for asyncio (see arecv)."""
        try:
            return self.latest(0, **kwargs)
        except Timeout:
            if timeout is not None and timeout <= 0:
                raise
        return await _aio.receive(self, lambda t: self.latest(t, **kwargs), timeout)

    def _aio_waiter(self) -> _aio.Waiter:
        """What the event loop waits on for this subscriber; every transport overrides it."""
        w = self.__dict__.get("_aio_timer")
        if w is None:
            w = self.__dict__["_aio_timer"] = _aio.TimerWaiter(0.001)
        return w

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        """``async for msg in sub``: arecv() until the channel is closed."""
        try:
            return await self.arecv()
        except Closed:
            raise StopAsyncIteration from None

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
