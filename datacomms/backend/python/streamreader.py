"""The receive side of a frame stream (tcp://) in pure Python: the readable
reference; backend/cython/streamreader.pyx is its compiled twin.

A FrameReader reads a byte stream into large buffers and cuts it into frames
with the framing layer. ``next()`` returns each frame as it is; ``take()`` is
what a subscriber calls per message: it hands control frames to a callback,
drops data frames already delivered on an earlier connection of the same
publisher epoch, counts what the publisher sent before this connection
started, and returns a Message.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from typing import Any, Callable

from ...errors import Closed, check_timeout, FrameError, Timeout
from ...message import Message
from . import framing as _framing

# Raw payloads up to this size come out as bytes (a copy): cheaper than a view
# for small messages, and the receive buffer is free again at once.
SMALL_COPY = 4096

MAGIC = b"DCMF"
HTTP_STARTS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"HTTP", b"PRI ")
TLS_START = b"\x16\x03"   # a TLS handshake record (a ClientHello): the peer has ssl= and this side none
_FRAME_LEN = struct.Struct("<Q").unpack_from


def describe_garbage(head: bytes) -> str:
    if head[:4] in HTTP_STARTS:
        return "an HTTP request, not a datacomms peer"
    if head[:2] == TLS_START:
        return "a TLS handshake: the peer uses TLS (ssl=) and this side does not"
    return f"not a datacomms frame (first bytes {head[:16]!r})"


def buffer_free(buf: bytearray) -> bool:
    """True when no view of buf is alive (a bytearray with exports cannot be resized)."""
    if not buf:
        return True
    try:
        last = buf[-1]
        del buf[-1]
    except BufferError:
        return False
    buf.append(last)
    return True


class FrameReader:
    """Reads a byte stream into large buffers and cuts it into frames.

    Data frames come out as views of the receive buffer (no copy), except raw
    payloads up to SMALL_COPY bytes, which are copied. A buffer that a
    returned view still points into is never written again: the reader moves
    on to a fresh one (or a spare nobody references any more).
    ``max_frame_size`` is checked on each header before any allocation.

    For ``take()``: ``epoch`` names the publisher epoch of this connection,
    ``seen`` maps each epoch to the last seq delivered from it (shared by all
    the readers of one subscriber), ``expect`` is the publisher's next seq
    when this connection started (set from its start frame), ``source`` is
    what each Message it returns carries as its source (the peer's address,
    set once per connection by the subscriber).
    """

    def __init__(self, framing: Any, max_frame_size: int, chunk: int = 1 << 20) -> None:
        self.framing = framing
        self.max_frame_size = max_frame_size
        self.chunk = chunk
        self.buf = bytearray(chunk)
        self.start = 0
        self.end = 0
        self.spare: bytearray | None = None
        self.need = 0  # bytes the frame at start needs, once its header is read
        self.big = 0   # the largest frame that came whole (room for one that big is made at once)
        self.epoch: str | None = None
        self.seen: dict[str, int] = {}
        self.expect: int | None = None
        self.source: str | None = None

    def _room(self, need: int) -> None:
        """Makes sure buf can hold need bytes from start, keeping views valid."""
        size = max(self.chunk, need)
        if len(self.buf) - self.start >= need:
            return
        have = self.end - self.start
        if len(self.buf) >= size and buffer_free(self.buf):
            self.buf[:have] = self.buf[self.start:self.end]
        else:
            old = self.buf
            if self.spare is not None and len(self.spare) >= size and buffer_free(self.spare):
                new, self.spare = self.spare, old
            else:
                new = bytearray(size)
                # keep the bigger of the two retired buffers for reuse
                if self.spare is None or len(old) >= len(self.spare):
                    self.spare = old
            new[:have] = old[self.start:self.end]
            self.buf = new
        self.start, self.end = 0, have

    def _want(self) -> int:
        """The room to make from start: for a frame whose header is read, all of it
        once a frame that big came whole before, else up to 8 times what has come
        of it (at least chunk). A header costs its sender 64 bytes: allocating all
        it announced at once let a peer that had sent nothing else take up to
        max_frame_size (1 GiB) per connection (3 connections, 3 GB)."""
        have = self.end - self.start
        if self.need <= have:
            return have + 1
        return min(self.need, max(self.chunk, self.big, 8 * have))

    def _prepare(self) -> memoryview:
        if self.end == len(self.buf):
            self._room(self._want())
        return memoryview(self.buf)[self.end:]

    def fill(self, sock: Any) -> int:
        """One recv_into; returns the byte count (0: the peer closed). Raises
        BlockingIOError (or ssl.SSLWantReadError) when nothing is there."""
        n = sock.recv_into(self._prepare())
        self.end += n
        return n

    def fill_fd(self, fd: int) -> int:
        """One read from a nonblocking descriptor: the byte count, 0 when the
        peer closed, -1 when nothing is there. Raises OSError on errors."""
        try:
            n = os.readv(fd, [self._prepare()])
        except (BlockingIOError, InterruptedError):
            return -1
        self.end += n
        return n

    def wait_fd(self, fd: int, wake_fd: int, timeout: float | None, spin_ns: int = 0,
                poll_first: bool = False) -> int:
        """Reads from a socket descriptor, waiting for data: first spins (read
        attempts, yielding the CPU between them) for up to spin_ns, then polls
        fd and wake_fd (-1: none) for up to timeout seconds (None: no limit);
        while a frame whose header is read is incomplete it keeps reading (and
        polling) until the frame is whole. The byte count read, 0 when the
        peer closed, -1 when nothing came in time, -2 when wake_fd woke it.
        poll_first (without spin_ns): poll before the first read, for a caller
        that has just read fd dry. Raises OSError (unless some bytes were
        read: then the next call does)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        spin_end = time.monotonic_ns() + spin_ns
        total, polled = 0, False
        skip = poll_first and spin_ns <= 0
        p = None
        while True:
            try:
                # skip: straight to poll, one system call fewer when nothing is there yet
                n = -1 if skip else self.fill_fd(fd)
                skip = False
            except OSError:
                if total:
                    return total
                raise
            if n > 0:
                total += n
                polled = False
                if self.need > self.end - self.start:
                    continue   # the rest of a frame already announced (fill_fd makes room for it)
                return total
            if n == 0:
                return total or 0
            if polled:
                return total or -1
            if spin_ns > 0 and not total and time.monotonic_ns() < spin_end:
                os.sched_yield()
                continue
            if p is None:
                p = select.poll()
                p.register(fd, select.POLLIN)
                if wake_fd >= 0:
                    p.register(wake_fd, select.POLLIN)
            left = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000 + 0.999
            ready = dict(p.poll(left))
            if not ready.get(fd):
                return total or (-2 if ready.get(wake_fd) else -1)
            polled = True

    def next(self) -> tuple[Any, int, int, int] | None:
        """The next complete frame as (data, seq, timestamp_ns, flags), or None.
        Raises FrameError on bytes that are not a valid frame."""
        have = self.end - self.start
        if have < 64:
            # a short request (HTTP, a probe) is refused now, not after a timeout
            head = bytes(self.buf[self.start:self.start + min(have, 4)])
            if head != MAGIC[:len(head)]:
                raise FrameError(describe_garbage(bytes(self.buf[self.start:self.start + 16])))
            if self.start and len(self.buf) - self.start < 64:
                self._room(64)
            return None
        try:
            if not self.need:
                # When the length field says the frame is all here, decode (which
                # validates the whole header) at once; otherwise validate the
                # header first, since its length decides what gets allocated.
                if _FRAME_LEN(self.buf, self.start + 40)[0] > have:
                    self.need = self.framing.unpack_header(self.buf, self.start, self.max_frame_size)[7]
            if have < self.need:
                self._room(self._want())
                return None
            data, seq, ts, flags, flen = self.framing.decode(self.buf, self.start, self.max_frame_size)
        except FrameError as exc:
            if self.start == 0 and (bytes(self.buf[:4]) in HTTP_STARTS or bytes(self.buf[:2]) == TLS_START):
                raise FrameError(describe_garbage(bytes(self.buf[:16]))) from None
            raise FrameError(f"{exc} (first bytes {bytes(self.buf[self.start:self.start + 16])!r})") from None
        if type(data) is memoryview and data.nbytes <= SMALL_COPY:
            data = data.tobytes()
        self.start += flen
        self.need = 0
        if flen > self.big:
            self.big = flen
        if self.start == self.end and buffer_free(self.buf):
            self.start = self.end = 0
        return data, seq, ts, flags

    def take(self, on_control: Callable[[Any], None], stats: Any, record: bool = True) -> Message | None:
        """The next data frame buffered here as a Message, or None. Control
        frames go to on_control(data) on the way (what it raises propagates);
        frames of this epoch delivered before are passed over; what the
        publisher sent before this connection started is added to
        stats.lost. With record, the message is also recorded in stats
        (source: the epoch, nothing skipped)."""
        while True:
            f = self.next()
            if f is None:
                return None
            data, seq, ts, flags = f
            if flags & 1:
                on_control(data)
                continue
            last = self.seen.get(self.epoch)  # type: ignore[arg-type]
            if last is not None and seq <= last:
                continue   # already delivered on an earlier connection of this epoch
            if self.expect is not None:
                if last is None:
                    # this epoch's first message: what the publisher sent from this
                    # connection's start on and never came is lost, and the gap to the
                    # message recorded next (by latest(), maybe not this one) starts here
                    stats.lost_through(self.epoch, seq - 1, 0, min(seq, self.expect))
                self.expect = None
            self.seen[self.epoch] = seq  # type: ignore[index]
            if record:
                stats.record(seq, ts, time.time_ns(), 0, self.epoch)
            return Message(data, seq, ts, self.source)


