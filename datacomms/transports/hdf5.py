"""hdf5://PATH: a lossless stream that is also a recording, appended with h5py in
SWMR mode (one writer, any number of live readers). Layout: docs/files.md and
``_h5layout``.

Writing. The first message decides the layout (or ``layout=``): a fixed-shape
numeric array, a dict of numbers (one column per key), or datacomms frames for
anything else. A new file is built under a temporary name and linked into place
with its datasets already made, because SWMR forbids creating datasets later;
readers never see a half-built file. Messages are staged in memory and
written in blocks; ``flush_interval`` (seconds, default 5 ms) bounds how long a
message may wait before a flush makes it visible to followers, and how often
the file is flushed; 0 flushes every message. A send flushes when the last flush
is an interval old; what it leaves pending a timer thread flushes 0.9 interval
after the oldest of it was sent (not sooner than an interval after the last
flush), so an idle publisher still publishes what it has.
One lock serialises every h5py call of a publisher, so the timer and the
sending thread never touch the file at once.

A flush writes every dataset but seq first and seq last, then touches the file;
a follower sleeps on inotify until that touch, refreshes seq alone, and reads
the rows it counts (``_h5layout.Reader`` says when the other datasets need a
refresh).

HDF5's own file locks would stop a writer from reopening a recording that
live readers hold, so the publisher opens without them (``locking=False``), as
do subscribers (a process opens a file with one setting only). The publisher
keeps a lock of its own instead: it holds an open-file-description lock on the
file for its lifetime (independent of HDF5's flock locks), so a
second publisher gets a clear error, and a publisher that gets the lock knows a
previous writer is dead and may clear the open-for-write flags it left.

A write that fails (a full disk) is a DataCommsError from that call and every later
one; the publisher lets go of the file and its lock at once, writing nothing more
(``_abandon``), so another publisher may append to what was flushed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import threading
import time
from collections import deque
from typing import Any, Iterable

import h5py

from .. import _aio, pubsub
from ..errors import Closed, check_timeout, DataCommsError, FrameError
from ..message import Message
from . import _files
from ._h5layout import (
    SEQ_LAST, BadRow, Layout, Reader, Stage, Writer, choose_kind, clear_open_flags, is_hdf5, not_ours, read_rows,
    stored_end,
)

DEFAULT_FLUSH_INTERVAL = 0.005
# the timer flushes a message a send left pending this share of flush_interval after it was sent
TIMER_SHARE = 0.9
# polls in a row that may fail to read rows a SWMR reader already sees (see Hdf5Subscriber._rows)
MAX_READ_RETRIES = 200
# bytes a follower reads ahead at most (up to ``batch`` rows): a replay of 8 MiB frames must not
# take 1,024 of them into memory for its first recv
READ_BUDGET = 1 << 24
# longest sleep of a blocking recv/latest between looks when inotify watches the directory
SYNC_SLICE = 0.1
_LOCK_START = 1 << 62   # a byte range no HDF5 library touches
# rows at the end of a frames recording a new writer reads back at most (see _readable_rows)
TAIL_CHECK = 4096


def _lock_writer(fd: int, path: str) -> None:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
    arg = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _LOCK_START, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
    except OSError:
        raise DataCommsError(f"another publisher is writing {path}; an HDF5 recording has one writer") from None


def _writer_alive(path: str) -> bool:
    """Whether a publisher holds the writer's lock on path (see _lock_writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        arg = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _LOCK_START, 1, 0)
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, arg)
    finally:
        os.close(fd)
    return struct.unpack("hhqqi4x", got)[0] != fcntl.F_UNLCK


def _write_failed(path: str, exc: BaseException) -> DataCommsError:
    """The error of a write or flush that failed (h5py says the errno only in its message)."""
    code = getattr(exc, "errno", None)
    if code is None:
        m = re.search(r"errno = (\d+)", str(exc))
        code = int(m.group(1)) if m else None
    why = "no space left on device" if code == errno.ENOSPC else (os.strerror(code).lower() if code else str(exc))
    return DataCommsError(f"cannot write {path}: {why}. This publisher is closed; the recording keeps what "
                          f"was flushed before (docs/files.md says what the last rows of frames may lose), "
                          f"and a new publisher may append to it once the cause is gone")


