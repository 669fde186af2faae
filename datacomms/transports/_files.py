"""What the file transports (json://, hdf5://) share: turning a URL into a path,
the polling wait behind recv/latest, stats, and the honest answer to "who is
reading?" that a file cannot give."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, TypeVar

from .. import _aio
from .. import backend as _backend
from ..errors import Closed, DataCommsError, Timeout, check_timeout
from ..url import parse

T = TypeVar("T")

# How often a waiting subscriber looks at the file again. A stat() costs about a
# microsecond, so half a millisecond keeps a 1 kHz reader current at little CPU.
DEFAULT_POLL_INTERVAL = 0.0005


def path_of(url: str, scheme: str) -> str:
    """The file a json:// or hdf5:// URL names: 'json://a.json' is relative to the
    working directory, 'json:///abs/a.json' (three slashes) is absolute."""
    u = parse(url)
    if u.scheme != scheme:
        raise DataCommsError(f"{url!r} is not a {scheme}:// URL")
    path = os.path.expanduser(u.rest)
    if path.endswith("/"):
        raise DataCommsError(f"{url!r} names a directory; a {scheme}:// URL names a file")
    return path


def make_stats(be: Any) -> Any:
    """A fresh Stats from the backend when it provides one, else the shared Python one."""
    mod = getattr(be, "stats", None)
    if mod is not None and hasattr(mod, "Stats"):
        return mod.Stats()
    from ..stats import Stats
    return Stats()


def get_backend(be: Any) -> Any:
    return _backend.get(be)


def wait_for(poll: Callable[[], T | None], timeout: float | None, interval: float, what: str,
             get_waiter: Callable[[], Any] | None = None) -> T:
    """Calls poll until it returns something, sleeping interval between tries;
    raises dc.Timeout after timeout seconds (None: never, 0: one look).

    With get_waiter (called before each sleep; it returns an _aio.DirWaiter on
    the file's directory) it sleeps until the directory changes instead
    (inotify), looking again at least every ``waiter.slice`` seconds; where the
    waiter cannot watch, every interval. A NaN timeout is a ValueError."""
    check_timeout(timeout)
    result = poll()
    if result is not None:
        return result
    if timeout is not None and timeout <= 0:
        raise Timeout(f"nothing new on {what}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        nap = interval
        waiter = get_waiter() if get_waiter is not None else None
        if waiter is not None:
            # arm() is False when the watch has just begun: a change before it went unseen, so look first
            nap = waiter.slice if waiter.arm() else 0.0
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"nothing new on {what} after {timeout} s")
            nap = min(nap, left)
        if waiter is not None and waiter.fds():
            _aio.block(waiter, nap)
        elif nap > 0:
            time.sleep(nap)
        result = poll()
        if result is not None:
            return result


def dir_waiter(sub: Any) -> Any:
    """The asyncio waiter of a file subscriber, made once (call with sub._lock
    held): the file's directory, watched for changes. Closed once sub is."""
    if sub._closed:
        raise Closed(f"subscriber on {sub.url} is closed")
    w = sub.__dict__.get("_aio_w")
    if w is None:
        w = sub._aio_w = _aio.DirWaiter(os.path.dirname(os.path.abspath(sub.path)), sub.poll_interval)
    return w


def readers_unknowable(scheme: str) -> DataCommsError:
    """A file has no handshake with its readers, so their number cannot be known.
    Saying so beats a made-up count: nothing is sent into the void either, since
    a reader that opens later still finds what was written."""
    return DataCommsError(
        f"a {scheme}:// publisher cannot know its subscribers: readers open the file without telling "
        f"the writer. Nothing needs waiting for: a late subscriber still reads what was written "
        f"({'the current document' if scheme == 'json' else 'the whole recording with from_start=True'})")
