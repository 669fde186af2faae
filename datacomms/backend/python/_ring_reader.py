"""The subscriber half of the pure-Python ring (see ring.py for the memory
ordering this relies on, and csrc/dc_ring.h for the algorithm)."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

from ...errors import Closed, check_timeout, FrameError, Timeout
from ...message import Message
from .. import _segment as S
from . import framing
from .ring import _Guarded, CHECK_NS, DC_OK, EMPTY, LAPPED, SLICE_NS, _PAD_MAGIC, _U64, _deadline, _full_fence, \
    _futex_wait, _Mapped
from .stats import Stats


class Reader(_Guarded):
    """One subscriber's end of a ring: its slot's cursor, its Stats, its waits.
    ``alive()`` (optional) says whether the publisher still lives."""

    _what = "subscriber"

    def __init__(self, buf: Any, slot: int, alive: Callable[[], bool] | None = None, name: str = "",
                 spin_us: float = 0.0, stats: Any = None) -> None:
        self._m: _Mapped | None = _Mapped(buf)
        if not 0 <= slot < self._m.max_subs:
            self._m.release()
            raise ValueError(f"slot {slot} lies outside the segment")
        self._slot_off = S.OFF_SLOTS + slot * S.SLOT_SIZE
        self._slot_cursor = (self._slot_off + S.SLOT_CURSOR) // 8
        self.cursor = self._m.u64[self._slot_cursor]
        self._tail_seen = self.cursor
        self._join_seq = self._m.u64[(S.OFF_SLOTS + slot * S.SLOT_SIZE + S.SLOT_JOIN_SEQ) // 8]
        self.stats = Stats() if stats is None else stats
        self.alive = alive
        self.name = name
        self._spin_ns = int(spin_us * 1000)
        self._next_check = 0
        self._last_seq: int | None = None
        self._hold: int | None = None
        self._ro = self._m.mv.toreadonly()
        self._ring_off = S.data_offset(self._m.max_subs)
        # block mode: wakes a publisher waiting for room in an event loop (dc_wake_space_async)
        self._wake_sock: socket.socket | None = None
        if self._m.block:
            self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._wake_sock.setblocking(False)

    # -- the mechanics of dc_reader_* -------------------------------------------------

    def _valid(self, pos: int) -> bool:
        return self._m.u64[S.OFF_INTENT // 8] - pos <= self._m.cap

    def _advance(self, to: int) -> None:
        m = self._m
        self.cursor = to
        m.u64[self._slot_cursor] = to
        if m.block:
            _full_fence()
            m.wake_if_sleeping(S.OFF_SPACE_WORD, S.OFF_SPACE_SLEEPERS)
            m.wake_space_async(self._wake_sock)

    def _resync(self, newest: bool) -> None:
        to = self._m.u64[S.OFF_HEAD // 8]
        if newest:
            latest = self._m.latest()
            if latest is not None and latest[0] > to:
                to = latest[0]
        self._advance(to)

    def _next(self) -> tuple[int, Any]:
        """(DC_OK, (pos, header)), (EMPTY, None), (LAPPED, None); raises FrameError on corruption."""
        m = self._m
        while True:
            c = self.cursor
            tail = self._tail_seen
            # a reader behind the writer reads a batch of records per load of TAIL
            if not 0 < tail - c <= m.cap:
                tail = self._tail_seen = m.u64[S.OFF_TAIL // 8]
                if c == tail:
                    return EMPTY, None
            if tail - c > m.cap or c > tail:
                return LAPPED, None
            off = c & m.mask
            avail = min(tail - c, m.cap - off)
            if m.ring[off:off + 4] == _PAD_MAGIC:
                length = _U64.unpack_from(m.ring, off + 40)[0]
                if not self._valid(c):
                    return LAPPED, None
                if length != m.cap - off or length > tail - c:
                    self._corrupt("bad padding record")
                self.cursor = c + length
                continue
            try:
                h = framing.unpack_header(m.ring[off:off + avail], 0, avail)
            except FrameError as exc:
                if not self._valid(c):
                    return LAPPED, None
                self._corrupt(str(exc))
            return DC_OK, (c, h)

    def _corrupt(self, why: str) -> None:
        self._advance(self._m.u64[S.OFF_TAIL // 8])
        raise FrameError(f"corrupted record in shared-memory ring {self.name} ({why}); skipped to the newest")

    def _wait(self, deadline: int) -> None:
        """Waits until the ring may hold something past the cursor; raises Timeout or Closed."""
        if self._closing:
            raise Closed("this subscriber was closed while waiting")
        m = self._m
        u64 = m.u64
        now = time.monotonic_ns()
        if m.u32[S.OFF_CLOSED // 4]:
            if u64[S.OFF_TAIL // 8] != self.cursor:
                return
            raise Closed(f"the publisher of {self.name} closed")
        if now >= self._next_check and self.alive is not None:
            self._next_check = now + CHECK_NS
            if not self.alive():
                if u64[S.OFF_TAIL // 8] != self.cursor:
                    return
                raise Closed(f"the publisher of {self.name} is gone")
        if 0 <= deadline <= now:
            raise Timeout(f"nothing new on {self.name}")
        if self._spin_ns:
            end = now + self._spin_ns if deadline < 0 else min(deadline, now + self._spin_ns)
            while u64[S.OFF_TAIL // 8] == self.cursor and time.monotonic_ns() < end:
                pass
            if u64[S.OFF_TAIL // 8] != self.cursor:
                return
            now = time.monotonic_ns()
        v = m.sleep_prepare(S.OFF_DATA_WORD, S.OFF_DATA_SLEEPERS)
        if u64[S.OFF_TAIL // 8] != self.cursor or m.u32[S.OFF_CLOSED // 4]:
            return
        left = SLICE_NS if deadline < 0 else min(SLICE_NS, max(deadline - now, 0))
        if left > 0:
            _futex_wait(m.addr + S.OFF_DATA_WORD, v, left)
        if self._closing:
            raise Closed("this subscriber was closed while waiting")

    def _take(self, pos: int, h: tuple, copy: bool, skipped: int) -> Message | None:
        """The message of the validated record at pos, or None when it was overwritten meanwhile."""
        m = self._m
        off = pos & m.mask
        kind, _, seq, ts, _, _, payload_len, flen = h
        if copy:
            if kind == framing.KIND_RAW:
                data: Any = bytes(m.ring[off + 64:off + 64 + payload_len])
                if not self._valid(pos):
                    return None
                self._advance(pos + flen)
            else:
                frame = bytearray(m.ring[off:off + flen])
                if not self._valid(pos):
                    return None
                self._advance(pos + flen)
                data, seq, ts, _, _ = framing.decode(frame)
        else:
            try:
                data, seq, ts, _, _ = framing.decode(self._ro, self._ring_off + off)
            except FrameError:
                if not self._valid(pos):
                    return None
                self._advance(pos + flen)
                raise
            if not self._valid(pos):
                return None
            # hold: the published cursor stays on the record while views of it exist
            self.cursor = pos + flen
            m.u64[self._slot_cursor] = pos
            self._hold = pos
        if self._last_seq is None and seq > self._join_seq and skipped == 0:
            self.stats.add_lost(seq - self._join_seq)  # lapped before the first message
        self.stats.record(seq, ts, skipped=skipped)
        self._last_seq = seq
        return Message(data, seq, ts)

    # -- the API -----------------------------------------------------------------------

    def recv(self, timeout: float | None = None, copy: bool = True) -> Message:
        """The next record as a Message; see the transport for the semantics."""
        check_timeout(timeout)
        return self._guarded(self._recv, timeout, copy)

    def latest(self, timeout: float | None = None, copy: bool = True) -> Message:
        """The newest record not yet received, counting the ones passed over as skipped."""
        check_timeout(timeout)
        return self._guarded(self._latest, timeout, copy)

    def _recv(self, timeout: float | None, copy: bool) -> Message:
        if self._hold is not None:
            self.release()
        laps = 0
        deadline: int | None = None
        while True:
            rc, found = self._next()
            if rc == DC_OK:
                msg = self._take(found[0], found[1], copy, 0)
                if msg is not None:
                    return msg
                rc = LAPPED
            if rc == LAPPED:
                # first to the oldest intact record, then to the newest; a header
                # scribbled on so that neither holds sends the cursor to TAIL
                laps += 1
                if laps > 3:
                    self._advance(self._m.u64[S.OFF_TAIL // 8])
                else:
                    self._resync(laps > 1)
            else:
                if deadline is None:
                    deadline = _deadline(timeout)
                self._wait(deadline)

    def _latest(self, timeout: float | None, copy: bool) -> Message:
        if self._hold is not None:
            self.release()
        m = self._m
        deadline: int | None = None
        misses = 0
        while True:
            # read before the descriptor: once closed, the descriptor is final
            closed = m.u32[S.OFF_CLOSED // 4]
            if m.u64[S.OFF_TAIL // 8] - self.cursor > m.cap:
                self._resync(True)
            latest = m.latest()
            # A subscriber that has received nothing yet may take the record that was
            # newest when it joined (it ends at the join cursor): a late joiner is never blind.
            if latest is not None and (latest[0] >= self.cursor or
                                       (self._last_seq is None and latest[0] + latest[1] >= self.cursor)):
                pos, length, _ = latest
                off = pos & m.mask
                try:
                    if length > m.cap - off:
                        raise FrameError("latest record runs past the ring")
                    h = framing.unpack_header(m.ring[off:off + length], 0, length)
                    if h[7] != length:
                        raise FrameError("latest record length disagrees with its header")
                except FrameError as exc:
                    if self._valid(pos):
                        self._corrupt(str(exc))
                else:
                    last = self._last_seq
                    if last is not None:
                        skipped = h[2] - last - 1 if h[2] > last + 1 else 0
                    else:
                        skipped = h[2] - self._join_seq if h[2] > self._join_seq else 0
                    msg = self._take(pos, h, copy, skipped)
                    if msg is not None:
                        return msg
                # Overwritten: by the record being written now (its descriptor comes next),
                # or by one that was never published (an aborted loan). Past it, wait for
                # the next one; only a descriptor that stays wrong while TAIL says there is
                # more is taken for scribbled on.
                tail = m.u64[S.OFF_TAIL // 8]
                if self.cursor < pos + length <= tail:
                    self._advance(pos + length)
                if tail == self.cursor:
                    if deadline is None:
                        deadline = _deadline(timeout)
                    self._wait(deadline)
                elif misses > 1000:
                    self._corrupt("the latest-value descriptor names an overwritten record")
                else:
                    misses += 1
                continue
            if closed:
                # nothing newer will come (waiting would return at once, for ever,
                # when a scribbled TAIL says there is more to read)
                raise Closed(f"the publisher of {self.name} closed")
            if deadline is None:
                deadline = _deadline(timeout)
            self._wait(deadline)

    def async_prepare(self, wake_id: int) -> bool:
        """Announces a sleep on the wake socket named by wake_id (see csrc/dc_ring.h):
        True when the caller may sleep, False when something may be there to read now."""
        m = self._m
        if m is None or self._closing:
            raise Closed("this subscriber is closed")
        m.u64[(self._slot_off + S.SLOT_WAKE_ID) // 8] = wake_id
        m.u32[(self._slot_off + S.SLOT_WAKE) // 4] = 1
        m.u32[S.OFF_ASYNC_SLEEPERS // 4] = 1  # TSO: after the slot's flag, as the scan reads them
        _full_fence()
        return m.u64[S.OFF_TAIL // 8] == self.cursor and not m.u32[S.OFF_CLOSED // 4]

    def release(self) -> None:
        """Ends the zero-copy hold of the last record (a block-mode publisher may overwrite it now)."""
        if self._hold is not None and self._m is not None and not self._closing:
            self._hold = None
            self._advance(self.cursor)

    def still_valid(self) -> bool:
        """Whether the record of the last zero-copy message is still intact in the ring."""
        if self._hold is None or self._m is None or self._closing:
            return False
        return self._valid(self._hold)

    def _forked(self) -> None:
        """In a child forked from the owner: closed here without a word to the slot, which the
        parent still uses (a recv bound before the fork raises Closed)."""
        self.close()

    def close(self) -> None:
        """Lets go of the mapping; a recv/latest of another thread waiting meanwhile raises
        Closed at the end of its wait slice and lets go of it then."""
        if self._m is None or self._closing:
            return
        self._hold = None
        self._closing = True
        if not self._busy:
            self._let_go()

    def _let_go(self) -> None:
        m = self._m
        if m is None:
            return
        self._m = None
        if self._wake_sock is not None:
            self._wake_sock.close()
        try:
            self._ro.release()
        except BufferError:
            pass
        m.release()