def _same_file(fd: int, other: int) -> bool:
    try:
        a, b = os.fstat(fd), os.fstat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _readable_rows(layout: Layout, n: int) -> int:
    """n less the last rows whose frames cannot be read back: a flush that failed half way (a
    full disk) can ruin the rows flushed just before it, when HDF5 had grown the block of
    variable-length data they share in place and wrote only the start of it (its new size)."""
    k = n
    while k > 0 and n - k < TAIL_CHECK:
        try:
            layout.data[k - 1]
            return k
        except OSError:
            k -= 1
    return k


def _cut_short(path: str, size: int) -> str | None:
    """Why a file is shorter than its superblock says (a partial copy, a truncation), or None.
    HDF5 reads such a file in SWMR mode all the same: zeros past its end, or a retry
    loop that holds a read for minutes."""
    end = stored_end(path)
    if end is None or size >= end:
        return None
    return f"truncated: {size} bytes, where its superblock says {end}"


class Hdf5Publisher(pubsub.Publisher):
    """Appends messages to an HDF5 recording that subscribers follow live.

    ``flush_interval``: seconds a message may stay unflushed (0: flush each one).
    ``layout``: 'auto' (from the first message), 'array', 'columns' or 'frames'.
    An existing recording is appended to and its sequence continues.
    """

    def __init__(self, url: str, backend: Any = None, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 layout: str = "auto", on_full: str = "drop") -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        if layout not in ("auto", "array", "columns", "frames"):
            raise ValueError(f"layout must be auto, array, columns or frames, not {layout!r}")
        self.url = url
        self.path = _files.path_of(url, "hdf5")
        self.backend = _files.get_backend(backend)
        self.flush_interval = float(flush_interval)
        self.layout = layout
        self._lock = threading.Lock()
        self._f: h5py.File | None = None
        self._layout: Layout | None = None
        self._stage: Stage | None = None
        self._writer: Writer | None = None
        self._fd = -1
        self._h5fd = -1                       # HDF5's own descriptor of the file (see _abandon)
        self._failed: DataCommsError | None = None   # a write failed: every later call raises this
        self._unreported = False              # the timer met the failure: the next call raises it
        self._seq = 0
        self._rows = 0                        # rows written to the datasets
        self._due: float | None = None        # when the oldest unflushed message must be flushed
        self._last_flush = 0.0
        self._closed = False
        self._tick = threading.Condition(self._lock)   # wakes the timer: a new deadline, or close
        self._timer: threading.Thread | None = None
        if os.path.exists(self.path):
            self._open_existing()

    # -- opening -----------------------------------------------------------------------------------

    def _open_existing(self) -> None:
        ok = is_hdf5(self.path)
        if not ok:
            raise not_ours(self.path, "not an HDF5 file" if ok is False else "empty file")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            _lock_writer(self._fd, self.path)
            why = _cut_short(self.path, os.fstat(self._fd).st_size)
            if why is not None:
                raise not_ours(self.path, why)
            clear_open_flags(self.path)
            f = h5py.File(self.path, "a", libver="latest", locking=False)
            try:
                layout = Layout(f, self.path)
                if self.layout not in ("auto", layout.kind):
                    raise DataCommsError(f"{self.path} records layout {layout.kind!r}, not {self.layout!r}")
                self._rows = layout.lengths()
                if layout.kind == "frames":
                    self._rows = _readable_rows(layout, self._rows)
                # rows beyond the shortest dataset were cut off mid-flush by a crash: drop them
                for ds in layout.all:
                    if ds.shape[0] != self._rows:
                        ds.resize(self._rows, axis=0)
                self._seq = int(layout.seq[self._rows - 1]) + 1 if self._rows else 0
                f.attrs[SEQ_LAST] = 1  # this writer flushes seq last (Writer.flush), whoever wrote before
                f.swmr_mode = True
            except BaseException:
                f.close()
                raise
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._attach(f, layout)

    def _create(self, first: Any) -> None:
        kind = choose_kind(first) if self.layout == "auto" else self.layout
        tmp = f"{self.path}.{os.getpid()}.{id(self):x}.tmp"
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                try:
                    Layout.create(f, kind, first)
                except FrameError:
                    raise
                except (TypeError, ValueError) as exc:  # a dtype HDF5 cannot store, say
                    raise FrameError(f"cannot record {type(first).__name__} in layout {kind!r}: {exc}") from None
            fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
            try:
                _lock_writer(fd, tmp)
                os.link(tmp, self.path)  # fails if someone else created the file meanwhile
            except FileExistsError:
                os.close(fd)
                os.unlink(tmp)
                self._open_existing()
                return
            except BaseException:
                os.close(fd)
                raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._fd = fd
        f = h5py.File(self.path, "a", libver="latest", locking=False)
        try:
            f.swmr_mode = True
            layout = Layout(f, self.path)
        except BaseException:
            f.close()
            raise
        self._attach(f, layout)

    def _attach(self, f: h5py.File, layout: Layout) -> None:
        self._f, self._layout = f, layout
        self._h5fd = f.id.get_vfd_handle()
        self._stage = Stage(layout, self.backend)
        self._writer = Writer(layout)
        if self.flush_interval > 0:
            self._timer = threading.Thread(target=self._run_timer, name=f"datacomms-flush {self.path}",
                                           daemon=True)
            self._timer.start()

    # -- writing -----------------------------------------------------------------------------------

    def _write(self, block: list[Any] | None = None) -> None:
        try:
            if self._stage:
                self._rows = self._writer.write(self._rows, self._stage.take())
            if block is not None:
                self._rows = self._writer.write(self._rows, block)
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from exc

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        self._write()
        try:
            self._writer.flush(self._f)
            # The flush is complete: touch the file, the one event (IN_ATTRIB) followers of a
            # seq-last recording wake on, rather than on each of the flush's writes.
            os.utime(self._fd)
        except (OSError, RuntimeError) as exc:
            raise self._fail(exc) from exc
        self._due = None

    def _fail(self, exc: BaseException) -> DataCommsError:
        """A write failed (a full disk, say): HDF5's state of the file is no longer one to
        write out, so the publisher lets go of the file without writing more to it."""
        self._failed = _write_failed(self.path, exc)
        self._abandon()
        self._tick.notify()
        return self._failed

    def _abandon(self) -> None:
        """Closes the file without writing to it: HDF5's descriptor is first pointed at
        /dev/null, so that neither this close nor HDF5 at exit writes the half of a failed
        flush (a seq whose row never reached the disk) into the recording. Then the writer's
        lock is released: another publisher may append to what was flushed."""
        f, self._f = self._f, None
        if f is not None:
            if self._h5fd >= 0 and _same_file(self._h5fd, self._fd):  # not a number HDF5 gave back
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.dup2(null, self._h5fd, inheritable=False)
                finally:
                    os.close(null)
            self._h5fd = -1
            try:
                f.close()
            except (OSError, RuntimeError):
                pass  # what it could not write went to /dev/null; its descriptor is /dev/null's
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _check(self) -> None:
        if self._closed:
            raise Closed(f"publisher on {self.url} is closed")
        if self._failed is not None:
            self._unreported = False
            raise DataCommsError(str(self._failed)) from self._failed.__cause__

    def _after_add(self) -> None:
        if self.flush_interval <= 0:
            self._flush()
            return
        if self._stage.full():
            self._write()
        # Flushes are rate-limited, not delayed: a send flushes when the last flush is an
        # interval old, so the first message after a quiet spell is flushed at once and a
        # steady stream is flushed by its own sends. What a send leaves pending gets a
        # deadline for the timer: TIMER_SHARE of an interval after this (its oldest) message,
        # never sooner than an interval after the last flush. A deadline of one interval
        # after the last flush would fall where a stream's next send is due (300 Hz at
        # 5 ms: every third message) and, won by the timer, hold that send's message for a
        # whole interval; the timer's fraction leaves it a margin, and room for the flush.
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval:
            self._flush()
        elif self._due is None:
            self._due = max(now + TIMER_SHARE * self.flush_interval, self._last_flush + self.flush_interval)
            self._tick.notify()

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Appends data; returns its seq. Never waits on readers (timeout is unused)."""
        check_timeout(timeout)
        with self._lock:
            self._check()
            if self._f is None:
                self._create(data)
            seq = self._seq
            self._stage.add(data, seq, time.time_ns())
            self._seq = seq + 1
            self._after_add()
            return seq

    def send_many(self, items: Iterable[Any], timeout: float | None = None) -> int:
        """Appends a batch in one write per dataset (the fast path for loggers). All
        items share one timestamp_ns; returns the last seq (-1 for an empty batch).
        The batch is validated first: on FrameError nothing of it is recorded."""
        check_timeout(timeout)
        items = list(items)
        if not items:
            return -1
        with self._lock:
            self._check()
            if self._f is None:
                self._create(items[0])
            seq0 = self._seq
            block = self._stage.batch(items, seq0, time.time_ns())
            self._seq = seq0 + len(items)
            self._write(block)
            self._after_add()
            return self._seq - 1

    def flush(self) -> None:
        """Makes everything sent so far visible to followers now."""
        with self._lock:
            if self._failed is not None:
                self._check()
            if self._f is not None and not self._closed:
                self._flush()

    def _run_timer(self) -> None:
        with self._lock:
            while not self._closed and self._failed is None:
                due = self._due
                if due is None:
                    self._tick.wait()
                    continue
                delay = due - time.monotonic()
                if delay > 0:
                    self._tick.wait(delay)
                else:
                    try:
                        self._flush()
                    except DataCommsError:
                        self._unreported = True  # the next send, flush or close raises it
                        return

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        """Raises dc.DataCommsError: a file cannot know who reads it (see docs/files.md)."""
        raise _files.readers_unknowable("hdf5")

    @property
    def subscribers(self) -> int:
        """Raises dc.DataCommsError: a file cannot know who reads it (see docs/files.md)."""
        raise _files.readers_unknowable("hdf5")

    def close(self) -> None:
        """Flushes what is pending and closes the file (clearing its open-for-write flags).
        The file and its lock are released whatever happens; a write that failed and was not
        raised yet (the timer's, or this last flush's) is raised after."""
        err: DataCommsError | None = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._tick.notify()
            if self._failed is not None and self._unreported:
                err = DataCommsError(str(self._failed))
            try:
                if self._f is not None:
                    self._flush()
                    self._f.close()
                    self._f = None
            except DataCommsError as exc:   # _flush failed: the file is abandoned
                err = exc
            except (OSError, RuntimeError) as exc:   # the close itself
                err = self._fail(exc)
            finally:
                self._abandon()   # whatever an error above left open
        if self._timer is not None:
            self._timer.join()
        if err is not None:
            raise err


class Hdf5Subscriber(pubsub.Subscriber):
    """Follows a recording live, or replays it with ``from_start=True``.

    A new subscriber's first ``recv()`` returns the last message recorded so far
    (``from_start`` returns the first); if the file did not exist when the
    subscriber was made, it starts at the first row of the file that appears.
    """

    def __init__(self, url: str, backend: Any = None, from_start: bool = False,
                 poll_interval: float = _files.DEFAULT_POLL_INTERVAL, batch: int = 1024) -> None:
        self.url = url
        self.path = _files.path_of(url, "hdf5")
        self.backend = _files.get_backend(backend)
        self.stats = _files.make_stats(self.backend)
        self.poll_interval = poll_interval
        self.batch = batch
        self._from_start = from_start or not os.path.exists(self.path)
        self._f: h5py.File | None = None
        self._layout: Layout | None = None
        self._reader: Reader | None = None
        self._ino = -1
        self._next = 0        # row index of the next message not yet returned
        self._avail = 0       # rows known to be readable
        self._cache: deque[tuple[Any, int, int]] = deque()
        self._closed = False
        self._read_failures = 0
        self._look_mark: tuple[int, int] | None = None   # the sync waiter at the last look (see _quiet)
        self._look_t = 0.0
        # Looks, waiter hand-outs and close() take turns: a close() from another thread must not
        # close the file or a waiter under a look, nor a look open either after close().
        self._lock = threading.Lock()

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
            ok = is_hdf5(self.path)
            if ok is False:
                raise not_ours(self.path, "not an HDF5 file")
            if ok is None:
                return False
            why = _cut_short(self.path, st.st_size)
            if why is not None:
                if _writer_alive(self.path):
                    return False  # a live writer's file grows to what its superblock says: look again
                raise not_ours(self.path, why)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            # without HDF5's file locks, as the publisher: a process opens a file with one setting
            # only, so a subscriber with them could never open a file its own process writes
            f = h5py.File(self.path, "r", libver="latest", swmr=True, rdcc_nbytes=0, locking=False)
        except OSError:
            return False  # locked by a writer still setting the file up: try again later
        except (RuntimeError, ValueError, KeyError) as exc:   # what h5py raises for a damaged file
            raise not_ours(self.path, f"HDF5 cannot open it: {exc}") from None
        try:
            layout = Layout(f, self.path)
            n = layout.refresh_all()
        except BaseException:
            f.close()
            raise
        same = st.st_ino == self._ino
        self._f, self._layout, self._reader, self._ino = f, layout, Reader(layout), st.st_ino
        self._avail = n
        if not same:
            # the same file opened again (after a read it could not do yet) goes on where it was
            self._next = 0 if self._from_start else max(n - 1, 0)
            self._from_start = True  # a file that is replaced later is read from its start
        self._cache.clear()
        return True

    def _reopen_if_replaced(self) -> None:
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return
        if ino != self._ino:
            self._f.close()
            self._f = None

    def _refresh(self) -> int:
        """Rows readable now (opening the file when it appears)."""
        if self._closed:
            raise Closed(f"subscriber on {self.url} is closed")
        if self._f is None and not self._open():
            return 0
        if self._quiet():
            return self._avail
        n = self._layout.refresh()
        if n > self._avail:
            # the Reader refreshes the other datasets itself when it needs to (Reader.lazy)
            self._avail = n if self._reader.lazy else self._layout.refresh_rest()
        return self._avail

    def _quiet(self) -> bool:
        """Whether nothing can have been flushed since the last look, which then need not
        refresh seq: the blocking wait's inotify watch for end-of-flush touches has been
        in place since that look, and no event came (none drained, none pending). A real
        look every SYNC_SLICE anyway."""
        w = self.__dict__.get("_sync_w")
        now = time.monotonic()
        watched = w is not None and w.watching and w.events == _aio.DIR_EVENTS_NO_MODIFY
        if watched and self._look_mark == (w.watches, w.drains) and now - self._look_t < SYNC_SLICE:
            if not w.pending():
                return True
        if watched:
            w.drain()   # events from here on wake the next wait
            self._look_mark = (w.watches, w.drains)
        else:
            self._look_mark = None
        self._look_t = now
        return False

    def _rows(self, start: int, stop: int) -> list[tuple[Any, int, int]] | None:
        """Rows [start, stop), or None when HDF5 cannot read them yet: a SWMR reader
        can see a row whose variable-length data lie past the end of allocation its
        open file knows ("len not positive after adjustment for EOA"), and an open
        file never learns the new end. The file is reopened (the position kept) and
        the next poll tries again; an error that persists is raised. Also None when a
        dataset does not hold the rows seq counts yet (a writer that does not flush
        seq last, see Reader): the next poll tries again."""
        try:
            rows = read_rows(self._reader, start, stop, self.backend.framing)
        except OSError as exc:
            self._read_failures += 1
            if self._read_failures > MAX_READ_RETRIES:
                raise DataCommsError(f"cannot read {self.path}: {exc}") from exc
            self._f.close()
            self._f = None
            self._open()   # or at the next poll; either way from self._next
            return None
        if rows is not None:
            self._read_failures = 0
        return rows

    def _poll_next(self) -> tuple[Any, int, int, int] | None:
        with self._lock:
            return self._next_row()

    def _poll_latest(self) -> tuple[Any, int, int, int] | None:
        with self._lock:
            return self._latest_row()

    def _next_row(self) -> tuple[Any, int, int, int] | None:
        if not self._cache:
            avail = self._refresh()
            start = self._next
            if avail <= start:
                if self._f is not None:
                    self._reopen_if_replaced()
                return None
            rows = self._rows(start, start + self._reader.rows_within(READ_BUDGET, min(avail - start, self.batch)))
            if rows is None:
                return None
            self._cache.extend(rows)
        self._next += 1
        data, seq, ts = self._cache.popleft()
        if type(data) is BadRow:
            raise self._bad(data, seq)
        return data, seq, ts, 0

    def _bad(self, row: BadRow, seq: int) -> FrameError:
        # raised once: the row is passed over, and its seq counts as lost when the next one comes
        return FrameError(f"{self.path}: the frame of seq {seq} does not decode ({row.error})")

    def _latest_row(self) -> tuple[Any, int, int, int] | None:
        avail = self._refresh()
        if avail > self._next + len(self._cache):
            rows = self._rows(avail - 1, avail)
            if rows is None:
                return None
            data, seq, ts = rows[0]
        elif self._cache:
            data, seq, ts = self._cache[-1]
        else:
            if self._f is not None:
                self._reopen_if_replaced()
            return None
        skipped = avail - 1 - self._next if avail > self._next else len(self._cache) - 1
        self._cache.clear()
        self._next = max(avail, self._next + 1)
        if type(data) is BadRow:
            raise self._bad(data, seq)
        return data, seq, ts, skipped

    def _deliver(self, got: tuple[Any, int, int, int]) -> Message:
        data, seq, ts, skipped = got
        self.stats.record(seq, ts, time.time_ns(), skipped)
        return Message(data, seq, ts)

    def recv(self, timeout: float | None = None) -> Message:
        return self._deliver(_files.wait_for(self._poll_next, timeout, self.poll_interval, self.url,
                                             self._sync_waiter))

    def latest(self, timeout: float | None = None) -> Message:
        return self._deliver(_files.wait_for(self._poll_latest, timeout, self.poll_interval, self.url,
                                             self._sync_waiter))

    def _sync_waiter(self) -> _aio.Waiter:
        """What a blocking recv/latest sleeps on: inotify on the file's directory, so a
        flush wakes it at once; every SYNC_SLICE it looks anyway (a close() from another
        thread, a change inotify cannot see). Its own, so an asyncio wait never takes its events."""
        with self._lock:
            if self._closed:
                raise Closed(f"subscriber on {self.url} is closed")
            w = self.__dict__.get("_sync_w")
            if w is None:
                w = self._sync_w = _aio.DirWaiter(os.path.dirname(os.path.abspath(self.path)),
                                                  self.poll_interval, safety=SYNC_SLICE)
            return self._watch(w)

    def _aio_waiter(self) -> _aio.Waiter:
        with self._lock:
            return self._watch(_files.dir_waiter(self))

    def _watch(self, w: _aio.DirWaiter) -> _aio.DirWaiter:
        # A datacomms writer touches the file once a flush is complete (Hdf5Publisher._flush):
        # its writes need not wake the follower, a flush half done has nothing for it yet.
        w.watch_for(_aio.DIR_EVENTS_NO_MODIFY if self._f is not None and self._reader.lazy else _aio.DIR_EVENTS)
        return w

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiters = [self.__dict__.pop(name, None) for name in ("_aio_w", "_sync_w")]
            if self._f is not None:
                self._f.close()
                self._f = None
        for w in waiters:
            if w is not None:
                w.shutdown()


def recover(path: str) -> bool:
    """Makes a recording whose writer was killed openable by plain ``h5py.File(path, 'r')``
    (like ``h5clear -s``); returns whether flags were cleared. Refuses while a publisher writes it."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _lock_writer(fd, path)
        return clear_open_flags(path)
    finally:
        os.close(fd)


__all__ = ["Hdf5Publisher", "Hdf5Subscriber", "recover", "FrameError"]
