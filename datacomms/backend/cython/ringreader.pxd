# The shm ring reader over csrc/dc_ring.h; the readable twin is backend/python/_ring_reader.py.
from libc.stdint cimport uint32_t, uint64_t, int64_t
from ._csrc cimport dc_reader, dc_header
from .stats cimport Stats


cdef class Reader:
    cdef dc_reader r
    cdef Py_buffer view
    cdef bint has_view
    cdef readonly Stats stats
    cdef object alive
    cdef object name
    cdef object _ro
    cdef object _ro_arr    # a uint8 array over _ro, made by the first zero-copy take
    cdef int64_t spin_ns
    cdef int64_t next_check_ns
    cdef bint have_seq
    cdef uint64_t last_seq
    cdef uint64_t join_seq
    cdef bint holding
    cdef uint64_t hold_pos
    cdef uint32_t slot
    cdef object _wake_sock
    cdef int busy          # recv/latest calls under way (another thread may close meanwhile)
    cdef bint closing      # close() was called while busy: the last call lets go of the buffer
    cdef int wait(self, int64_t deadline) except -1
    cdef _corrupt(self, int rc)
    cdef object take(self, uint64_t pos, dc_header *h, bint copy, long long skipped)
    cdef object _recv(self, object timeout, bint copy)
    cdef object _latest(self, object timeout, bint copy)
    cdef void _let_go(self) noexcept
