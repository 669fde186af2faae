# The shm ring over csrc/dc_ring.h; the readable twin is backend/python/ring.py.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from ._csrc cimport dc_writer, dc_reader, dc_header
from .stats cimport Stats


cdef class Writer:
    cdef dc_writer w
    cdef Py_buffer view
    cdef bint has_view
    cdef readonly uint64_t seq
    cdef object reap
    cdef int64_t spin_ns
    cdef object _mv
    cdef object _base      # a uint8 array over the whole buffer, made by the first loan
    cdef object _wake_sock
    cdef readonly object loaned
    cdef int busy          # send/loan calls under way (another thread may close meanwhile)
    cdef bint closing      # close() was called while busy: the last call lets go of the buffer
    cdef int reserve(self, uint64_t frame_len, object timeout) except -1
    cdef uint64_t publish(self, int64_t now) noexcept
    cdef object _send(self, object data, object timeout)
    cdef object _loan(self, object shape, object dtype, object timeout)
    cdef void _let_go(self) noexcept
