# Per-subscriber statistics; the readable twin is backend/python/stats.py.
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    NBUCKETS = 496

cdef class Stats:
    cdef public long long received, lost, skipped, restarts
    cdef public double longest_gap_s
    cdef int64_t _first_ns, _last_ns, _max_latency_ns
    cdef uint64_t _latency_n
    cdef bint _have_seq
    cdef uint64_t _last_seq
    cdef dict _sources
    cdef uint64_t _hist[NBUCKETS]
    cdef void _arrived(self, int64_t now_ns) noexcept
    cdef void _after(self, uint64_t prev, uint64_t seq, long long skipped) noexcept
    cdef void _latency(self, int64_t timestamp_ns, int64_t now_ns) noexcept
    cdef void fast_record(self, uint64_t seq, int64_t timestamp_ns, int64_t now_ns, long long skipped) noexcept
    cdef int record_source(self, object source, object seq_obj, uint64_t seq, int64_t timestamp_ns, int64_t now_ns,
                           long long skipped) except -1
