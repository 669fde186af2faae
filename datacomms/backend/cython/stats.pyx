# cython: language_level=3
"""Per-subscriber statistics, compiled. The readable reference, with the
meaning of every field, is backend/python/stats.py; this twin keeps the same
histogram layout so both report the same percentiles. ``fast_record`` is the
C-level entry point transports in this backend call per message."""

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset
from libc.math cimport ceil
from libc.limits cimport LLONG_MAX, LLONG_MIN
from cpython.time cimport time_ns
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject



cdef inline int _bucket(uint64_t v) noexcept nogil:
    cdef int b
    if v < 16:
        return <int>v
    b = 64 - __builtin_clzll(v)
    return 16 + (b - 5) * 8 + <int>((v >> (b - 4)) - 8)


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline double _bucket_mid(int i) noexcept nogil:
    cdef int b, m
    if i < 16:
        return i
    b = (i - 16) // 8 + 5
    m = (i - 16) % 8 + 8
    return <double>((<uint64_t>(2 * m + 1)) << (b - 5))


# a source's last seq when what comes next starts at seq 0 (lost_through(source, -1, n)):
# the seqs kept per source are unsigned in record_source
cdef object _BEFORE_FIRST = object()


cdef class Stats:
    """What one subscriber has received, lost, skipped, and how fast and late it came."""

    def __cinit__(self):
        memset(self._hist, 0, sizeof(self._hist))
        self._sources = {}

    cdef inline void _arrived(self, int64_t now_ns) noexcept:
        """Counts one message received at now_ns and the gap before it."""
        cdef double gap
        if self.received:
            gap = (now_ns - self._last_ns) * 1e-9
            if gap > self.longest_gap_s:
                self.longest_gap_s = gap
        else:
            self._first_ns = now_ns
        self._last_ns = now_ns
        self.received += 1

    cdef inline void _after(self, uint64_t prev, uint64_t seq, long long skipped) noexcept:
        """A seq following prev of the same source: the gap is loss, a step back a restart."""
        if seq > prev:
            self.lost += <long long>(seq - prev - 1) - skipped
        else:
            self.restarts += 1

    cdef inline void _latency(self, int64_t timestamp_ns, int64_t now_ns) noexcept:
        cdef int64_t lat = now_ns - timestamp_ns
        if lat < 0:
            lat = 0
        self._hist[_bucket(<uint64_t>lat)] += 1
        self._latency_n += 1
        if lat > self._max_latency_ns:
            self._max_latency_ns = lat

    cdef void fast_record(self, uint64_t seq, int64_t timestamp_ns, int64_t now_ns, long long skipped) noexcept:
        self._arrived(now_ns)
        if self._have_seq:
            self._after(self._last_seq, seq, skipped)
        self._have_seq = True
        self._last_seq = seq
        self.skipped += skipped
        self._latency(timestamp_ns, now_ns)

    cdef int record_source(self, object source, object seq_obj, uint64_t seq, int64_t timestamp_ns, int64_t now_ns,
                           long long skipped) except -1:
        """fast_record for a message of one of several publishers (source keeps
        their seqs apart); seq_obj is seq as a Python int (kept per source)."""
        cdef PyObject *last
        self._arrived(now_ns)
        last = PyDict_GetItem(self._sources, source)
        if last != NULL:
            if <object>last is _BEFORE_FIRST:
                self.lost += <long long>seq - skipped
            else:
                self._after(<uint64_t>(<object>last), seq, skipped)
        self._sources[source] = seq_obj
        self.skipped += skipped
        self._latency(timestamp_ns, now_ns)
        return 0

    def record(self, seq, timestamp_ns, now_ns=None, long long skipped=0, source=None):
        """Account for one received message (see the Python reference for the rules)."""
        cdef int64_t now = time_ns() if now_ns is None else now_ns
        if seq is not None and timestamp_ns is not None and seq >= 0:
            if source is None:
                self.fast_record(seq, timestamp_ns, now, skipped)
            else:
                self.record_source(source, seq, seq, timestamp_ns, now, skipped)
            return
        self._arrived(now)
        if seq is not None:
            if source is None:
                last = self._last_seq if self._have_seq else None
            else:
                last = self._sources.get(source)
                if last is _BEFORE_FIRST:
                    last = -1
            if last is not None:
                if seq > last:
                    self.lost += seq - last - 1 - skipped
                else:
                    self.restarts += 1
            if source is None:
                self._have_seq = True
                self._last_seq = seq
            else:
                self._sources[source] = seq
        self.skipped += skipped
        if timestamp_ns is not None:
            self._latency(<int64_t>timestamp_ns, now)

    def forget(self, source):
        """Drops the last seq kept for source (a publisher gone for good): its next
        message, if one ever comes, starts afresh as a new source's."""
        self._sources.pop(source, None)

    def lost_through(self, source, seq, skipped=0, first=None):
        """Counts source's seqs after the last one recorded (none recorded: from
        first on), up to seq, as lost, but for the skipped of them passed over
        (see the twin). The next message's gap starts after seq (-1: at seq 0)."""
        if source is None:
            known = self._last_seq if self._have_seq else None
        else:
            known = self._sources.get(source)
            if known is _BEFORE_FIRST:
                known = -1
        last = known if known is not None else (None if first is None else first - 1)
        if last is None:
            return
        if seq > last:
            self.add_lost(seq - last - skipped)
        elif known is None:
            seq = last
        else:
            return
        if source is None:
            if seq >= 0:
                self._have_seq = True
                self._last_seq = seq
        else:
            self._sources[source] = _BEFORE_FIRST if seq < 0 else seq

    def add_lost(self, n):
        """Count messages known lost that no seq gap will show (a transport's own accounting).
        The count saturates at what a long long holds: only a corrupt or hostile seq gets
        there, and it must not raise OverflowError out of a receive call."""
        total = self.lost + n
        self.lost = LLONG_MAX if total > LLONG_MAX else (LLONG_MIN if total < LLONG_MIN else total)

    @property
    def rate_hz(self):
        """Mean receive rate from the first to the last message received."""
        if self.received < 2 or self._last_ns <= self._first_ns:
            return 0.0
        return (self.received - 1) / ((self._last_ns - self._first_ns) * 1e-9)

    def latency_us(self, double q):
        """The q-th percentile (0-100) of latency in microseconds, None before any message."""
        cdef uint64_t n = self._latency_n, seen = 0, rank
        cdef int i
        if n == 0:
            return None
        rank = <uint64_t>max(1.0, ceil(q / 100.0 * n))
        for i in range(NBUCKETS):
            seen += self._hist[i]
            if seen >= rank:
                return min(_bucket_mid(i), <double>self._max_latency_ns) / 1000.0
        return self._max_latency_ns / 1000.0

    @property
    def latency_p50_us(self):
        return self.latency_us(50)

    @property
    def latency_p99_us(self):
        return self.latency_us(99)

    @property
    def latency_max_us(self):
        return self._max_latency_ns / 1000.0 if self._latency_n else None

    def as_dict(self):
        return {
            "received": self.received, "lost": self.lost, "skipped": self.skipped,
            "restarts": self.restarts, "rate_hz": self.rate_hz, "longest_gap_s": self.longest_gap_s,
            "latency_p50_us": self.latency_p50_us, "latency_p99_us": self.latency_p99_us,
            "latency_max_us": self.latency_max_us,
        }

    def __repr__(self):
        p50 = self.latency_p50_us
        lat = f"{p50:.1f}" if p50 is not None else "-"
        return (f"Stats(received={self.received}, lost={self.lost}, skipped={self.skipped}, "
                f"rate_hz={self.rate_hz:.1f}, longest_gap_s={self.longest_gap_s:.4f}, p50_us={lat})")
