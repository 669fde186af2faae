# Helpers shared by the ring's writer (ring.pyx) and reader (ringreader.pyx).
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from ._csrc cimport dc_monotonic_ns

cdef enum:
    NOGIL_COPY = 1 << 16                # copies above this size release the GIL
    SLICE_NS = 100_000_000              # longest single sleep: signals and liveness are checked between
    CHECK_NS = 100_000_000              # how often a waiting reader asks whether the publisher lives
    REAP_AFTER_NS = 100_000_000         # a blocked publisher looks for dead subscribers after this long


cdef inline int64_t _deadline(object timeout) except -2:
    if timeout is None:
        return -1
    t = float(timeout)
    if t <= 0:
        return dc_monotonic_ns()
    return dc_monotonic_ns() + <int64_t>(t * 1e9)


cdef inline void _copy(void *dst, const void *src, size_t n) noexcept:
    if n > NOGIL_COPY:
        with nogil:
            memcpy(dst, src, n)
    else:
        memcpy(dst, src, n)
