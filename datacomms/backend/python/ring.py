"""The shm:// ring in pure Python: the readable reference of the algorithm in
csrc/dc_ring.h (read that header's opening comment first) and the fallback
when the Cython backend is not built. Its compiled twin is
backend/cython/ring.pyx; backend/_segment.py lays out and checks the header.
Both twins work on the same segment at the same time.

Memory ordering. Shared 64- and 32-bit fields are read and written through
memoryviews cast to "Q"/"I": CPython copies such an item with a fixed-size
memcpy, which compilers turn into one aligned load or store, so no field is
ever seen half-written. This module then relies on x86-64 (TSO) ordering:
stores become visible in program order and loads are not reordered with
older loads, which gives the release/acquire pairs of the C version for
free. The two places that need a full fence (a store followed by a load of
another word, for the sleep/wake handshake) take and release a
threading.Lock, whose implementation uses a locked instruction. On other
architectures use the Cython backend.

Futex calls go through ctypes (the GIL is released during the call, and a
signal interrupts the wait with EINTR so Ctrl-C works).
"""

from __future__ import annotations

import ctypes
import math
import operator
import platform
import socket
import struct
import threading
import time
from typing import Any, Callable

import numpy as np

from ...errors import Closed, check_timeout, DataCommsError, FrameError, Timeout
from .. import _meta
from .. import _segment as S
from . import framing

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine(), 202)
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

SLICE_NS = 100_000_000       # longest single sleep: signals and liveness are checked between
CHECK_NS = 100_000_000       # how often a waiting reader asks whether the publisher lives
REAP_AFTER_NS = 100_000_000  # a blocked publisher looks for dead subscribers after this long

DC_OK, EMPTY, LAPPED = 0, 1, 2
_PAD_MAGIC = b"DCPD"
_U64 = struct.Struct("<Q")
_fence_lock = threading.Lock()


class _timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _full_fence() -> None:
    # A lock round trip is an atomic read-modify-write: a full barrier on x86-64.
    _fence_lock.acquire()
    _fence_lock.release()


def _futex_wait(addr: int, expected: int, timeout_ns: int) -> None:
    ts = _timespec(timeout_ns // 1_000_000_000, timeout_ns % 1_000_000_000)
    _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAIT, ctypes.c_uint32(expected), ctypes.byref(ts), None, 0)


def _futex_wake_all(addr: int) -> None:
    _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)


FOREVER_S = float(1 << 62) / 1e9   # a timeout this long (or inf) waits like None: it does not fit int64 ns


def _deadline(timeout: float | None) -> int:
    """The monotonic ns to give up at; -1: never."""
    if timeout is None:
        return -1
    t = float(timeout)
    if t != t:
        raise ValueError("timeout must be a number of seconds or None, not nan")
    if t >= FOREVER_S:
        return -1
    now = time.monotonic_ns()
    return now if t <= 0 else now + int(t * 1e9)


