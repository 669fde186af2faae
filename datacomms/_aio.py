"""The asyncio side of Publisher and Subscriber (docs/aio.md).

``Subscriber.arecv`` / ``alatest`` / ``async for`` are written once, here, over
two things every transport already has or supplies:

- its own ``recv(0)`` / ``latest(0)``: a look that never waits (dc.Timeout when
  nothing is there), run in the loop's thread;
- a Waiter (``Subscriber._aio_waiter()``): the file descriptors that become
  readable when something may have arrived, and ``arm()``, which announces the
  sleep to whoever will wake it and says whether sleeping is still safe.

A message is only ever taken by the synchronous look, never across an await,
so cancelling a waiting coroutine cannot lose one: the subscriber is left
exactly as if the coroutine had never run.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import math
import os
import select
import socket
import threading
import time
from typing import Any, Callable

from .backend._segment import wake_address
from .errors import DataCommsError, Timeout, check_timeout
from .message import Message


# Guards a waiter's hand-over between the loop that sleeps on it and a close() from any thread.
# Reentrant: an abandoned sleep's finally (see _sleep) runs when its coroutine is collected, which
# may happen in a thread that holds the guard.
_guard = threading.RLock()


class Waiter:
    """How a subscriber sleeps in an event loop. ``slice`` is the longest sleep
    before the subscriber looks again anyway (None: only when woken): the
    transports that must notice a dead peer without any byte arriving use it."""

    slice: float | None = None
    _wake: Callable[[], bool] | None = None   # set while a coroutine sleeps on this waiter
    _doomed = False

    def shutdown(self) -> None:
        """For the owner's close(), from any thread: ends a sleep in progress (the sleeper then
        looks, finds the owner closed and raises dc.Closed) and releases the descriptors once
        no loop watches them any more."""
        with _guard:
            wake = self._wake
            self._doomed = True   # a sleep about to begin returns at once
        if wake is None or not wake():
            self.close()   # nobody sleeps, or the sleeper's loop is closed: it never runs again

    def fds(self) -> tuple[int, ...]:
        """Descriptors whose readability means: look again."""
        return ()

    def arm(self) -> bool:
        """Announces the sleep; False when something may already be there (look again first)."""
        return True

    def drain(self) -> None:
        """After a wake-up: consumes the wake-up itself (never a message)."""

    def close(self) -> None:
        """Releases the waiter's descriptors."""


