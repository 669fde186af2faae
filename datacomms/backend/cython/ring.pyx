# cython: language_level=3
"""The shm:// ring, compiled: a thin owner of csrc/dc_ring.h's writer (the
reader is ringreader.pyx, re-exported here). The readable reference of the same API and algorithm is
backend/python/ring.py; backend/_segment.py lays out and checks the header.

Ownership: the segment is a Python mmap; Writer and Reader hold a buffer
export of it from construction to close(), so the mapping cannot go away
under the C code. Every length C reads from the segment is checked against
the ring bounds (dc_reader_next, dc_reader_check_at) before it is used.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset

import operator
import socket

import numpy as np

from ...errors import Closed, NAN_TIMEOUT, DataCommsError, FrameError, Timeout
from .. import _meta
from .._segment import SLOT_SIZE
from ._csrc cimport (
    DC_OK, DC_RING_OFF_DATA_WORD, DC_RING_OFF_DATA_SLEEPERS, DC_RING_OFF_ASYNC_SLEEPERS, DC_RING_SLOT_WAKE,
    DC_RING_SLOT_WAKE_ID, dc_space_async_prepare, DC_RING_OFF_SPACE_ASYNC, DC_RING_OFF_SPACE_WAKE_ID,
    DC_RING_OFF_SPACE_WORD, DC_RING_OFF_SPACE_SLEEPERS, DC_KIND_RAW, DC_RING_OFF_TAIL, DC_RING_OFF_INTENT,
    DC_RING_OFF_HEAD, DC_RING_OFF_CLOSED, DC_RING_OFF_SUBS_WORD, DC_RING_OFF_LATEST_LOCK,
    DC_RING_OFF_LATEST_POS, DC_RING_OFF_LATEST_SEQ, DC_RING_OFF_SLOTS, DC_RING_SLOT_SIZE, DC_RING_SLOT_CURSOR,
    DC_RING_SLOT_JOIN_SEQ, DC_RING_MAGIC, dc_au32, dc_header, dc_header_pack, dc_align64, dc_frame_len,
    dc_st64, dc_cpu_relax, dc_realtime_ns, dc_monotonic_ns, dc_futex_wait, dc_sleep_prepare, dc_writer_init,
    dc_writer_reserve, dc_writer_ptr, dc_writer_commit, dc_writer_close, dc_reader_next, dc_reader_check_at,
)
from .framing cimport encode, dumps_json
from ._ringutil cimport REAP_AFTER_NS, SLICE_NS, _copy, _deadline, _fits


def _layout():
    """The header offsets as csrc/dc_ring.h defines them (a test compares them with _segment)."""
    return {"TAIL": DC_RING_OFF_TAIL, "INTENT": DC_RING_OFF_INTENT, "HEAD": DC_RING_OFF_HEAD,
            "CLOSED": DC_RING_OFF_CLOSED, "DATA_WORD": DC_RING_OFF_DATA_WORD,
            "DATA_SLEEPERS": DC_RING_OFF_DATA_SLEEPERS, "SPACE_WORD": DC_RING_OFF_SPACE_WORD,
            "SPACE_SLEEPERS": DC_RING_OFF_SPACE_SLEEPERS, "SUBS_WORD": DC_RING_OFF_SUBS_WORD,
            "LATEST_LOCK": DC_RING_OFF_LATEST_LOCK, "LATEST_POS": DC_RING_OFF_LATEST_POS,
            "LATEST_SEQ": DC_RING_OFF_LATEST_SEQ, "SLOTS": DC_RING_OFF_SLOTS, "SLOT_SIZE": DC_RING_SLOT_SIZE,
            "SLOT_CURSOR": DC_RING_SLOT_CURSOR, "SLOT_JOIN_SEQ": DC_RING_SLOT_JOIN_SEQ, "MAGIC": DC_RING_MAGIC,
            "ASYNC_SLEEPERS": DC_RING_OFF_ASYNC_SLEEPERS, "SLOT_WAKE": DC_RING_SLOT_WAKE,
            "SLOT_WAKE_ID": DC_RING_SLOT_WAKE_ID, "SPACE_ASYNC": DC_RING_OFF_SPACE_ASYNC,
            "SPACE_WAKE_ID": DC_RING_OFF_SPACE_WAKE_ID}


# (dtype, shape) as loan() was given them -> (numpy dtype, shape tuple, bytes, frame
# meta): a camera loans the same shape again and again.
cdef dict _LOAN_SPECS = {}
cdef object _U8 = np.dtype(np.uint8)


cdef tuple _loan_spec(shape, dtype):
    # the dtype an array of it gets: "S0" is S1, and a subarray dtype such as "(2,)i4"
    # adds its shape to the array's, as np.empty(shape, dtype) and so send() have them
    probe = np.empty(0, dtype)
    dt = probe.dtype
    # integers as np.empty takes them: numpy's too, and never a float cut down to one
    try:
        shp = (operator.index(shape),)
    except TypeError:
        shp = tuple(operator.index(s) for s in shape)
    shp += probe.shape[1:]
    count = 1
    for s in shp:
        if s < 0:
            raise FrameError(f"bad shape {shape!r}")
        count *= s
    meta = dumps_json({"dtype": _meta.dtype_to_json(dt), "shape": list(shp)})
    return dt, shp, count * dt.itemsize, meta


cdef class Writer:
    """The publisher's end of a ring in a writable buffer whose header is initialised.
    ``reap`` (optional) frees dead subscribers' slots; a blocked send calls it.
    ``spin_us``: in block mode, a send that finds no room busy-polls this long
    (without the GIL) before it sleeps on the futex."""

    def __cinit__(self, buf, reap=None, double spin_us=0.0):
        PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
        self.has_view = True
        dc_writer_init(&self.w, <uint8_t *>self.view.buf)
        # the capacity, ring offset and slot count C just loaded must describe this buffer
        if not _fits(self.view.len, self.w.ring - self.w.base, self.w.cap, self.w.max_subs):
            PyBuffer_Release(&self.view)
            self.has_view = False
            raise DataCommsError("shared-memory ring header is inconsistent with its size")
        # sends the one-byte wakes to subscribers sleeping in an event loop (dc_wake_async)
        self._wake_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._wake_sock.setblocking(False)
        self.w.wake_fd = self._wake_sock.fileno()
        self.reap = reap
        self.spin_ns = <int64_t>(spin_us * 1000.0)
        self._mv = memoryview(buf)
        self.seq = 0
        self.loaned = None

    @property
    def capacity(self):
        return self.w.cap

    @property
    def tail(self):
        return self.w.tail

    cdef int reserve(self, uint64_t frame_len, object timeout) except -1:
        cdef int64_t deadline, now, blocked_since, next_reap, left, end
        cdef uint32_t v
        cdef int rc
        cdef dc_au32 *word
        cdef dc_au32 *flag
        if frame_len > self.w.cap:
            raise FrameError(f"a frame of {frame_len} bytes does not fit a ring of {self.w.cap} bytes; "
                             "give the Publisher a larger capacity")
        if dc_writer_reserve(&self.w, frame_len) == DC_OK:
            return 0
        deadline = _deadline(timeout)
        blocked_since = dc_monotonic_ns()
        if self.spin_ns > 0:
            end = blocked_since + self.spin_ns
            if deadline >= 0 and deadline < end:
                end = deadline
            with nogil:
                rc = dc_writer_reserve(&self.w, frame_len)
                while rc != DC_OK and dc_monotonic_ns() < end:
                    dc_cpu_relax()
                    rc = dc_writer_reserve(&self.w, frame_len)
            if rc == DC_OK:
                return 0
        next_reap = blocked_since + REAP_AFTER_NS
        word = <dc_au32 *>(self.w.base + DC_RING_OFF_SPACE_WORD)
        flag = <dc_au32 *>(self.w.base + DC_RING_OFF_SPACE_SLEEPERS)
        while True:
            now = dc_monotonic_ns()
            if now >= next_reap and self.reap is not None:
                next_reap = now + REAP_AFTER_NS
                self.reap()
            v = dc_sleep_prepare(word, flag)
            if dc_writer_reserve(&self.w, frame_len) == DC_OK:
                return 0
            if deadline >= 0 and now >= deadline:
                raise Timeout("send timed out waiting for a slow subscriber (on_full='block')")
            left = SLICE_NS if deadline < 0 else min(SLICE_NS, deadline - now)
            with nogil:
                dc_futex_wait(word, v, left)
            PyErr_CheckSignals()
            if self.closing:
                raise Closed("this publisher was closed while send waited for room")

    cdef uint64_t publish(self, int64_t now) noexcept:
        cdef uint64_t seq = self.seq
        dc_writer_commit(&self.w, seq, now)
        self.seq = seq + 1
        return seq

    def send(self, data, timeout=None):
        """Writes data as the next record and returns its seq."""
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        if not self.has_view or self.closing:
            raise Closed("this publisher is closed")
        # close() from another thread meanwhile keeps the buffer until this call is out of it
        self.busy += 1
        try:
            return self._send(data, timeout)
        finally:
            self.busy -= 1
            if self.closing and self.busy == 0:
                self._let_go()

    def loan(self, shape, dtype, timeout=None):
        """Reserves room for an array frame and returns a Loan whose ``array`` views it in the ring."""
        if not self.has_view or self.closing:
            raise Closed("this publisher is closed")
        self.busy += 1
        try:
            return self._loan(shape, dtype, timeout)
        finally:
            self.busy -= 1
            if self.closing and self.busy == 0:
                self._let_go()

    cdef object _send(self, object data, object timeout):
        cdef int64_t now = dc_realtime_ns()
        cdef uint64_t seq = self.seq
        cdef uint64_t frame_len, off = 0
        cdef Py_ssize_t n
        cdef uint8_t *p
        cdef dc_header h
        cdef Py_buffer pb
        if self.loaned is not None:
            raise DataCommsError("commit or abort the open loan before sending")
        if type(data) is bytes:
            # raw bytes: header and payload straight into the ring, no frame object
            n = PyBytes_GET_SIZE(data)
            frame_len = 64 + dc_align64(n)
            self.reserve(frame_len, timeout)
            p = dc_writer_ptr(&self.w)
            h.kind = DC_KIND_RAW
            h.flags = 0
            h.seq = seq
            h.timestamp_ns = now
            h.meta_len = 0
            h.nbufs = 1
            h.payload_len = n
            dc_header_pack(p, &h)
            _copy(p + 64, PyBytes_AS_STRING(data), n)
            memset(p + 64 + n, 0, frame_len - 64 - n)
            return self.publish(now)
        parts, flen = encode(data, seq, now)
        frame_len = flen
        self.reserve(frame_len, timeout)
        p = dc_writer_ptr(&self.w)
        for part in parts:
            PyObject_GetBuffer(part, &pb, PyBUF_SIMPLE)
            try:
                if off + <uint64_t>pb.len > frame_len:
                    raise FrameError("encoded parts overrun their frame length")
                _copy(p + off, pb.buf, pb.len)
                off += pb.len
            finally:
                PyBuffer_Release(&pb)
        if off != frame_len:
            raise FrameError("encoded parts do not fill their frame length")
        return self.publish(now)

    cdef object _loan(self, object shape, object dtype, object timeout):
        cdef bytes meta
        cdef uint64_t frame_len, mlen, start, nbytes
        cdef uint8_t *p
        cdef dc_header h
        if self.loaned is not None:
            raise DataCommsError("a loan is already open")
        try:
            spec = _LOAN_SPECS.get((dtype, shape))
        except TypeError:   # a shape given as a list
            spec = None
        if spec is None:
            spec = _loan_spec(shape, dtype)
            if len(_LOAN_SPECS) >= 64:
                _LOAN_SPECS.clear()
            try:
                _LOAN_SPECS[(dtype, shape)] = spec
            except TypeError:
                pass
        dt, shp, size, meta = spec
        mlen = len(meta)
        # checked as Python ints first: dc_frame_len on a size near 2**64 wraps round to a
        # small frame, and the array and the zeroing of its padding would miss the reservation
        if size > self.w.cap:
            raise FrameError(f"an array of {size} bytes does not fit a ring of {self.w.cap} bytes; "
                             "give the Publisher a larger capacity")
        nbytes = size
        frame_len = dc_frame_len(<uint32_t>mlen, nbytes)
        self.reserve(frame_len, timeout)
        p = dc_writer_ptr(&self.w)
        h.kind = 1
        h.flags = 0
        h.seq = self.seq
        h.timestamp_ns = 0
        h.meta_len = <uint32_t>mlen
        h.nbufs = 1
        h.payload_len = nbytes
        dc_header_pack(p, &h)
        memcpy(p + 64, PyBytes_AS_STRING(meta), mlen)
        memset(p + 64 + mlen, 0, dc_align64(mlen) - mlen)
        start = 64 + dc_align64(mlen)
        memset(p + start + nbytes, 0, frame_len - start - nbytes)
        offset = <Py_ssize_t>(p - <uint8_t *>self.view.buf) + <Py_ssize_t>start
        # a slice of one array over the ring: a fifth of the cost of np.frombuffer per loan
        if self._base is None:
            self._base = np.frombuffer(self._mv, dtype=np.uint8)
        if dt.itemsize == 0:
            arr = np.empty(shp, dt)   # "V0": no bytes to view (and a view cannot have that dtype)
        else:
            arr = self._base[offset:offset + <Py_ssize_t>nbytes]
            if dt is not _U8:
                arr = arr.view(dt)
            if len(shp) != 1:
                arr = arr.reshape(shp)
        self.loaned = Loan(self, arr)
        return self.loaned

    def async_prepare(self, uint64_t wake_id):
        """Block mode: announces a sleep for room on the wake socket named by wake_id
        (see csrc/dc_ring.h); the caller then tries to send once more before sleeping."""
        if not self.has_view or self.closing:
            raise Closed("this publisher is closed")
        dc_space_async_prepare(self.w.base, wake_id)

    def _commit_loan(self, loan):
        cdef int64_t now = dc_realtime_ns()
        cdef uint8_t *p = dc_writer_ptr(&self.w)
        if not self.has_view or self.closing:
            raise Closed("this publisher is closed")
        if loan is not self.loaned:
            raise DataCommsError("this loan is no longer open")
        self.loaned = None
        dc_st64(p + 8, self.seq)
        dc_st64(p + 16, <uint64_t>now)
        return self.publish(now)

    def _abort_loan(self, loan):
        if loan is self.loaned:
            self.loaned = None

    def _forked(self):
        """In a child forked from the owner: closed here without a word to the ring, which the
        parent still uses (a loan open at the fork, or a send bound before it, raises Closed)."""
        if self.has_view and not self.closing:
            self.loaned = None
            self.closing = True
            self.w.wake_fd = -1
            self._wake_sock.close()   # the child's copy of the descriptor
            if self.busy == 0:
                self._let_go()

    def close(self):
        """Marks the ring closed, wakes every sleeper and lets go of the buffer; a send of
        another thread waiting for room meanwhile raises Closed at the end of its wait
        slice and lets go of the buffer then (never a use after unmap)."""
        if self.has_view and not self.closing:
            self.loaned = None
            self.closing = True
            dc_writer_close(&self.w)
            self.w.wake_fd = -1
            self._wake_sock.close()
            if self.busy == 0:
                self._let_go()

    cdef void _let_go(self) noexcept:
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
            self._base = None
            try:
                self._mv.release()
            except BufferError:
                pass  # a loan's array still views the ring; the mapping lives until it goes

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


class Loan:
    """Room for one array frame in the ring: fill ``array`` in place, then ``commit()``
    (returns the seq) or ``abort()``. The array must not be touched after either."""

    __slots__ = ("array", "_writer")

    def __init__(self, writer, array):
        self.array = array
        self._writer = writer

    def commit(self):
        return self._writer._commit_loan(self)

    def abort(self):
        self._writer._abort_loan(self)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if self._writer.loaned is self:
                self.commit()
        else:
            self.abort()


from .ringreader import Reader  # noqa: E402  (the ring API: Writer, Reader, Loan)
