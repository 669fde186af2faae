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
    cdef object _wake_sock
    cdef readonly object loaned
    cdef int reserve(self, uint64_t frame_len, object timeout) except -1
    cdef uint64_t publish(self, int64_t now) noexcept


cdef class Reader:
    cdef dc_reader r
    cdef Py_buffer view
    cdef bint has_view
    cdef readonly Stats stats
    cdef object alive
    cdef object name
    cdef object _ro
    cdef int64_t spin_ns
    cdef int64_t next_check_ns
    cdef bint have_seq
    cdef uint64_t last_seq
    cdef uint64_t join_seq
    cdef bint holding
    cdef uint64_t hold_pos
    cdef uint32_t slot
    cdef object _wake_sock
    cdef int wait(self, int64_t deadline) except -1
    cdef _corrupt(self, int rc)
    cdef object take(self, uint64_t pos, dc_header *h, bint copy, long long skipped)
