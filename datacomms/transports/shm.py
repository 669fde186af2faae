"""shm://NAME — POSIX shared memory: one lock-free broadcast ring per name.

The segment is the file ``dc-NAME`` in /dev/shm (mode 0600), opened by name
from any process and mapped with mmap; multiprocessing.shared_memory is not
used because its resource tracker unlinks segments it did not create.
The ring mechanics live in the backend (``backend.ring``: csrc/dc_ring.h
compiled, or the pure-Python twin); this module owns the files, the locks
that tell who is alive, and the public API.

Lifecycle:
- A publisher builds the segment under a temporary name and links it into
  place, so nobody ever maps a half-initialised header. It holds a lock on
  byte 0 for its lifetime. If the name exists and nobody holds that lock,
  the segment is stale (its publisher died) and is replaced; if somebody
  does, the second publisher gets a DataCommsError.
- A clean close marks the ring closed, wakes every subscriber and unlinks
  the name. Subscribers still drain what is left, then get dc.Closed. A
  publisher killed outright loses its lock; subscribers notice within about
  0.1 s of waiting and get dc.Closed.
- A subscriber takes a slot (a cursor) and locks it; a dead subscriber's
  slot is reaped by a blocked publisher. A subscriber created before its
  publisher attaches on its first recv/latest once the publisher is there,
  and then reads from the oldest message still in the ring.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
import time
import uuid
import weakref
from typing import Any

from .. import _aio
from .. import backend as _backend
from ..backend import _segment as S
from ..errors import Closed, check_timeout, DataCommsError, Timeout
from ..message import Message
from ..pubsub import Publisher, Subscriber
from ..url import parse

SHM_DIR = "/dev/shm"
PREFIX = "dc-"
TMP_PREFIX = "dc-.tmp-"
NAME_MAX = 30
DEFAULT_CAPACITY = S.DEFAULT_CAPACITY
_ATTACH_POLL_S = 0.005
# How long a new publisher waits for one that is replacing a dead publisher's
# segment (it holds that segment's lock for a few system calls) to link its own.
_TAKEOVER_WAIT_S = 2.0
# Segments are mapped with their pages faulted in at once: a page first touched
# mid-stream cost the publisher and each subscriber a page fault (tens of
# microseconds here) once every 4 KiB of records until the ring had wrapped.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def check_name(name: str) -> str:
    """The segment name of shm://NAME: 1..30 characters (macOS limit), no '/', no NUL, no leading '.'."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or "/" in name or "\0" in name \
            or name.startswith(".") or not name.isprintable():
        raise DataCommsError(f"bad shm name {name!r}: use 1 to {NAME_MAX} printable characters, "
                             "no '/', not starting with '.'")
    return name


def _name_from_url(url: str) -> str:
    u = parse(url)
    if u.scheme != "shm":
        raise DataCommsError(f"{url!r} is not an shm:// URL")
    return check_name(u.rest)


def path_of(name: str) -> str:
    return os.path.join(SHM_DIR, PREFIX + name)