class SocketWaiter(Waiter):
    """Wakes when the subscriber's own socket is readable (udp: the datagrams themselves).
    Its close() closes that socket: the owner's close() leaves it to shutdown()."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def fds(self) -> tuple[int, ...]:
        return (self.sock.fileno(),)

    def close(self) -> None:
        self.sock.close()


class TimerWaiter(Waiter):
    """Looks again every interval seconds: for sources that cannot signal a descriptor."""

    def __init__(self, interval: float) -> None:
        self.slice = max(float(interval), 0.0001)


# ------------------------------------------------------------------ inotify

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_MOVE_SELF = 0x800
_IN_DELETE_SELF = 0x400
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
DIR_EVENTS = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
               | _IN_MOVE_SELF | _IN_DELETE_SELF)
# the same without writes: for followers of a writer that touches the file when a write is complete
DIR_EVENTS_NO_MODIFY = DIR_EVENTS & ~_IN_MODIFY


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """libc with inotify, or None (not Linux, or no inotify): then files fall back to a timer."""
    try:
        lib = ctypes.CDLL(None, use_errno=True)   # the process's own symbols include libc's
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return lib
    except (OSError, AttributeError):
        return None


class DirWaiter(Waiter):
    """Wakes on any change in a directory (a file in it written, replaced,
    created, removed), through inotify where the system has it. Without
    inotify, or while the directory does not exist, it looks every interval.
    With inotify it still looks every ``safety`` seconds: a file on a network
    file system changed by another machine raises no event here."""

    def __init__(self, directory: str, interval: float, safety: float = 1.0, events: int = DIR_EVENTS) -> None:
        self.directory = os.fsencode(os.path.abspath(directory))
        self.interval = max(float(interval), 0.0001)
        self.safety = safety
        self.events = events
        self.fd = -1
        self.watching = False
        self.watches = 0   # watches added so far and drains that read events: a look can tell
        self.drains = 0    # whether one watch covered all since, and whether anything happened
        self.slice = self.interval
        lib = _libc()
        if lib is not None:
            fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self.fd = fd

    def fds(self) -> tuple[int, ...]:
        return (self.fd,) if self.watching else ()

    def arm(self) -> bool:
        if self.watching or self.fd < 0:
            return True
        if _libc().inotify_add_watch(self.fd, self.directory, self.events) < 0:
            return True   # no such directory yet: keep looking every interval
        self.watching = True
        self.watches += 1
        self.slice = self.safety
        return False      # a change between the last look and the watch would be missed: look again

    def pending(self) -> bool:
        """Whether an event waits to be drained."""
        if self.fd < 0:
            return False
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(0))

    def watch_for(self, events: int) -> None:
        """Changes the events that wake (the next arm() watches with them)."""
        if events != self.events:
            self.events = events
            self.watching = False
            self.slice = self.interval

    def drain(self) -> None:
        if self.fd < 0:
            return
        try:
            while True:
                buf = os.read(self.fd, 65536)
                if not buf:
                    break
                self.drains += 1
                # IN_IGNORED (0x8000): the directory went away; watch it again when it is back
                if _ignored(buf):
                    self.watching = False
                    self.slice = self.interval
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.watching = False


def _ignored(buf: bytes) -> bool:
    """Whether an inotify read holds IN_IGNORED (struct inotify_event: wd, mask, cookie, len, name)."""
    off = 0
    while off + 16 <= len(buf):
        mask = int.from_bytes(buf[off + 4:off + 8], "little")
        if mask & 0x8000:
            return True
        off += 16 + int.from_bytes(buf[off + 12:off + 16], "little")
    return False


class WakeSocket(Waiter):
    """shm://: a sleep in an event loop on a unix datagram socket in the abstract
    namespace (no file), named by a random id. ``prepare(id)`` writes the id where the waker
    looks (a subscriber's slot, or the header for a block-mode publisher), sets the
    flag, and says whether sleeping is still safe; the waker sends a byte when it
    finds the flag (csrc/dc_ring.h). A killed peer sends nothing, so the sleeper
    looks again every slice, as the futex sleeps do."""

    slice = 0.1

    def __init__(self, prepare: Callable[[int], bool]) -> None:
        self.prepare = prepare
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.setblocking(False)
            for _ in range(16):
                self.id = int.from_bytes(os.urandom(8), "little") or 1
                try:
                    self.sock.bind(wake_address(self.id))
                    break
                except OSError:
                    continue   # the name is taken (a 1 in 2**64 chance): draw again
            else:
                raise DataCommsError("could not bind a wake socket for asyncio on shm://")
        except BaseException:
            self.sock.close()
            raise

    def fds(self) -> tuple[int, ...]:
        return (self.sock.fileno(),)

    def arm(self) -> bool:
        return self.prepare(self.id)

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(64)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.sock.close()


def _drain(fd: int) -> None:
    """Reads a nonblocking wake-up descriptor (a pipe, an eventfd) empty. (The python
    stream reader has the same six lines; importing it here would add it to every
    ``import datacomms``.)"""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


class FdWaiter(Waiter):
    """Wakes when another object's descriptor (a pipe or an eventfd it writes) is
    readable; watches a duplicate of its own, so the owner may close the original."""

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)

    def fds(self) -> tuple[int, ...]:
        return (self.fd,)

    def drain(self) -> None:
        _drain(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class PipeWaiter(Waiter):
    """A pipe another thread writes one byte to (``poke``) when the subscriber said it sleeps."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fds(self) -> tuple[int, ...]:
        return (self.rfd,)

    def poke(self) -> None:
        try:
            os.write(self.wfd, b"\0")
        except (BlockingIOError, OSError):
            pass   # full: a wake-up is pending already; closed: nobody waits

    def drain(self) -> None:
        _drain(self.rfd)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1


# ------------------------------------------------------------------ the waits


async def _sleep(waiter: Waiter, seconds: float | None) -> None:
    """Sleeps until one of the waiter's descriptors is readable, seconds pass, or the
    waiter's owner is closed (Waiter.shutdown)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    def wake_threadsafe() -> bool:
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:
            return False   # the loop is closed: nobody sleeps any more
        return True

    with _guard:
        if waiter._doomed:
            return
        waiter._wake = wake_threadsafe
    pid = os.getpid()
    added = []
    try:
        for fd in waiter.fds():
            loop.add_reader(fd, wake)
            added.append(fd)
        handle = loop.call_later(seconds, wake) if seconds is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
    finally:
        # With the loop closed while this slept, the coroutine is being thrown away now (its
        # task was collected): the waiter may already serve another loop's sleeper, so touch
        # nothing (its owner's close() then closes the waiter itself: see shutdown). In a child
        # forked meanwhile, the loop's epoll instance and the waiter's descriptors are still
        # the parent's: unregistering or draining them here would take the parent's wake-ups.
        if os.getpid() != pid:
            pass
        elif not loop.is_closed():
            for fd in added:
                loop.remove_reader(fd)
            _settle(waiter)
        else:
            _abandon(waiter, wake_threadsafe)


def _settle(waiter: Waiter) -> None:
    """After a sleep on waiter: closes it when shutdown() came meanwhile, else drains its wake-up."""
    with _guard:
        waiter._wake = None
        doomed = waiter._doomed
        if not doomed:
            # under the guard: a shutdown() from now on closes the descriptors itself, and
            # must not close them while they are read (or let a new file take their number)
            waiter.drain()
    if doomed:
        waiter.close()


def _abandon(waiter: Waiter, wake: Callable[[], bool]) -> None:
    """After a sleep whose loop was closed under it: when no other sleeper took the waiter
    since, a later shutdown() closes it itself; one that came already (its wake-up scheduled
    just before the loop closed, so it left the closing to this sleeper) is finished here."""
    with _guard:
        if waiter._wake is not wake:
            return
        waiter._wake = None
        doomed = waiter._doomed
    if doomed:
        waiter.close()


def _noop() -> bool:
    return True


def block(waiter: Waiter, seconds: float) -> None:
    """The blocking twin of _sleep, for a thread outside any event loop: sleeps until
    one of the waiter's descriptors is readable or seconds pass, then drains the
    wake-up. A shutdown() meanwhile cannot interrupt the sleep; it only marks the
    waiter, which is closed here when the sleep ends (so keep seconds short)."""
    with _guard:
        if waiter._doomed:
            return
        waiter._wake = _noop   # shutdown() now leaves the closing to this thread
    try:
        p = select.poll()
        for fd in waiter.fds():
            p.register(fd, select.POLLIN)
        p.poll(max(0, math.ceil(seconds * 1000)))
    finally:
        _settle(waiter)


async def _nap(waiter: Waiter, deadline: float | None, timed_out: str) -> None:
    """One sleep on waiter, up to its slice and the deadline; dc.Timeout(timed_out) past the deadline."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise Timeout(timed_out)
    if waiter.slice is not None:
        left = waiter.slice if left is None else min(left, waiter.slice)
    await _sleep(waiter, left)


def _deadline(timeout: float | None) -> float | None:
    """time.monotonic()'s when timeout (seconds from now; None: never) is up. NaN is refused:
    the loop's timer for it would disorder every other timer of that loop."""
    if timeout is None:
        return None
    check_timeout(timeout)
    return time.monotonic() + max(timeout, 0.0)


def _look(take: Callable[[float], Message]) -> Message | None:
    try:
        return take(0)
    except Timeout:
        return None


async def receive(sub: Any, take: Callable[[float], Message], timeout: float | None) -> Message:
    """``take(0)`` until it gives a message, sleeping on the subscriber's waiter in between.
    The caller has just looked once and found nothing (and timeout is not 0)."""
    busy = getattr(sub, "_aio_busy", None)
    # a coroutine left waiting in a loop that was closed will never run again (nor its finally)
    if busy is not None and not busy.is_closed():
        raise DataCommsError(f"another coroutine is already waiting on this subscriber of {sub.url}; "
                             "use one subscriber per waiting task")
    deadline = _deadline(timeout)
    loop = sub._aio_busy = asyncio.get_running_loop()   # the loop of the coroutine that waits
    try:
        while True:
            waiter = sub._aio_waiter()
            if waiter.arm():
                await _nap(waiter, deadline, f"no message within {timeout} s on {sub.url}")
            msg = _look(take)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"no message within {timeout} s on {sub.url}")
    finally:
        if sub._aio_busy is loop:   # not when another loop waits by now (this one was closed)
            sub._aio_busy = None


