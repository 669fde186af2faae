# The framing layer over csrc/dc_frame.h; the readable twin is backend/python/framing.py.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from ._csrc cimport dc_header

cdef int check_status(int rc, const dc_header *h, Py_ssize_t have, uint64_t max_frame) except -1
cdef int read_header(const uint8_t *p, Py_ssize_t have, uint64_t max_frame, dc_header *h) except -1
cpdef bytes dumps_json(object obj)
cpdef object loads_json(object b)
cpdef tuple encode(object data, uint64_t seq, int64_t timestamp_ns, int flags=*)
cdef bint has_buffers(object o, int depth=*) except -1
cdef void write_small(uint8_t *o, int kind, int flags, uint64_t seq, int64_t ts, const char *body,
                      Py_ssize_t body_len, uint32_t meta_len, uint32_t nbufs, uint64_t payload_len) noexcept nogil
