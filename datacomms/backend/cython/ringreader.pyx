# cython: language_level=3
"""The shm:// ring's reader, compiled (see ring.pyx for the writer and the
ownership rules; the readable twin is backend/python/_ring_reader.py).
Every length C reads from the segment is checked against the ring bounds
(dc_reader_next, dc_reader_check_at) before it is used."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_FromStringAndSize, PyByteArray_AS_STRING
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

import socket

import numpy as np

from ...errors import Closed, NAN_TIMEOUT, DataCommsError, FrameError, Timeout
from .._segment import SLOT_SIZE, OFF_SLOTS
from ._csrc cimport (
    DC_OK, DC_RING_EMPTY, DC_RING_LAPPED, DC_RING_OFF_DATA_WORD, DC_RING_OFF_DATA_SLEEPERS, dc_async_prepare,
    DC_KIND_RAW, DC_RING_OFF_SLOTS, DC_RING_OFF_MAX_SUBS, DC_RING_SLOT_SIZE, DC_RING_SLOT_JOIN_SEQ, dc_ld32, dc_ld64, dc_au32, dc_header,
    dc_cpu_relax, dc_realtime_ns, dc_monotonic_ns, dc_futex_wait, dc_sleep_prepare, dc_reader_init,
    dc_ring_tail, dc_ring_closed, dc_reader_valid, dc_reader_next, dc_reader_advance, dc_reader_hold,
    dc_ring_latest, dc_reader_resync, dc_reader_check_at,
)
from ..._message cimport make_message
from .framing import decode
from .stats cimport Stats

from ._ringutil cimport CHECK_NS, SLICE_NS, _copy, _deadline, _fits

cdef class Reader:
    """One subscriber's end of a ring: its slot's cursor, its Stats, its waits.
    ``alive()`` (optional) says whether the publisher still lives."""

    def __cinit__(self, buf, uint32_t slot, alive=None, name="", double spin_us=0.0, stats=None):
        PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
        self.has_view = True
        if <Py_ssize_t>(OFF_SLOTS + (slot + 1) * SLOT_SIZE) > self.view.len:
            PyBuffer_Release(&self.view)
            self.has_view = False
            raise ValueError(f"slot {slot} lies outside the segment")
        dc_reader_init(&self.r, <uint8_t *>self.view.buf, slot)
        # the capacity and ring offset C just loaded must describe this buffer
        if not _fits(self.view.len, self.r.ring - self.r.base, self.r.cap,
                     dc_ld32(<uint8_t *>self.view.buf + DC_RING_OFF_MAX_SUBS)) or \
                slot >= dc_ld32(<uint8_t *>self.view.buf + DC_RING_OFF_MAX_SUBS):
            PyBuffer_Release(&self.view)
            self.has_view = False
            raise DataCommsError("shared-memory ring header is inconsistent with its size")
        self.slot = slot
        if self.r.block:
            # wakes a block-mode publisher sleeping in an event loop (dc_wake_space_async)
            self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._wake_sock.setblocking(False)
            self.r.wake_fd = self._wake_sock.fileno()
        self.join_seq = dc_ld64(<uint8_t *>self.view.buf + DC_RING_OFF_SLOTS + slot * DC_RING_SLOT_SIZE
                                + DC_RING_SLOT_JOIN_SEQ)
        self.stats = Stats() if stats is None else stats
        self.alive = alive
        self.name = name
        self._ro = memoryview(buf).toreadonly()
        self.spin_ns = <int64_t>(spin_us * 1000.0)
        self.next_check_ns = 0

    @property
    def cursor(self):
        return self.r.cursor

    cdef int wait(self, int64_t deadline) except -1:
        """Waits until the ring may hold something past the cursor; raises Timeout or Closed."""
        cdef uint8_t *base = self.r.base
        cdef int64_t now = dc_monotonic_ns(), end, left
        cdef uint32_t v
        cdef dc_au32 *word = <dc_au32 *>(base + DC_RING_OFF_DATA_WORD)
        cdef dc_au32 *flag = <dc_au32 *>(base + DC_RING_OFF_DATA_SLEEPERS)
        if self.closing:
            raise Closed("this subscriber was closed while waiting")
        if dc_ring_closed(base):
            if dc_ring_tail(base) != self.r.cursor:
                return 0
            raise Closed(f"the publisher of {self.name} closed")
        if now >= self.next_check_ns and self.alive is not None:
            self.next_check_ns = now + CHECK_NS
            if not self.alive():
                if dc_ring_tail(base) != self.r.cursor:
                    return 0
                raise Closed(f"the publisher of {self.name} is gone")
        if deadline >= 0 and now >= deadline:
            raise Timeout(f"nothing new on {self.name}")
        if self.spin_ns > 0:
            end = now + self.spin_ns
            if deadline >= 0 and deadline < end:
                end = deadline
            with nogil:
                while dc_ring_tail(base) == self.r.cursor and dc_monotonic_ns() < end:
                    dc_cpu_relax()
            if dc_ring_tail(base) != self.r.cursor:
                return 0
            now = dc_monotonic_ns()
        v = dc_sleep_prepare(word, flag)
        if dc_ring_tail(base) != self.r.cursor or dc_ring_closed(base):
            return 0
        left = SLICE_NS if deadline < 0 else min(SLICE_NS, max(deadline - now, 0))
        if left > 0:
            with nogil:
                dc_futex_wait(word, v, left)
        PyErr_CheckSignals()
        if self.closing:
            raise Closed("this subscriber was closed while waiting")
        return 0

    cdef object take(self, uint64_t pos, dc_header *h, bint copy, long long skipped):
        """The message of the validated record at pos, or None when it was overwritten meanwhile."""
        cdef const uint8_t *p = self.r.ring + (pos & self.r.mask)
        cdef uint64_t seq = h.seq, flen = h.frame_len
        cdef int64_t ts = h.timestamp_ns
        cdef Py_ssize_t n
        if copy:
            if h.kind == DC_KIND_RAW:
                n = <Py_ssize_t>h.payload_len
                data = PyBytes_FromStringAndSize(NULL, n)
                _copy(PyBytes_AS_STRING(data), p + 64, n)
                if not dc_reader_valid(&self.r, pos):
                    return None
                dc_reader_advance(&self.r, pos + flen)
            else:
                frame = PyByteArray_FromStringAndSize(NULL, <Py_ssize_t>flen)
                _copy(PyByteArray_AS_STRING(frame), p, flen)
                if not dc_reader_valid(&self.r, pos):
                    return None
                dc_reader_advance(&self.r, pos + flen)
                data, seq, ts, _, _ = decode(frame)
        else:
            try:
                if self._ro_arr is None:   # arrays sliced from it cost a fifth of np.frombuffer
                    self._ro_arr = np.frombuffer(self._ro, dtype=np.uint8)
                data, seq, ts, _, _ = decode(self._ro_arr, <Py_ssize_t>(p - <const uint8_t *>self.view.buf))
            except FrameError:
                if not dc_reader_valid(&self.r, pos):
                    return None
                dc_reader_advance(&self.r, pos + flen)
                raise
            if not dc_reader_valid(&self.r, pos):
                return None
            dc_reader_hold(&self.r, pos, pos + flen)
            self.holding = True
            self.hold_pos = pos
        if not self.have_seq and seq > self.join_seq and skipped == 0:
            self.stats.add_lost(seq - self.join_seq)  # lapped before the first message
        self.stats.fast_record(seq, ts, dc_realtime_ns(), skipped)
        self.have_seq = True
        self.last_seq = seq
        return make_message(data, seq, ts, None)

    cdef _corrupt(self, int rc):
        dc_reader_advance(&self.r, dc_ring_tail(self.r.base))
        raise FrameError(f"corrupted record in shared-memory ring {self.name} (code {rc}); skipped to the newest")

    def recv(self, timeout=None, bint copy=True):
        """The next record as a Message; see the transport for the semantics."""
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        if not self.has_view or self.closing:
            raise Closed("this subscriber is closed")
        # close() from another thread meanwhile keeps the buffer until this call is out of it
        self.busy += 1
        try:
            return self._recv(timeout, copy)
        finally:
            self.busy -= 1
            if self.closing and self.busy == 0:
                self._let_go()

    def latest(self, timeout=None, bint copy=True):
        """The newest record not yet received, counting the ones passed over as skipped."""
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        if not self.has_view or self.closing:
            raise Closed("this subscriber is closed")
        self.busy += 1
        try:
            return self._latest(timeout, copy)
        finally:
            self.busy -= 1
            if self.closing and self.busy == 0:
                self._let_go()

    cdef object _recv(self, object timeout, bint copy):
        cdef uint64_t pos
        cdef dc_header h
        cdef int rc, laps = 0
        cdef int64_t deadline = -2
        if self.holding:
            self.release()
        while True:
            rc = dc_reader_next(&self.r, &pos, &h)
            if rc == DC_OK:
                msg = self.take(pos, &h, copy, 0)
                if msg is not None:
                    return msg
                rc = DC_RING_LAPPED
            if rc == DC_RING_LAPPED:
                # first to the oldest intact record, then to the newest; a header
                # scribbled on so that neither holds sends the cursor to TAIL
                laps += 1
                if laps > 3:
                    dc_reader_advance(&self.r, dc_ring_tail(self.r.base))
                else:
                    dc_reader_resync(&self.r, laps > 1)
            elif rc == DC_RING_EMPTY:
                if deadline == -2:
                    deadline = _deadline(timeout)
                self.wait(deadline)
            else:
                self._corrupt(rc)

    cdef object _latest(self, object timeout, bint copy):
        cdef uint64_t pos, length, seq, tail
        cdef dc_header h
        cdef int rc
        cdef long long skipped
        cdef int64_t deadline = -2
        cdef int misses = 0
        cdef bint closed
        if self.holding:
            self.release()
        while True:
            # read before the descriptor: once closed, the descriptor is final
            closed = dc_ring_closed(self.r.base)
            if dc_ring_tail(self.r.base) - self.r.cursor > self.r.cap:
                dc_reader_resync(&self.r, 1)
            rc = dc_ring_latest(self.r.base, &pos, &length, &seq)
            # A subscriber that has received nothing yet may take the record that was
            # newest when it joined (it ends at the join cursor): a late joiner is never blind.
            if rc == DC_OK and (pos >= self.r.cursor or (not self.have_seq and pos + length >= self.r.cursor)):
                rc = dc_reader_check_at(&self.r, pos, length, &h)
                if rc == DC_OK:
                    skipped = 0
                    if self.have_seq and h.seq > self.last_seq + 1:
                        skipped = <long long>(h.seq - self.last_seq - 1)
                    elif not self.have_seq and h.seq > self.join_seq:
                        skipped = <long long>(h.seq - self.join_seq)
                    msg = self.take(pos, &h, copy, skipped)
                    if msg is not None:
                        return msg
                elif rc != DC_RING_LAPPED:
                    self._corrupt(rc)
                # Overwritten: by the record being written now (its descriptor comes next),
                # or by one that was never published (an aborted loan). Past it, wait for
                # the next one; only a descriptor that stays wrong while TAIL says there is
                # more is taken for scribbled on.
                tail = dc_ring_tail(self.r.base)
                if self.r.cursor < pos + length <= tail:
                    dc_reader_advance(&self.r, pos + length)
                if tail == self.r.cursor:
                    if deadline == -2:
                        deadline = _deadline(timeout)
                    self.wait(deadline)
                elif misses > 1000:
                    self._corrupt(DC_RING_LAPPED)  # a descriptor that never names an intact record
                else:
                    misses += 1
                continue
            if closed:
                # nothing newer will come (waiting would return at once, for ever,
                # when a scribbled TAIL says there is more to read)
                raise Closed(f"the publisher of {self.name} closed")
            if deadline == -2:
                deadline = _deadline(timeout)
            self.wait(deadline)

    def async_prepare(self, uint64_t wake_id):
        """Announces a sleep on the wake socket named by wake_id (see csrc/dc_ring.h):
        True when the caller may sleep, False when something may be there to read now."""
        if not self.has_view or self.closing:
            raise Closed("this subscriber is closed")
        return bool(dc_async_prepare(self.r.base, self.slot, wake_id, self.r.cursor))

    def release(self):
        """Ends the zero-copy hold of the last record (a block-mode publisher may overwrite it now)."""
        if self.holding and self.has_view and not self.closing:
            self.holding = False
            dc_reader_advance(&self.r, self.r.cursor)

    def still_valid(self):
        """Whether the record of the last zero-copy message is still intact in the ring."""
        if not self.holding or not self.has_view or self.closing:
            return False
        return bool(dc_reader_valid(&self.r, self.hold_pos))

    def _forked(self):
        """In a child forked from the owner: closed here without a word to the slot, which the
        parent still uses (a recv bound before the fork raises Closed)."""
        self.close()

    def close(self):
        """Lets go of the buffer; a recv/latest of another thread waiting meanwhile raises
        Closed at the end of its wait slice and lets go of it then (never a use after unmap)."""
        if self.has_view and not self.closing:
            self.holding = False
            self.closing = True
            if self.busy == 0:
                self._let_go()

    cdef void _let_go(self) noexcept:
        if self.has_view:
            if self._wake_sock is not None:
                self.r.wake_fd = -1
                try:
                    self._wake_sock.close()
                except Exception:
                    pass
            PyBuffer_Release(&self.view)
            self.has_view = False
            self._ro_arr = None
            try:
                self._ro.release()
            except BufferError:
                pass  # zero-copy views still exist; the mapping lives until they go

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