def _drain(fd: int) -> None:
    """Reads a nonblocking wake-up descriptor (a pipe, an eventfd) empty."""
    try:
        while os.read(fd, 64):
            pass
    except (BlockingIOError, OSError):
        pass


class Gate:
    """A subscriber's closed flag and the count of threads inside its recv,
    so close() from another thread knows whether someone is waiting on the
    sockets it would close (then the last one out releases them)."""

    def __init__(self) -> None:
        self.closed = False
        self.busy = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Counts the caller in; False when closed."""
        with self._lock:
            if self.closed:
                return False
            self.busy += 1
            return True

    def leave(self) -> bool:
        """Counts the caller out; True when it was the last one in after close()."""
        with self._lock:
            self.busy -= 1
            return self.closed and self.busy == 0

    def close(self) -> bool | None:
        """Marks closed: None when it was already, else whether anyone is inside."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            return self.busy > 0


class DirectRecv:
    """The recv of a subscriber that follows one plain connection fd: the next
    message already buffered in reader, or else a wait on fd (wake_fd wakes
    it; spin_ns of busy-polling first) and a take, counted in gate while it
    waits. Anything else (a bad frame, a peer that said bye or went away or
    stayed silent past dead_after, a wake-up, close()) is
    slow(timeout, error, deadline)'s, deadline being time.monotonic()'s when
    some of timeout was spent here. fd -1 or no gate: no waiting here (TLS)."""

    def __init__(self, reader: FrameReader, on_control: Callable[[Any], None], stats: Any,
                 slow: Callable[[float | None, Exception | None, float | None], Message], fd: int = -1,
                 wake_fd: int = -1, gate: Gate | None = None, spin_ns: int = 0, dead_after: float = 1.0,
                 block: bool = False) -> None:
        # block (fd is the only thing to wait for; close() shuts it down): the
        # compiled twin then waits in a blocking read, one system call where
        # poll and a read are two; this twin always polls (its reads cannot
        # pass MSG_DONTWAIT), which behaves the same
        self.reader, self.on_control, self.stats, self.slow = reader, on_control, stats, slow
        self.fd, self.wake_fd, self.gate, self.spin_ns, self.dead_after = fd, wake_fd, gate, spin_ns, dead_after
        self.last_rx = time.monotonic()   # when fd last gave bytes
        # set once its connection is no longer the only one followed (or is gone):
        # a recv the caller kept from then (r = sub.recv) goes the general way,
        # never again to this reader or fd (which may be a new connection's now)
        self.retired = False

    def recv(self, timeout: float | None = None) -> Message:
        check_timeout(timeout)
        if self.retired:
            return self.slow(timeout, None, None)
        deadline = None
        gate = self.gate
        waited = False
        while True:
            try:
                msg = self.reader.take(self.on_control, self.stats)
            except (FrameError, Closed) as exc:
                return self.slow(timeout, exc, deadline)
            if msg is not None:
                return msg
            if not waited:
                if self.fd < 0 or gate is None or (timeout is not None and timeout <= 0):
                    break
                deadline = None if timeout is None else time.monotonic() + timeout
                waited = True
            now = time.monotonic()
            until = self.last_rx + self.dead_after
            if until <= now:
                break   # silent too long: the slow path decides
            if deadline is not None:
                if now >= deadline:
                    raise Timeout(f"no message within {timeout} s")
                until = min(until, deadline)
            if not gate.enter():
                break
            error = None
            try:
                # an empty buffer: the last read most likely emptied the socket
                # (a partly read frame: more is probably there, read first)
                reader = self.reader
                n = reader.wait_fd(self.fd, self.wake_fd, until - now, self.spin_ns, reader.end == reader.start)
            except OSError as exc:
                n, error = 0, Closed(f"read failed: {exc}")
            if n == -2:
                _drain(self.wake_fd)   # the slow path looks at what woke us
            if gate.leave() or n == -2:
                break   # closed meanwhile, or woken (a new connection, or close())
            if n == 0:
                return self.slow(timeout, error or Closed("connection closed by peer"), deadline)
            if n > 0:
                self.last_rx = time.monotonic()
        return self.slow(timeout, None, deadline)


def take_frame(frame: Any, source: Any, seen: dict[Any, int], stats: Any, max_frame_size: int,
               skipped: int = 0, origin: str | None = None) -> Message | None:
    """One whole frame that arrived by itself (a zenoh sample) as a Message, or
    None when source already delivered this seq (a duplicate). The frame is
    validated first (dc.FrameError); a fresh one updates seen[source] and is
    recorded in stats with source and skipped. origin becomes the Message's
    source (the zenoh key it came on)."""
    data, seq, ts, _, _ = _framing.decode(frame, 0, max_frame_size)
    if type(data) is memoryview and data.nbytes <= SMALL_COPY:
        data = data.tobytes()
    last = seen.get(source)
    if last is not None and seq <= last:
        return None
    seen[source] = seq
    stats.record(seq, ts, time.time_ns(), skipped, source)
    return Message(data, seq, ts, origin)
