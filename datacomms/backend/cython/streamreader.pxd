# The receive side of a frame stream; the readable twin is backend/python/streamreader.py.
from libc.stdint cimport int64_t, uint64_t
from ._csrc cimport dc_header

cdef class FrameReader:
    cdef public object framing
    cdef object _decode
    cdef public uint64_t max_frame_size
    cdef public Py_ssize_t chunk
    cdef public bytearray buf
    cdef public Py_ssize_t start, end, need
    cdef public Py_ssize_t big
    cdef public bytearray spare
    cdef public object epoch
    cdef public dict seen
    cdef public object expect
    cdef public object source
    cdef int64_t rcvtimeo_ns
    cdef int _room(self, Py_ssize_t need) except -1
    cdef Py_ssize_t _want(self)
    cdef int _fail(self, object exc) except -1
    cdef int _frame(self, dc_header *h) except -1
    cdef object _data(self, const dc_header *h)
    cdef int _bound(self, int fd, int64_t deadline) noexcept nogil
    cdef Py_ssize_t _wait(self, int fd, int wake_fd, int64_t deadline, long long spin_ns, bint poll_first=*,
                          int block=*) except? -3
    cdef void _consume(self, uint64_t frame_len)
    cpdef take(self, on_control, stats, bint record=*)


cdef class Gate:
    cdef public bint closed
    cdef public int busy


cdef class DirectRecv:
    cdef FrameReader reader
    cdef object on_control, stats, slow
    cdef int fd, wake_fd
    cdef Gate gate
    cdef long long spin_ns
    cdef double dead_after
    cdef bint block, sparse
    cdef public double last_rx
    cdef public bint retired


# zenohq's SampleQueue calls it without the Python call protocol
cpdef object take_frame(object frame, object source, dict seen, object stats, uint64_t max_frame_size,
                        long long skipped=*, object origin=*)