def _open(path: str, flags: int = 0) -> int:
    """os.open(path, O_RDWR | flags); another user's segment (mode 0600) is a
    PermissionError that says whose it is, not a bare "Permission denied"."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC | flags)
    except PermissionError as exc:
        try:
            owner = f"uid {os.stat(path).st_uid}"
        except OSError:
            owner = "another user"
        name = os.path.basename(path)[len(PREFIX):]
        raise PermissionError(exc.errno, f"shm://{name} belongs to {owner} ({path}), and a segment is open "
                                         "to its owner only (mode 0600): run as that user, or pick another "
                                         "name") from None


def _map(path: str, lock_fd: int, size: int) -> mmap.mmap:
    """Maps the file open at lock_fd through a second open of it. mmap keeps a dup of the
    descriptor it is given; were that the one holding the liveness locks, a forked child's
    copy of the mapping would keep them held after the parent died (and the child cannot
    give it back while buffers point into the mapping)."""
    mfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(mfd).st_ino != os.fstat(lock_fd).st_ino:
            raise FileNotFoundError(path)   # replaced in between: the caller's file is gone from the name
        return mmap.mmap(mfd, size, flags=_MAP_FLAGS)
    finally:
        os.close(mfd)


class _Segment:
    """An open, mapped, validated segment file."""

    def __init__(self, fd: int, mm: mmap.mmap, config: S.Config) -> None:
        self.fd = fd
        self.mm = mm
        self.config = config
        self.ino = os.fstat(fd).st_ino

    @classmethod
    def open(cls, path: str, live_only: bool = False) -> "_Segment | None":
        """The segment at path, or None when there is none (or, with live_only, when its
        publisher is gone: a subscriber polling for the next publisher of a name must not map
        and fault in a stale segment every few milliseconds)."""
        try:
            fd = _open(path)
        except FileNotFoundError:
            return None
        if live_only and not S.publisher_alive(fd):
            os.close(fd)
            return None
        try:
            size = os.fstat(fd).st_size
            if size < S.OFF_SLOTS:
                raise DataCommsError(f"{path} is too small to be a datacomms shm segment")
            mm = _map(path, fd, size)
        except FileNotFoundError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            config = S.read_config(mm, size)
        except BaseException:
            mm.close()
            os.close(fd)
            raise
        return cls(fd, mm, config)

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass  # zero-copy views or a loan's array still point in; the mapping goes with them
        os.close(self.fd)


def _create(name: str, capacity: int, max_subs: int, block: bool) -> _Segment:
    path = path_of(name)
    tmp = os.path.join(SHM_DIR, TMP_PREFIX + uuid.uuid4().hex[:16])
    size = S.segment_size(capacity, max_subs)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    S.try_lock(fd, 0)  # a fresh file: nobody else can hold it yet; clean() leaves locked files alone
    try:
        os.ftruncate(fd, size)
        try:
            # Takes the pages now: a full /dev/shm is this error here, not a SIGBUS
            # when the ring first reaches the missing pages.
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise DataCommsError(f"cannot create shm://{name}: {size} bytes do not fit in {SHM_DIR} "
                                 f"({exc.strerror}); pick a smaller capacity or make room") from None
        mm = _map(tmp, fd, size)
        pid = os.getpid()
        S.init_segment(mm, capacity, max_subs, block, pid, S.process_start_time(pid))
        deadline = time.monotonic() + _TAKEOVER_WAIT_S
        removed = 0
        while True:
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                held = _reclaim(path)
            if held is not None and held[1]:
                mm.close()
                raise DataCommsError(f"shm://{name} already has a live publisher (pid {held[0]}); "
                                     "close it first or pick another name")
            if held is None:   # the stale segment is gone: link again
                removed += 1
                if removed < 8:
                    continue
                mm.close()
                raise DataCommsError(f"could not create shm://{name}: the name keeps reappearing")
            if time.monotonic() >= deadline:
                mm.close()
                raise DataCommsError(f"shm://{name} is held by another process, though the publisher it names "
                                     f"(pid {held[0]}) is gone: another publisher is taking the name over, or "
                                     "one in another pid namespace holds it; close it first or pick another name")
            # the dead publisher's lock is held by whoever is replacing its segment
            # (another new publisher, or clean()): its own segment appears at once
            time.sleep(0.001)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(tmp)
    return _Segment(fd, mm, S.read_config(mm, size))


def _owner_runs(pid: int, start: int) -> bool:
    """Whether the process a segment names as its publisher still runs (a pid
    reused by another process since is not it: the start times differ)."""
    if pid <= 0:
        return False
    if start:
        return S.process_start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass   # it runs, as another user
    return True


def _is_segment(fd: int, entry: str) -> bool:
    """Whether the file open at fd (named entry in SHM_DIR) is a datacomms segment:
    a regular file that starts with the ring's magic, or one a publisher is still
    making under its temporary name. /dev/shm is every program's: another's file
    that merely starts with "dc-" is never taken for a stale segment."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    return entry.startswith(TMP_PREFIX) or os.pread(fd, 8, 0) == S.MAGIC.to_bytes(8, "little")


