# The send loop over csrc/dc_sendloop.h; the readable twin is backend/python/sendloop.py.
from libc.stdint cimport uint64_t
from ._csrc cimport dc_sendloop, dc_sl_msg, pthread_mutex_t

cdef class SendLoop:
    cdef dc_sendloop sl
    cdef bint started
    cdef bint closed
    cdef object thread
    cdef object socks
    cdef pthread_mutex_t pub_mu    # held by publish and add(start=): seq order on the wire
    cdef public uint64_t next_seq
    cdef public bint sealed
    cdef dc_sl_msg *build(self, list parts) except NULL
    cdef void release_freed(self)
    cdef int push(self, dc_sl_msg *m, int cid, timeout, bint if_room=*) except -1
    cdef int _send_data(self, object data, uint64_t seq, object timeout, bint if_room=*) except -1
    cdef void _lock_pub(self) noexcept
    cdef void _unlock_pub(self) noexcept