async def send(pub: Any, data: Any, timeout: float | None) -> int:
    """Publisher.asend: at once when the send cannot wait; else sleeping on the publisher's
    waiter between tries that never wait, or, without one, on a worker thread."""
    if not pub._send_may_wait():
        return pub.send(data, timeout)
    seq = pub._send_nowait(data)
    if seq is not None:
        return seq
    waiter = pub._aio_send_waiter()
    if waiter is None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(pub.send, data, timeout))
    deadline = _deadline(timeout)
    # one sleeper per descriptor: concurrent asends of one loop take turns; while they do, an
    # asend from another loop (another thread) waits on a worker thread of its own loop instead,
    # in the blocking send (two loops sleeping on one waiter would clear each other's wake-up hook)
    loop = asyncio.get_running_loop()
    with _guard:
        turns = pub.__dict__.get("_aio_send_turns")   # [loop, its asyncio.Lock, asends of it in progress]
        if turns is None or turns[2] == 0 or turns[0].is_closed():
            turns = pub.__dict__["_aio_send_turns"] = [loop, asyncio.Lock(), 0]
        mine = turns[0] is loop
        if mine:
            turns[2] += 1
    if not mine:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await loop.run_in_executor(None, functools.partial(pub.send, data, left))
    try:
        async with turns[1]:
            while True:
                waiter.arm()
                seq = pub._send_nowait(data)   # the re-check after announcing the sleep
                if seq is not None:
                    return seq
                await _nap(waiter, deadline, f"asend timed out waiting for a slow subscriber of {pub.url} "
                                             "(on_full='block')")
    finally:
        with _guard:
            turns[2] -= 1
