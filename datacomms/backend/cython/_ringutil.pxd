# Helpers shared by the ring's writer (ring.pyx) and reader (ringreader.pyx).
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy
from ._csrc cimport dc_monotonic_ns

cdef enum:
    NOGIL_COPY = 1 << 16                # copies above this size release the GIL
    SLICE_NS = 100_000_000              # longest single sleep: signals and liveness are checked between
    CHECK_NS = 100_000_000              # how often a waiting reader asks whether the publisher lives
    REAP_AFTER_NS = 100_000_000         # a blocked publisher looks for dead subscribers after this long


cdef inline int64_t _deadline(object timeout) except -2:
    """The monotonic ns to give up at; -1: never. inf, or a timeout past int64 ns, waits
    like None (the cast of such a double to int64_t is undefined in C)."""
    if timeout is None:
        return -1
    cdef double t = float(timeout)
    if t != t:
        raise ValueError("timeout must be a number of seconds or None, not nan")
    if t >= <double>(1 << 62) / 1e9:
        return -1
    if t <= 0:
        return dc_monotonic_ns()
    return dc_monotonic_ns() + <int64_t>(t * 1e9)


cdef inline void _copy(void *dst, const void *src, size_t n) noexcept:
    if n > NOGIL_COPY:
        with nogil:
            memcpy(dst, src, n)
    else:
        memcpy(dst, src, n)


cdef inline bint _fits(Py_ssize_t size, Py_ssize_t data, uint64_t cap, uint64_t max_subs) noexcept:
    """Whether a header's ring offset, capacity and slot count lie inside a buffer of size bytes
    (checked on the values C loaded, so a header scribbled on after _segment.read_config
    checked it cannot send C past the mapping)."""
    return (cap >= 4096 and cap & (cap - 1) == 0 and 0 <= data <= size and cap <= <uint64_t>(size - data)
            and 1 <= max_subs <= 1024 and 512 + max_subs * 64 <= <uint64_t>data)