def _reclaim(path: str) -> tuple[int, bool] | None:
    """Removes the segment at path if its publisher is gone. Else returns the pid
    it names and whether that process runs: its lock held while it does not
    means another publisher (or clean()) is replacing the segment right now.
    A file there that is not a datacomms segment is a DataCommsError, left alone."""
    try:
        fd = _open(path, os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        if not _is_segment(fd, os.path.basename(path)):
            raise DataCommsError(f"{path} is not a datacomms shm segment (another program's file?); "
                                 "remove it or pick another name")
        if not S.try_lock(fd, 0):
            try:
                with mmap.mmap(fd, S.OFF_SLOTS) as mm:
                    pid = int.from_bytes(mm[S.OFF_OWNER_PID:S.OFF_OWNER_PID + 8], "little")
                    start = int.from_bytes(mm[S.OFF_OWNER_START:S.OFF_OWNER_START + 8], "little")
            except (OSError, ValueError):
                return -1, False
            return pid, _owner_runs(pid, start)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        return None
    finally:
        os.close(fd)


# Every Publisher and Subscriber of this process, for the fork hook below.
_ENDS: "weakref.WeakSet[ShmPublisher | ShmSubscriber]" = weakref.WeakSet()


# Subscribers made before their publisher, and the one thread that attaches them as
# soon as it appears (so that its subscribers/wait_for_subscribers count them before
# their first recv); the thread ends when none is left.
_EARLY: "weakref.WeakSet[ShmSubscriber]" = weakref.WeakSet()
_early_lock = threading.Lock()
_early_thread: threading.Thread | None = None


def _attach_early(sub: "ShmSubscriber") -> None:
    global _early_thread
    with _early_lock:
        _EARLY.add(sub)
        if _early_thread is None:
            _early_thread = threading.Thread(target=_early_loop, name="datacomms-shm-attach", daemon=True)
            _early_thread.start()


def _early_loop() -> None:
    global _early_thread
    while True:
        with _early_lock:
            subs = list(_EARLY)
            if not subs:
                _early_thread = None
                return
        for sub in subs:
            try:
                done = sub._attach(from_oldest=True) or sub._closed
            except Exception:   # noqa: BLE001 - its own recv meets the error again, and raises it
                done = True
            if done:
                with _early_lock:
                    _EARLY.discard(sub)
        del subs, sub   # a subscriber dropped meanwhile is not kept alive by this thread
        time.sleep(_ATTACH_POLL_S)


def _after_fork_in_child() -> None:
    """A forked child's copies of the parent's Publishers and Subscribers are closed for the
    child, without touching the segment: its copies of the lock descriptors are closed, so the
    parent's death still shows as a released lock, and its exit neither marks the parent's ring
    closed, nor unlinks it, nor frees the parent's subscriber slots."""
    global _early_lock, _early_thread
    _EARLY.clear()
    _early_lock, _early_thread = threading.Lock(), None   # the parent's thread is not here
    ends = list(_ENDS)
    _ENDS.clear()
    for end in ends:
        end._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ShmPublisher(Publisher):
    """Publisher(url, backend=None, capacity=32 MiB, on_full="drop"|"block", max_subscribers=64, spin_us=0).

    ``capacity`` is the ring size in bytes (rounded up to a power of two); one
    message must fit in it. ``spin_us`` (block mode): a send that finds the ring
    full busy-polls this long before it sleeps, which keeps a fast stream off
    the futex's wake-up cost at the price of a core while waiting. ``send`` and ``loan`` are the backend writer's own
    methods, bound on the instance (no extra Python frame per message).
    """

    _why_closed = "this publisher is closed"

    def __init__(self, url: str, backend: Any = None, capacity: int = DEFAULT_CAPACITY, on_full: str = "drop",
                 max_subscribers: int = S.DEFAULT_MAX_SUBS, spin_us: float = 0.0) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        if not isinstance(max_subscribers, int) or not 1 <= max_subscribers <= S.MAX_SUBS_LIMIT:
            raise ValueError(f"max_subscribers must be 1..{S.MAX_SUBS_LIMIT}")
        self.url = url
        self.name = _name_from_url(url)
        self.on_full = on_full
        self.backend = _backend.get(backend)
        self._seg: _Segment | None = _create(self.name, S.capacity_for(capacity), max_subscribers,
                                             on_full == "block")
        self.capacity = self._seg.config.capacity
        self._writer = self.backend.ring.Writer(self._seg.mm, reap=self._reap, spin_us=spin_us)
        self._aio_w: _aio.Waiter | None = None   # asend's wait for room (block mode)
        self._next_reap = 0.0
        self.send = self._writer.send  # type: ignore[method-assign]
        self.loan = self._writer.loan  # type: ignore[method-assign]
        _ENDS.add(self)

    def send(self, data: Any, timeout: float | None = None) -> int:  # replaced per instance
        raise Closed(self._why_closed)

    def loan(self, shape: Any, dtype: Any, timeout: float | None = None) -> Any:
        """Room for an array in the ring: ``with pub.loan(shape, dtype) as l: fill(l.array)``
        publishes on leaving the block (or call ``l.commit()``); do not touch the array afterwards."""
        raise Closed(self._why_closed)

    def _forked(self) -> None:
        seg, self._seg = self._seg, None
        if seg is None:
            return
        self._why_closed = (f"this publisher belongs to process {seg.config.owner_pid}; "
                            "a forked child makes its own")
        os.close(seg.fd)   # the parent alone holds the publisher lock now
        self._aio_w = None
        if self._writer is not None:
            self._writer._forked()   # a loan open at the fork, or a send bound before it, is closed too
        self._writer = None
        for name in ("send", "loan"):
            self.__dict__.pop(name, None)

    def _send_may_wait(self) -> bool:
        return self.on_full == "block"

    def _send_nowait(self, data: Any) -> int | None:
        try:
            return self.send(data, 0)
        except Timeout:
            return None   # the ring is full: nothing was written

    def _aio_send_waiter(self) -> _aio.Waiter:
        if self._seg is None:
            raise Closed("this publisher is closed")
        if self._aio_w is None:
            self._aio_w = _aio.WakeSocket(self._space_prepare)
        return self._aio_w

    def _space_prepare(self, wake_id: int) -> bool:
        # a subscriber that died without closing never makes room: free its slot, as a
        # blocked send does every REAP_AFTER (here once per wait slice at most)
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + 0.1
            self._reap()
        self._writer.async_prepare(wake_id)
        return True

    def _reap(self) -> int:
        seg = self._seg
        if seg is None:
            return 0
        return S.reap(seg.fd, seg.mm, seg.config)

    @property
    def subscribers(self) -> int:
        return self._reap()

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            count = self._reap()
            if count >= n:
                return count
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"{count} of {n} subscribers attached to {self.url}")
            time.sleep(0.002)

    def close(self) -> None:
        seg = self._seg
        if seg is None:
            return
        self._seg = None
        w, self._aio_w = self._aio_w, None
        if w is not None:
            w.shutdown()
        self._writer.close()
        path = path_of(self.name)
        try:
            if os.stat(path).st_ino == seg.ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        seg.close()  # closing the fd drops the publisher lock, after the unlink

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ShmSubscriber(Subscriber):
    """Subscriber(url, backend=None, spin_us=0).

    ``spin_us``: busy-poll this long before sleeping on the futex (lower latency,
    burns a core while waiting). ``recv(timeout, copy=True)`` and
    ``latest(timeout, copy=True)`` are the backend reader's methods, bound on
    the instance once attached. With ``copy=False`` the data are read-only
    views into the ring, valid until the next recv/latest/release(); in block
    mode the publisher cannot overwrite them meanwhile, in drop mode it can:
    check ``still_valid()`` after using them.
    """

    _why_closed = "this subscriber is closed"

    def __init__(self, url: str, backend: Any = None, spin_us: float = 0.0) -> None:
        self.url = url
        self.name = _name_from_url(url)
        self.backend = _backend.get(backend)
        self.spin_us = float(spin_us)
        self.stats = self.backend.stats.Stats()
        self._seg: _Segment | None = None
        self._slot = -1
        self._reader: Any = None
        self._closed = False
        self._aio_w: _aio.Waiter | None = None
        self._lock = threading.Lock()   # attaching (the caller's or the early thread's) and close()
        _ENDS.add(self)
        if not self._attach():
            _attach_early(self)

    def _forked(self) -> None:
        self._lock = threading.Lock()   # the parent's early thread may have held it at the fork
        self._closed = True
        self._why_closed = f"this subscriber belongs to process {os.getppid()}; a forked child makes its own"
        self._aio_w = None
        seg, self._seg = self._seg, None
        if seg is None:
            return
        os.close(seg.fd)   # the parent alone holds the slot's lock now
        if self._reader is not None:
            self._reader._forked()   # a recv bound before the fork is closed too
        self._reader = None
        for name in ("recv", "latest", "release", "still_valid"):
            self.__dict__.pop(name, None)

    def _attach(self, from_oldest: bool = False) -> bool:
        with self._lock:
            return self._reader is not None or (not self._closed and self._attach_locked(from_oldest))

    def _attach_locked(self, from_oldest: bool) -> bool:
        seg = _Segment.open(path_of(self.name), live_only=True)
        if seg is None:
            return False
        if not S.publisher_alive(seg.fd):
            seg.close()  # stale: wait for the next publisher of the name
            return False
        try:
            self._slot = S.claim_slot(seg.fd, seg.mm, seg.config, os.getpid(), from_oldest)
        except BaseException:
            seg.close()
            raise
        self._seg = seg
        fd = seg.fd
        self._reader = self.backend.ring.Reader(seg.mm, self._slot, alive=lambda: S.publisher_alive(fd),
                                                name=self.url, spin_us=self.spin_us, stats=self.stats)
        self.recv = self._reader.recv  # type: ignore[method-assign]
        self.latest = self._reader.latest  # type: ignore[method-assign]
        self.release = self._reader.release  # type: ignore[method-assign]
        self.still_valid = self._reader.still_valid  # type: ignore[method-assign]
        return True

    def _attach_wait(self, timeout: float | None) -> float | None:
        """Attaches, waiting for the publisher up to timeout; returns the time left."""
        if self._closed:
            raise Closed(self._why_closed)
        start = time.monotonic()
        while not self._attach(from_oldest=True):
            if self._closed:
                raise Closed(self._why_closed)
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise Timeout(f"no publisher on {self.url}")
            time.sleep(_ATTACH_POLL_S)
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - start))

    def recv(self, timeout: float | None = None, copy: bool = True) -> Message:  # until attached
        if self._reader is None:
            check_timeout(timeout)
            timeout = self._attach_wait(timeout)
        return self._reader.recv(timeout, copy)

    def latest(self, timeout: float | None = None, copy: bool = True) -> Message:  # until attached
        if self._reader is None:
            check_timeout(timeout)
            timeout = self._attach_wait(timeout)
        return self._reader.latest(timeout, copy)

    def release(self) -> None:
        """Ends the zero-copy hold of the last message."""

    def still_valid(self) -> bool:
        """Whether the data of the last zero-copy message are still intact in the ring."""
        return False

    @property
    def attached(self) -> bool:
        return self._reader is not None

    def _aio_waiter(self) -> _aio.Waiter:
        # before the publisher exists: the directory of segments, watched for its name
        # appearing; attached: the wake socket the publisher sends to
        if self._closed:
            raise Closed(self._why_closed)
        w = self._aio_w
        if self._reader is None:
            if w is None:
                w = self._aio_w = _aio.DirWaiter(SHM_DIR, _ATTACH_POLL_S)
            return w
        if not isinstance(w, _aio.WakeSocket):
            new = _aio.WakeSocket(self._reader.async_prepare)
            with self._lock:   # a close() from another thread meanwhile must not miss the new socket
                closed, old = self._closed, self._aio_w
                if not closed:
                    self._aio_w = new
            if closed:
                new.close()
                raise Closed(self._why_closed)
            if old is not None and old is not new:
                old.close()   # the directory waiter (no sleep uses it: one waiting coroutine at a time)
            w = new
        return w

    def close(self) -> None:
        with self._lock:
            self._closed = True
            w, self._aio_w = self._aio_w, None
            seg, self._seg = self._seg, None
        if w is not None:
            w.shutdown()
        if seg is None:
            return
        self._reader.close()
        S.release_slot(seg.fd, seg.mm, seg.config, self._slot)
        seg.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def stale() -> list[str]:
    """Names of shm segments whose publisher is gone (left by a killed process)."""
    out = []
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.startswith(PREFIX):
            continue
        try:
            fd = os.open(os.path.join(SHM_DIR, entry), os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if _is_segment(fd, entry) and not S.held_by_other(fd, 0):
                out.append(entry[len(PREFIX):])
        finally:
            os.close(fd)
    return out


def clean() -> list[str]:
    """Removes the stale segments (see stale()) and returns their names."""
    removed = []
    for name in stale():
        path = os.path.join(SHM_DIR, PREFIX + name)
        try:
            if name.startswith(".tmp-") and time.time() - os.stat(path).st_mtime < 10:
                continue  # a publisher may be between creating and locking it
        except FileNotFoundError:
            continue
        try:
            if _reclaim(path) is None and not os.path.exists(path):
                removed.append(name)
        except (DataCommsError, PermissionError):
            continue   # replaced by another program's (or user's) file meanwhile
    return removed
