# The send loop over csrc/dc_sendloop.h; the readable twin is backend/python/sendloop.py.
from ._csrc cimport dc_sendloop, dc_sl_msg

cdef class SendLoop:
    cdef dc_sendloop sl
    cdef bint started
    cdef bint closed
    cdef object thread
    cdef object socks
    cdef dc_sl_msg *build(self, list parts) except NULL
    cdef void release_freed(self)
    cdef int push(self, dc_sl_msg *m, int cid, timeout) except -1