class _Mapped:
    """Views of one segment: the header as u32/u64 words, the ring bytes, and the base address."""

    def __init__(self, buf: Any) -> None:
        self.mv = memoryview(buf)
        if self.mv.readonly:
            raise ValueError("the ring needs a writable buffer")
        S.read_config(self.mv, self.mv.nbytes)   # the header describes this buffer, or DataCommsError
        head = self.mv[:S.OFF_SLOTS]
        data = head.cast("I")[S.OFF_DATA // 4]
        self.cap = head.cast("Q")[S.OFF_CAPACITY // 8]
        self.mask = self.cap - 1
        self.max_subs = head.cast("I")[S.OFF_MAX_SUBS // 4]
        self.block = bool(head.cast("I")[S.OFF_FLAGS // 4] & S.FLAG_BLOCK)
        head.release()
        self.u64 = self.mv[:data].cast("Q")
        self.u32 = self.mv[:data].cast("I")
        self.ring = self.mv[data:data + self.cap]
        self._anchor = ctypes.c_char.from_buffer(buf)
        self.addr = ctypes.addressof(self._anchor)

    def wake_if_sleeping(self, word: int, flag: int) -> None:
        """The caller made its news visible and fenced; wake the sleepers that announced themselves."""
        u32 = self.u32
        if u32[flag // 4]:
            u32[flag // 4] = 0
            # Single writer for DATA_WORD; for SPACE_WORD a racing reader can lose an increment,
            # which only costs a sleeper one slice, never a missed message.
            u32[word // 4] = (u32[word // 4] + 1) & 0xFFFFFFFF
            _futex_wake_all(self.addr + word)

    def wake_async(self, sock: socket.socket | None) -> int:
        """dc_wake_async: one byte to each subscriber sleeping on its wake socket, if one announced
        itself. The caller made its news visible and fenced. Returns how many were woken."""
        u32, u64 = self.u32, self.u64
        if not u32[S.OFF_ASYNC_SLEEPERS // 4]:
            return 0
        u32[S.OFF_ASYNC_SLEEPERS // 4] = 0
        _full_fence()  # the clear is visible before the slots are read (see dc_ring.h)
        n = 0
        for i in range(self.max_subs):
            off = S.OFF_SLOTS + i * S.SLOT_SIZE
            if u32[(off + S.SLOT_STATE) // 4] != S.SLOT_ACTIVE or not u32[(off + S.SLOT_WAKE) // 4]:
                continue
            u32[(off + S.SLOT_WAKE) // 4] = 0
            if sock is not None:
                try:
                    sock.sendto(b"\0", S.wake_address(u64[(off + S.SLOT_WAKE_ID) // 8]))
                except OSError:
                    pass  # nobody bound (gone) or a full buffer (a wake is pending): nothing to do
            n += 1
        return n

    def wake_space_async(self, sock: socket.socket | None) -> None:
        """dc_wake_space_async: wakes a block-mode publisher sleeping on its wake socket."""
        u32 = self.u32
        if sock is None or not u32[S.OFF_SPACE_ASYNC // 4]:
            return
        u32[S.OFF_SPACE_ASYNC // 4] = 0
        try:
            sock.sendto(b"\0", S.wake_address(self.u64[S.OFF_SPACE_WAKE_ID // 8]))
        except OSError:
            pass

    def sleep_prepare(self, word: int, flag: int) -> int:
        v = self.u32[word // 4]
        self.u32[flag // 4] = 1
        _full_fence()
        return v

    def latest(self) -> tuple[int, int, int] | None:
        u64 = self.u64
        for _ in range(1 << 12):  # a lock that stays odd: the writer died mid-update
            s = u64[S.OFF_LATEST_LOCK // 8]
            if s == 0:
                return None
            pos, length, seq = (u64[S.OFF_LATEST_POS // 8], u64[S.OFF_LATEST_LEN // 8],
                                u64[S.OFF_LATEST_SEQ // 8])
            if not s & 1 and u64[S.OFF_LATEST_LOCK // 8] == s:
                return pos, length, seq
        return None

    def release(self) -> None:
        del self._anchor
        for v in (self.ring, self.u64, self.u32, self.mv):
            try:
                v.release()
            except BufferError:
                pass  # zero-copy views still exist; the mapping lives until they go



class _Guarded:
    """The calls of a ring end that use the mapping, counted: close() from another
    thread meanwhile lets go of the mapping only once the last of them is out of
    it (ring.pyx and ringreader.pyx do the same in C)."""

    _m: Any
    _what = "end"
    _busy = 0           # calls under way
    _closing = False    # close() came: the last call out lets go of the mapping

    def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        if self._m is None or self._closing:
            raise Closed(f"this {self._what} is closed")
        self._busy += 1
        try:
            return call(*args)
        finally:
            self._busy -= 1
            if self._closing and not self._busy:
                self._let_go()

    def _let_go(self) -> None:
        raise NotImplementedError

class Writer(_Guarded):
    """The publisher's end of a ring in a writable buffer whose header is initialised.
    ``reap`` (optional) frees dead subscribers' slots; a blocked send calls it.
    ``spin_us``: in block mode, a send that finds no room busy-polls this long
    before it sleeps on the futex."""

    _what = "publisher"

    def __init__(self, buf: Any, reap: Callable[[], Any] | None = None, spin_us: float = 0.0) -> None:
        self._m = _Mapped(buf)
        m = self._m
        self.reap = reap
        self._spin_ns = int(spin_us * 1000)
        self.seq = 0
        self.tail = m.u64[S.OFF_TAIL // 8]
        self._head = m.u64[S.OFF_HEAD // 8]
        self._min_cursor = self.tail
        self._intent = m.u64[S.OFF_INTENT // 8]   # the highest INTENT stored: it never goes back
        if not 0 <= self._intent - self.tail <= m.cap:
            self._intent = self.tail   # not one this ring's writer could store
        self._lock = m.u64[S.OFF_LATEST_LOCK // 8] & 0xFFFFFFFFFFFFFFFC
        self._res = (0, 0, 0)
        self.loaned: Loan | None = None
        self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._wake_sock.setblocking(False)

    @property
    def capacity(self) -> int:
        return self._m.cap

    def _room(self, t: int, e: int) -> bool:
        # Same rule as dc_writer_room: a subscriber at t has read everything.
        m = self._m
        lowest, ok = t, True
        for i in range(m.max_subs):
            off = S.OFF_SLOTS + i * S.SLOT_SIZE
            if m.u32[(off + S.SLOT_STATE) // 4] != S.SLOT_ACTIVE:
                continue
            c = m.u64[(off + S.SLOT_CURSOR) // 8]
            if c >= t:
                continue
            if e - c > m.cap:
                ok = False
            lowest = min(lowest, c)
        self._min_cursor = lowest
        return ok

    def _try_reserve(self, frame_len: int) -> bool:
        m = self._m
        t = self.tail
        off = t & m.mask
        # after an unpublished reservation with a pad, past the pad too (see dc_writer_reserve)
        pad = m.cap - off if frame_len > m.cap - off or (off and self._intent - t > m.cap) else 0
        s = t + pad
        e = s + frame_len
        if m.block and e - self._min_cursor > m.cap and not self._room(t, e):
            return False
        h = self._head
        while h + m.cap < e:
            if h >= t:
                h = s
                break
            hoff = h & m.mask
            length = _U64.unpack_from(m.ring, hoff + 40)[0]
            if length < 64 or length & 63 or length > m.cap - hoff:
                h = s
                break
            h += length
        self._head = h
        # A reservation never published (an aborted loan, a send that failed while filling) may
        # have written up to its end: INTENT stays there, or a smaller record at the same place
        # would make the old records it clobbered look intact again.
        self._intent = max(self._intent, e)
        m.u64[S.OFF_HEAD // 8] = h
        m.u64[S.OFF_INTENT // 8] = self._intent  # TSO: visible before any byte of the record below
        if pad:
            m.ring[off:off + 64] = _PAD_MAGIC + bytes(36) + _U64.pack(pad) + bytes(16)
        self._res = (s, frame_len, e)
        return True

    def _reserve(self, frame_len: int, timeout: float | None) -> None:
        m = self._m
        if frame_len > m.cap:
            raise FrameError(f"a frame of {frame_len} bytes does not fit a ring of {m.cap} bytes; "
                             "give the Publisher a larger capacity")
        if self._try_reserve(frame_len):
            return
        deadline = _deadline(timeout)
        if self._spin_ns:
            now = time.monotonic_ns()
            end = now + self._spin_ns if deadline < 0 else min(deadline, now + self._spin_ns)
            while time.monotonic_ns() < end:
                if self._try_reserve(frame_len):
                    return
        next_reap = time.monotonic_ns() + REAP_AFTER_NS
        while True:
            now = time.monotonic_ns()
            if now >= next_reap and self.reap is not None:
                next_reap = now + REAP_AFTER_NS
                self.reap()
            v = m.sleep_prepare(S.OFF_SPACE_WORD, S.OFF_SPACE_SLEEPERS)
            if self._try_reserve(frame_len):
                return
            if deadline >= 0 and now >= deadline:
                raise Timeout("send timed out waiting for a slow subscriber (on_full='block')")
            left = SLICE_NS if deadline < 0 else min(SLICE_NS, deadline - now)
            _futex_wait(m.addr + S.OFF_SPACE_WORD, v, left)
            if self._closing:
                raise Closed("this publisher was closed while send waited for room")

    def _publish(self, now: int) -> int:
        m = self._m
        seq = self.seq
        s, length, e = self._res
        self.tail = e
        u64 = m.u64
        u64[S.OFF_TAIL // 8] = e  # TSO: the record's bytes are visible before TAIL
        lock = self._lock  # the only writer keeps its own count: the shared one may be scribbled on
        u64[S.OFF_LATEST_LOCK // 8] = lock + 1
        u64[S.OFF_LATEST_POS // 8] = s
        u64[S.OFF_LATEST_LEN // 8] = length
        u64[S.OFF_LATEST_SEQ // 8] = seq
        u64[S.OFF_LATEST_LOCK // 8] = lock + 2
        self._lock = (lock + 2) & 0xFFFFFFFFFFFFFFFE
        u64[S.OFF_HEARTBEAT // 8] = now
        _full_fence()
        m.wake_if_sleeping(S.OFF_DATA_WORD, S.OFF_DATA_SLEEPERS)
        m.wake_async(self._wake_sock)
        self.seq = seq + 1
        return seq

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Writes data as the next record and returns its seq."""
        check_timeout(timeout)
        return self._guarded(self._send, data, timeout)

    def loan(self, shape: Any, dtype: Any, timeout: float | None = None) -> "Loan":
        """Reserves room for an array frame and returns a Loan whose ``array`` views it in the ring."""
        return self._guarded(self._loan, shape, dtype, timeout)

    def _send(self, data: Any, timeout: float | None) -> int:
        if self.loaned is not None:
            raise DataCommsError("commit or abort the open loan before sending")
        now = time.time_ns()
        parts, frame_len = framing.encode(data, self.seq, now)
        self._reserve(frame_len, timeout)
        ring = self._m.ring
        off = self._res[0] & self._m.mask
        end = off + frame_len
        for part in parts:
            n = len(part) if isinstance(part, bytes) else memoryview(part).nbytes
            if off + n > end:
                raise FrameError("encoded parts overrun their frame length")
            ring[off:off + n] = part
            off += n
        if off != end:
            raise FrameError("encoded parts do not fill their frame length")
        return self._publish(now)

    def _loan(self, shape: Any, dtype: Any, timeout: float | None) -> "Loan":
        if self.loaned is not None:
            raise DataCommsError("a loan is already open")
        # the dtype an array of it gets: "S0" is S1, and a subarray dtype such as "(2,)i4"
        # adds its shape to the array's, as np.empty(shape, dtype) and so send() have them
        probe = np.empty(0, dtype)
        dt = probe.dtype
        # integers as np.empty takes them: numpy's too, and never a float cut down to one
        try:
            shp = (operator.index(shape),)
        except TypeError:
            shp = tuple(operator.index(s) for s in shape)
        if any(s < 0 for s in shp):
            raise FrameError(f"bad shape {shape!r}")
        shp += probe.shape[1:]
        meta = framing.dumps_json({"dtype": _meta.dtype_to_json(dt), "shape": list(shp)})
        count = math.prod(shp)   # exact: np.prod in int64 wraps round for huge shapes
        nbytes = count * dt.itemsize
        mpad = -len(meta) % 64
        frame_len = 64 + len(meta) + mpad + nbytes + (-nbytes % 64)
        self._reserve(frame_len, timeout)
        off = self._res[0] & self._m.mask
        head = framing.pack_header(framing.KIND_ARRAY, 0, self.seq, 0, len(meta), 1, nbytes)
        ring = self._m.ring
        ring[off:off + 64 + len(meta) + mpad] = head + meta + bytes(mpad)
        start = off + 64 + len(meta) + mpad
        ring[start + nbytes:off + frame_len] = bytes(off + frame_len - start - nbytes)
        if dt.itemsize == 0:
            arr = np.empty(shp, dt)   # "V0": no bytes to view (np.frombuffer refuses the dtype)
        else:
            arr = np.frombuffer(ring, dtype=dt, count=count, offset=start).reshape(shp)
        self.loaned = Loan(self, arr)
        return self.loaned

    def async_prepare(self, wake_id: int) -> None:
        """Block mode: announces a sleep for room on the wake socket named by wake_id
        (see csrc/dc_ring.h); the caller then tries to send once more before sleeping."""
        m = self._m
        if m is None or self._closing:
            raise Closed("this publisher is closed")
        m.u64[S.OFF_SPACE_WAKE_ID // 8] = wake_id
        m.u32[S.OFF_SPACE_ASYNC // 4] = 1
        _full_fence()

    def _commit_loan(self, loan: "Loan") -> int:
        if self._m is None or self._closing:
            raise Closed("this publisher is closed")
        if loan is not self.loaned:
            raise DataCommsError("this loan is no longer open")
        self.loaned = None
        now = time.time_ns()
        off = self._res[0] & self._m.mask
        struct.pack_into("<Qq", self._m.ring, off + 8, self.seq, now)
        return self._publish(now)

    def _abort_loan(self, loan: "Loan") -> None:
        if loan is self.loaned:
            self.loaned = None

    def _forked(self) -> None:
        """In a child forked from the owner: closed here without a word to the ring, which the
        parent still uses (a loan open at the fork, or a send bound before it, raises Closed)."""
        if self._m is None or self._closing:
            return
        self.loaned = None
        self._closing = True
        self._wake_sock.close()   # the child's copy of the descriptor
        if not self._busy:
            self._let_go()

    def close(self) -> None:
        """Marks the ring closed, wakes every sleeper and lets go of the buffer; a send of
        another thread waiting for room meanwhile raises Closed at the end of its wait
        slice and lets go of the buffer then."""
        m = self._m
        if m is None or self._closing:
            return
        self.loaned = None
        self._closing = True
        m.u32[S.OFF_CLOSED // 4] = 1
        m.u32[S.OFF_DATA_WORD // 4] = (m.u32[S.OFF_DATA_WORD // 4] + 1) & 0xFFFFFFFF
        _full_fence()
        _futex_wake_all(m.addr + S.OFF_DATA_WORD)
        m.wake_async(self._wake_sock)
        self._wake_sock.close()
        if not self._busy:
            self._let_go()

    def _let_go(self) -> None:
        m = self._m
        if m is None:
            return
        self._m = None
        m.release()


class Loan:
    """Room for one array frame in the ring: fill ``array`` in place, then ``commit()``
    (returns the seq) or ``abort()``. The array must not be touched after either."""

    __slots__ = ("array", "_writer")

    def __init__(self, writer: Any, array: np.ndarray) -> None:
        self.array = array
        self._writer = writer

    def commit(self) -> int:
        return self._writer._commit_loan(self)

    def abort(self) -> None:
        self._writer._abort_loan(self)

    def __enter__(self) -> "Loan":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if self._writer.loaned is self:
                self.commit()
        else:
            self.abort()


from ._ring_reader import Reader  # noqa: E402  (the reader half lives in its own module)

__all__ = ["Writer", "Reader", "Loan"]
