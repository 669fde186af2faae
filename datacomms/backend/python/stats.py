"""Per-subscriber statistics, updated incrementally at a small fixed cost per
message: the readable reference; backend/cython/stats.pyx is its compiled twin.

Loss is read from sequence gaps: the publisher numbers every message with no
gaps, so a subscriber that sees seq 7 after seq 4 knows two were lost, unless
it passed over them on purpose with ``latest()`` (those count as skipped).

Latency is ``receive time - timestamp_ns`` on the subscriber's wall clock. It
is kept in a log-scale histogram (16 exact buckets below 16 ns, then 8 buckets
per power of two), so percentiles cost nothing per message and are accurate to
within about 6%; ``latency_max_us`` is exact.
"""

from __future__ import annotations

import math
import time
from typing import Any, Hashable

_NBUCKETS = 16 + 60 * 8


def _bucket(v: int) -> int:
    if v < 16:
        return v if v > 0 else 0
    b = v.bit_length()
    return 16 + (b - 5) * 8 + ((v >> (b - 4)) - 8)


def _bucket_mid(i: int) -> float:
    if i < 16:
        return float(i)
    b = (i - 16) // 8 + 5
    m = (i - 16) % 8 + 8
    return float((2 * m + 1) << (b - 5))


class Stats:
    """What one subscriber has received, lost, skipped, and how fast and late it came.

    Attributes: ``received``, ``lost`` (messages that never arrived, from seq
    gaps), ``skipped`` (messages ``latest()`` passed over), ``restarts`` (new
    publisher epochs: a seq that went backwards), ``longest_gap_s`` (the
    longest time between two received messages). Properties: ``rate_hz``,
    ``latency_p50_us``, ``latency_p99_us``, ``latency_max_us``.
    """

    __slots__ = ("received", "lost", "skipped", "restarts", "longest_gap_s", "_first_ns", "_last_ns",
                 "_last_seq", "_hist", "_max_latency_ns", "_latency_n")

    def __init__(self) -> None:
        self.received = 0
        self.lost = 0
        self.skipped = 0
        self.restarts = 0
        self.longest_gap_s = 0.0
        self._first_ns = 0
        self._last_ns = 0
        self._last_seq: dict[Hashable, int] = {}
        self._hist = [0] * _NBUCKETS
        self._max_latency_ns = 0
        self._latency_n = 0

    def record(self, seq: int | None, timestamp_ns: int | None, now_ns: int | None = None,
               skipped: int = 0, source: Hashable = None) -> None:
        """Account for one received message.

        ``skipped`` says how many messages just before this one were passed
        over on purpose; ``source`` keeps the sequences of several publishers
        apart. A seq at or below the last one seen from that source is a new
        publisher epoch (a restart), not a loss.
        """
        if now_ns is None:
            now_ns = time.time_ns()
        if self.received:
            gap = (now_ns - self._last_ns) * 1e-9
            if gap > self.longest_gap_s:
                self.longest_gap_s = gap
        else:
            self._first_ns = now_ns
        self._last_ns = now_ns
        self.received += 1
        if seq is not None:
            last = self._last_seq.get(source)
            if last is not None:
                if seq > last:
                    self.lost += seq - last - 1 - skipped
                else:
                    self.restarts += 1
            self._last_seq[source] = seq
        self.skipped += skipped
        if timestamp_ns is not None:
            lat = now_ns - timestamp_ns
            if lat < 0:
                lat = 0
            self._hist[_bucket(lat)] += 1
            self._latency_n += 1
            if lat > self._max_latency_ns:
                self._max_latency_ns = lat

    def forget(self, source: Hashable) -> None:
        """Drops the last seq kept for source (a publisher gone for good): its next
        message, if one ever comes, starts afresh as a new source's."""
        self._last_seq.pop(source, None)

    def lost_through(self, source: Hashable, seq: int, skipped: int = 0, first: int | None = None) -> None:
        """Counts source's seqs after the last one recorded (none recorded: from
        first on), up to seq, as lost, but for the skipped of them passed over:
        a transport learned they were sent and will never come. The next
        message's gap starts after seq (-1: at seq 0)."""
        known = self._last_seq.get(source)
        last = known if known is not None else (None if first is None else first - 1)
        if last is None:
            return
        if seq > last:
            self.add_lost(seq - last - skipped)
            self._last_seq[source] = seq
        elif known is None:
            self._last_seq[source] = last

    def add_lost(self, n: int) -> None:
        """Count messages known lost that no seq gap will show (a transport's own accounting)."""
        self.lost += n

    @property
    def rate_hz(self) -> float:
        """Mean receive rate from the first to the last message received."""
        if self.received < 2 or self._last_ns <= self._first_ns:
            return 0.0
        return (self.received - 1) / ((self._last_ns - self._first_ns) * 1e-9)

    def latency_us(self, q: float) -> float | None:
        """The q-th percentile (0-100) of latency in microseconds, None before any message."""
        n = self._latency_n
        if n == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * n))
        seen = 0
        for i, c in enumerate(self._hist):
            seen += c
            if seen >= rank:
                return min(_bucket_mid(i), float(self._max_latency_ns)) / 1000.0
        return self._max_latency_ns / 1000.0

    @property
    def latency_p50_us(self) -> float | None:
        return self.latency_us(50)

    @property
    def latency_p99_us(self) -> float | None:
        return self.latency_us(99)

    @property
    def latency_max_us(self) -> float | None:
        return self._max_latency_ns / 1000.0 if self._latency_n else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "lost": self.lost, "skipped": self.skipped,
            "restarts": self.restarts, "rate_hz": self.rate_hz, "longest_gap_s": self.longest_gap_s,
            "latency_p50_us": self.latency_p50_us, "latency_p99_us": self.latency_p99_us,
            "latency_max_us": self.latency_max_us,
        }

    def __repr__(self) -> str:
        p50 = self.latency_p50_us
        lat = f"{p50:.1f}" if p50 is not None else "-"
        return (f"Stats(received={self.received}, lost={self.lost}, skipped={self.skipped}, "
                f"rate_hz={self.rate_hz:.1f}, longest_gap_s={self.longest_gap_s:.4f}, p50_us={lat})")
