# cython: language_level=3
"""The receive side of a frame stream (tcp://), compiled: each header is
validated by csrc/dc_frame.h and the per-message work of a subscriber (cut
the frame, drop what an earlier connection of the same epoch delivered,
count losses, build the Message, record stats) runs here in one call. The
readable reference of the same API is backend/python/streamreader.py.

Ownership: the receive buffers are bytearrays owned by the reader. A buffer
is written again only while no view of it is exported (ob_exports == 0);
otherwise the reader moves to a spare or a fresh one, so a returned view
never changes under its holder. Every length comes from dc_header_unpack,
which bounds it by max_frame_size, and is compared with the bytes held
before anything is read.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from cpython.exc cimport PyErr_CheckSignals
from cpython.time cimport time_ns
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memcpy, memmove, memcmp, strerror
from posix.fcntl cimport fcntl, F_GETFL, F_SETFL, O_NONBLOCK
from posix.time cimport timeval
from posix.unistd cimport read

from ...errors import Closed, NAN_TIMEOUT, FrameError, Timeout
from ..._message cimport make_message
from ._csrc cimport (
    DC_OK, MSG_DONTWAIT, MSG_WAITALL, POLLIN, SO_RCVTIMEO, SOL_SOCKET, dc_header, dc_header_unpack, dc_monotonic_ns, poll,
    pollfd, recv, sched_yield, setsockopt,
)
from .framing cimport check_status, loads_json, read_header
from .framing import decode as _framing_decode
from .stats cimport Stats

cdef extern from "Python.h":
    ctypedef struct _ByteArrayObject "PyByteArrayObject":
        Py_ssize_t ob_exports

# Raw payloads up to this size come out as bytes (a copy): cheaper than a view
# for small messages, and the receive buffer is free again at once.
SMALL_COPY = 4096
cdef Py_ssize_t _SMALL_COPY = SMALL_COPY
cdef enum:
    WAITALL_MIN = 65536   # the rest of a frame at least this big is one waiting read
    SPARSE_MAX = 4096     # a wait that read less than this waits in a blocking read next time

cdef bytes _MAGIC = b"DCMF"
HTTP_STARTS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"HTTP", b"PRI ")
TLS_START = b"\x16\x03"   # a TLS handshake record (a ClientHello): the peer has ssl= and this side none


def describe_garbage(head: bytes) -> str:
    if head[:4] in HTTP_STARTS:
        return "an HTTP request, not a datacomms peer"
    if head[:2] == TLS_START:
        return "a TLS handshake: the peer uses TLS (ssl=) and this side does not"
    return f"not a datacomms frame (first bytes {head[:16]!r})"


cdef inline bint _free(bytearray buf):
    """True when no view of buf is alive."""
    return (<_ByteArrayObject *>buf).ob_exports == 0


cdef class FrameReader:
    """Reads a byte stream into large buffers and cuts it into frames (see the
    Python twin for the contract of each method and attribute)."""

    def __init__(self, framing, uint64_t max_frame_size, Py_ssize_t chunk=1 << 20):
        if chunk < 0:
            raise ValueError("chunk must not be negative")
        self.framing = framing
        self._decode = framing.decode
        self.max_frame_size = max_frame_size
        self.chunk = chunk
        self.buf = bytearray(chunk)
        self.start = self.end = self.need = 0
        self.spare = None
        self.epoch = None
        self.seen = {}
        self.expect = None
        self.source = None
        self.rcvtimeo_ns = -1   # the SO_RCVTIMEO a blocking wait set (-1: none yet)

    cdef int _room(self, Py_ssize_t need) except -1:
        """Makes sure buf can hold need bytes from start, keeping views valid."""
        cdef Py_ssize_t size = max(self.chunk, need)
        cdef Py_ssize_t have = self.end - self.start
        cdef bytearray old, new
        if PyByteArray_GET_SIZE(self.buf) - self.start >= need:
            return 0
        if PyByteArray_GET_SIZE(self.buf) >= size and _free(self.buf):
            memmove(PyByteArray_AS_STRING(self.buf), PyByteArray_AS_STRING(self.buf) + self.start, have)
        else:
            old = self.buf
            if self.spare is not None and PyByteArray_GET_SIZE(self.spare) >= size and _free(self.spare):
                new, self.spare = self.spare, old
            else:
                new = bytearray(size)
                # keep the bigger of the two retired buffers for reuse
                if self.spare is None or PyByteArray_GET_SIZE(old) >= PyByteArray_GET_SIZE(self.spare):
                    self.spare = old
            memcpy(PyByteArray_AS_STRING(new), PyByteArray_AS_STRING(old) + self.start, have)
            self.buf = new
        self.start, self.end = 0, have
        return 0

    cdef Py_ssize_t _want(self):
        """The room to make from start (see the twin): for a frame whose header is
        read, all of it once a frame that big came whole before, else up to 8
        times what has come of it (at least chunk), never all a bare header announces."""
        cdef Py_ssize_t have = self.end - self.start
        if self.need <= have:
            return have + 1
        return min(self.need, max(self.chunk, self.big, 8 * have))

    def fill(self, sock) -> int:
        """One recv_into; returns the byte count (0: the peer closed). Raises
        BlockingIOError (or ssl.SSLWantReadError) when nothing is there."""
        if self.end == PyByteArray_GET_SIZE(self.buf):
            self._room(self._want())
        n = sock.recv_into(memoryview(self.buf)[self.end:])
        self.end += n
        return n

    def fill_fd(self, int fd) -> int:
        """One read from a socket descriptor without waiting: the byte count,
        0 when the peer closed, -1 when nothing is there. Raises OSError."""
        cdef Py_buffer view
        cdef ssize_t n
        cdef int err = 0
        if self.end == PyByteArray_GET_SIZE(self.buf):
            self._room(self._want())
        # the export pins buf (no resize) while the GIL is released
        PyObject_GetBuffer(self.buf, &view, PyBUF_WRITABLE)
        with nogil:
            n = recv(fd, <char *>view.buf + self.end, <size_t>(view.len - self.end), MSG_DONTWAIT)
            if n < 0:
                err = errno
        PyBuffer_Release(&view)
        if n >= 0:
            self.end += n
            return n
        if err == EAGAIN or err == EINTR:   # EWOULDBLOCK is EAGAIN on Linux
            return -1
        raise OSError(err, strerror(err).decode())

    def wait_fd(self, int fd, int wake_fd, timeout, long long spin_ns=0, bint poll_first=False) -> int:
        """Reads from a socket descriptor, waiting for data: first spins (read
        attempts, yielding the CPU between them) for up to spin_ns, then polls
        fd and wake_fd (-1: none) for up to timeout seconds (None: no limit),
        all without the GIL; while a frame whose header is read is incomplete
        it keeps reading (and polling) until the frame is whole. The byte
        count read, 0 when the peer closed, -1 when nothing came in time, -2
        when wake_fd woke it. poll_first (without spin_ns): poll before the
        first read, for a caller that has just read fd dry. Raises OSError."""
        cdef int64_t deadline = -1
        if timeout is not None:
            deadline = dc_monotonic_ns() + <int64_t>(max(<double>timeout, 0.0) * 1e9)
        return self._wait(fd, wake_fd, deadline, spin_ns, poll_first)

    cdef int _bound(self, int fd, int64_t deadline) noexcept nogil:
        """Bounds a blocking read of fd by deadline (dc_monotonic_ns, -1: none)
        through SO_RCVTIMEO; 0, EAGAIN when the deadline has passed, or errno.
        The option is set only when it is off by more than poll's own rounding
        (1 ms): a steady caller sets it once."""
        cdef int64_t want = 0, left   # SO_RCVTIMEO 0: no bound
        cdef timeval tv
        if deadline >= 0:
            left = deadline - dc_monotonic_ns()
            if left <= 0:
                return EAGAIN
            want = (left + 999) // 1000 * 1000
        if want == self.rcvtimeo_ns or (want > 0 and self.rcvtimeo_ns > 0 and
                                        -1000000 <= want - self.rcvtimeo_ns <= 1000000):
            return 0
        tv.tv_sec = want // 1000000000
        tv.tv_usec = (want % 1000000000) // 1000
        if setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0:
            return errno
        self.rcvtimeo_ns = want
        return 0

    cdef Py_ssize_t _wait(self, int fd, int wake_fd, int64_t deadline, long long spin_ns,
                          bint poll_first=False, int block=0) except? -3:
        """wait_fd with a dc_monotonic_ns deadline (-1: none). block (fd in
        blocking mode, no spin_ns): reads that block, bounded by SO_RCVTIMEO,
        do the waiting where poll and a read took turns: 1, one for all that is
        missing of a large announced frame (MSG_WAITALL); 2, also one for
        whatever comes first when poll_first. wake_fd is not watched in those
        reads (close() shuts the socket down instead)."""
        cdef Py_buffer view
        cdef ssize_t n = -1
        cdef Py_ssize_t total = 0
        cdef int err = 0, ms, polled = 0, woken = 0, grow
        cdef bint skip
        cdef int64_t spin_end, left
        cdef Py_ssize_t missing, space
        cdef int flags
        cdef pollfd fds[2]
        fds[0].fd = fd
        fds[0].events = POLLIN
        fds[1].fd = wake_fd
        fds[1].events = POLLIN
        spin_end = dc_monotonic_ns() + spin_ns
        skip = poll_first and spin_ns <= 0
        while True:
            if self.end == PyByteArray_GET_SIZE(self.buf):
                self._room(self._want())
            grow = 0
            # the export pins buf (no resize) while the GIL is released; a frame
            # whose header is in and that fills buf comes back here for more room
            PyObject_GetBuffer(self.buf, &view, PyBUF_WRITABLE)
            with nogil:
                while True:
                    missing = self.need - (self.end - self.start)
                    if block and ((skip and block == 2) or WAITALL_MIN <= missing):
                        # a read that waits: for whatever comes first, or, for a
                        # large frame whose header is in, for all that is missing of
                        # it (MSG_WAITALL: one call, where poll and a read took turns
                        # for every piece)
                        flags = 0
                        space = view.len - self.end
                        if not skip and missing <= space:
                            space, flags = missing, MSG_WAITALL
                        skip = 0
                        err = self._bound(fd, deadline)
                        if err:
                            break
                        n = recv(fd, <char *>view.buf + self.end, <size_t>space, flags)
                        if n > 0:
                            total += n
                            self.end += n
                            if self.need > self.end - self.start:
                                if self.end < view.len:
                                    continue   # the rest of a frame already announced
                                grow = 1   # the buffer is full: room for more of it, with the GIL
                            break
                        if n < 0:
                            err = errno   # EAGAIN: the bound ran out; EINTR: a signal
                        break
                    if skip:
                        # straight to poll: one system call fewer when nothing is
                        # there yet (a reply awaited), one more when something is
                        skip = 0
                        err = EAGAIN
                    else:
                        n = recv(fd, <char *>view.buf + self.end, <size_t>(view.len - self.end), MSG_DONTWAIT)
                        if n > 0:
                            total += n
                            self.end += n
                            if self.need > self.end - self.start:
                                polled = 0
                                if self.end < view.len:
                                    continue   # the rest of a frame already announced
                                grow = 1   # the buffer is full: room for more of it, with the GIL
                            break
                        if n == 0:
                            break
                        err = errno
                    if (err != EAGAIN and err != EINTR) or polled:
                        break
                    if spin_ns > 0 and total == 0 and dc_monotonic_ns() < spin_end:
                        sched_yield()
                        continue
                    ms = -1
                    if deadline >= 0:
                        left = deadline - dc_monotonic_ns()
                        ms = 0 if left <= 0 else <int>min((left + 999999) // 1000000, 2000000000)
                    fds[0].revents = 0
                    fds[1].revents = 0
                    if poll(fds, 2 if wake_fd >= 0 else 1, ms) <= 0:
                        break
                    polled = 1
                    if fds[1].revents and not fds[0].revents:
                        woken = 1
                        break
            PyBuffer_Release(&view)
            if not grow:
                break
        if total > 0:
            return total
        if n == 0:
            return 0
        if err == EAGAIN or err == EINTR:
            return -2 if woken else -1
        raise OSError(err, strerror(err).decode())

    cdef int _fail(self, object exc) except -1:
        cdef bytes head = bytes(self.buf[:4])
        if self.start == 0 and (head in HTTP_STARTS or head[:2] == TLS_START):
            raise FrameError(describe_garbage(bytes(self.buf[:16]))) from None
        raise FrameError(f"{exc} (first bytes {bytes(self.buf[self.start:self.start + 16])!r})") from None

    cdef int _frame(self, dc_header *h) except -1:
        """1 when a whole valid frame starts at start (h filled), 0 when more bytes are needed."""
        cdef Py_ssize_t have = self.end - self.start
        cdef const uint8_t *p = <const uint8_t *>PyByteArray_AS_STRING(self.buf) + self.start
        cdef int rc
        if have < 64:
            # a short request (HTTP, a probe) is refused now, not after a timeout
            if memcmp(p, <const char *>_MAGIC, min(have, 4)) != 0:
                raise FrameError(describe_garbage(bytes(self.buf[self.start:self.start + 16])))
            if self.start and PyByteArray_GET_SIZE(self.buf) - self.start < 64:
                self._room(64)
            return 0
        rc = dc_header_unpack(p, <size_t>have, self.max_frame_size, h)
        if rc != DC_OK:
            try:
                check_status(rc, h, have, self.max_frame_size)
            except FrameError as exc:
                self._fail(exc)
        if h.frame_len > <uint64_t>have:
            # frame_len is at most max_frame_size; room is made as the frame comes (_want)
            self.need = <Py_ssize_t>h.frame_len
            self._room(self._want())
            return 0
        return 1

    cdef object _data(self, const dc_header *h):
        """The payload of the frame at start (whole and validated by _frame)."""
        cdef const char *p = PyByteArray_AS_STRING(self.buf) + self.start
        try:
            if h.kind == 0 and h.payload_len <= <uint64_t>_SMALL_COPY:
                return PyBytes_FromStringAndSize(p + 64, <Py_ssize_t>h.payload_len)
            if h.kind == 2:
                return loads_json(PyBytes_FromStringAndSize(p + 64, h.meta_len))
            return self._decode(self.buf, self.start, self.max_frame_size)[0]
        except FrameError as exc:
            self._fail(exc)

    cdef void _consume(self, uint64_t frame_len):
        self.start += <Py_ssize_t>frame_len
        self.need = 0
        if <Py_ssize_t>frame_len > self.big:
            self.big = <Py_ssize_t>frame_len
        if self.start == self.end and _free(self.buf):
            self.start = self.end = 0

    def next(self):
        """The next complete frame as (data, seq, timestamp_ns, flags), or None.
        Raises FrameError on bytes that are not a valid frame."""
        cdef dc_header h
        if not self._frame(&h):
            return None
        data = self._data(&h)
        self._consume(h.frame_len)
        return data, h.seq, h.timestamp_ns, h.flags

    cpdef take(self, on_control, stats, bint record=True):
        """The next data frame buffered here as a Message, or None (see the twin)."""
        cdef dc_header h
        cdef PyObject *last
        while True:
            if not self._frame(&h):
                return None
            data = self._data(&h)
            self._consume(h.frame_len)
            if h.flags & 1:
                on_control(data)
                continue
            last = PyDict_GetItem(self.seen, self.epoch)
            if last != NULL and h.seq <= <uint64_t>(<object>last):
                continue   # already delivered on an earlier connection of this epoch
            if self.expect is not None:
                if last == NULL:   # this epoch's first message (see the twin)
                    stats.lost_through(self.epoch, <long long>h.seq - 1, 0, min(h.seq, <uint64_t>self.expect))
                self.expect = None
            seq = h.seq   # one int object for the message, seen and stats
            self.seen[self.epoch] = seq
            if record:
                if type(stats) is Stats:
                    (<Stats>stats).record_source(self.epoch, seq, h.seq, h.timestamp_ns, time_ns(), 0)
                else:
                    stats.record(seq, h.timestamp_ns, time_ns(), 0, self.epoch)
            return make_message(data, seq, h.timestamp_ns, self.source)


cdef void _drain(int fd) noexcept nogil:
    cdef char sink[64]
    while read(fd, sink, sizeof(sink)) > 0:
        pass


cdef class Gate:
    """A subscriber's closed flag and the count of threads inside its recv
    (see the twin). Each method runs under the GIL without calling Python
    code, so it is atomic without a lock."""

    def enter(self) -> bool:
        if self.closed:
            return False
        self.busy += 1
        return True

    def leave(self) -> bool:
        self.busy -= 1
        return self.closed and self.busy == 0

    def close(self):
        if self.closed:
            return None
        self.closed = True
        return self.busy > 0


cdef class DirectRecv:
    """The recv of a subscriber that follows one connection (see the twin)."""

    def __init__(self, FrameReader reader, on_control, stats, slow, int fd=-1, int wake_fd=-1, Gate gate=None,
                 long long spin_ns=0, double dead_after=1.0, bint block=False):
        cdef int flags
        self.reader, self.on_control, self.stats, self.slow = reader, on_control, stats, slow
        self.fd, self.wake_fd, self.gate, self.spin_ns, self.dead_after = fd, wake_fd, gate, spin_ns, dead_after
        # block: nothing else is waited for beside fd (a wake-up only ever
        # comes from close(), which also shuts fd down), so the wait is a
        # read that blocks: fd leaves nonblocking mode, and every other read
        # of it passes MSG_DONTWAIT
        self.block = self.sparse = False
        if block and fd >= 0 and spin_ns <= 0:
            flags = fcntl(fd, F_GETFL)
            if flags >= 0 and fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0:
                self.block = True
        self.last_rx = dc_monotonic_ns() / 1e9
        self.retired = False

    def recv(self, timeout=None):
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        cdef int64_t deadline = -1, now, until
        cdef Py_ssize_t n
        cdef bint waited = False
        if self.retired:   # see the twin
            return self.slow(timeout, None, None)
        while True:
            try:
                msg = self.reader.take(self.on_control, self.stats, True)
            except (FrameError, Closed) as exc:
                return self.slow(timeout, exc, None if deadline < 0 else deadline / 1e9)
            if msg is not None:
                return msg
            if not waited:
                if self.fd < 0 or self.gate is None or (timeout is not None and timeout <= 0):
                    break
                if timeout is not None:
                    deadline = dc_monotonic_ns() + <int64_t>(<double>timeout * 1e9)
                waited = True
            now = dc_monotonic_ns()
            until = <int64_t>((self.last_rx + self.dead_after) * 1e9)
            if until <= now:
                break   # silent too long: the slow path decides
            if deadline >= 0:
                if now >= deadline:
                    raise Timeout(f"no message within {timeout} s")
                until = min(until, deadline)
            # enter and leave as the twin's gate does; nothing between here and
            # the wait can run other Python code, so close() sees busy or we see closed
            if self.gate.closed:
                break
            self.gate.busy += 1
            error = None
            try:
                # an empty buffer: the last read most likely emptied the socket
                # (a partly read frame: more is probably there, read first)
                n = self.reader._wait(self.fd, self.wake_fd, until, self.spin_ns,
                                      self.reader.end == self.reader.start,
                                      (2 if self.sparse else 1) if self.block else 0)
            except OSError as exc:
                n = 0
                error = Closed(f"read failed: {exc}")
            finally:
                self.gate.busy -= 1
            if n == -2:
                _drain(self.wake_fd)   # the slow path looks at what woke us
            if self.gate.closed or n == -2:
                break   # closed meanwhile, or woken (a new connection, or close())
            if n == 0:
                return self.slow(timeout, error or Closed("connection closed by peer"),
                                 None if deadline < 0 else deadline / 1e9)
            if n > 0:
                self.last_rx = dc_monotonic_ns() / 1e9
                # a wait that found a frame or two: messages come one at a time
                # (a reply, a paced stream), and the next wait is one blocking
                # read; a wait that found a run of them: a busy stream, where
                # poll and then a read of all that is there keeps up better
                self.sparse = n < SPARSE_MAX
            else:
                # nothing came: the time is up, or a signal cut the poll short (Ctrl-C
                # raises here, as no Python code runs in this loop to notice it)
                PyErr_CheckSignals()
        return self.slow(timeout, None, None if deadline < 0 else deadline / 1e9)


cpdef object take_frame(object frame, object source, dict seen, object stats, uint64_t max_frame_size,
                        long long skipped=0, object origin=None):
    """One whole frame that arrived by itself (a zenoh sample) as a Message, or
    None when source already delivered this seq (see the twin)."""
    cdef dc_header h
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef PyObject *last
    if type(frame) is not bytes:
        frame = bytes(frame)
    p = <const uint8_t *>PyBytes_AS_STRING(frame)
    n = PyBytes_GET_SIZE(frame)
    read_header(p, n, max_frame_size, &h)   # FrameError unless a valid header
    if h.frame_len > <uint64_t>n:
        raise FrameError(f"truncated frame: {n} of {h.frame_len} bytes")
    if h.kind == 0 and h.payload_len <= <uint64_t>_SMALL_COPY:
        data = PyBytes_FromStringAndSize(<const char *>p + 64, <Py_ssize_t>h.payload_len)
    else:
        data = _framing_decode(frame, 0, max_frame_size)[0]
    last = PyDict_GetItem(seen, source)
    if last != NULL and h.seq <= <uint64_t>(<object>last):
        return None
    seq = h.seq
    seen[source] = seq
    if type(stats) is Stats:
        (<Stats>stats).record_source(source, seq, h.seq, h.timestamp_ns, time_ns(), skipped)
    else:
        stats.record(seq, h.timestamp_ns, time_ns(), skipped, source)
    return make_message(data, seq, h.timestamp_ns, origin)
