"""Stats on both backends: loss from seq gaps, skips, restarts, several sources,
rates, gaps, and percentiles within the histogram's stated accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import datacomms as dc


def feed(stats, seqs, t0=1_000_000_000, step_ns=1_000_000):
    for i, s in enumerate(seqs):
        stats.record(s, t0 + i * step_ns - 1000, t0 + i * step_ns)


def test_losses_are_counted_from_seq_gaps(backend):
    s = backend.stats.Stats()
    feed(s, [0, 1, 2, 5, 6, 10])
    assert (s.received, s.lost, s.skipped, s.restarts) == (6, 5, 0, 0)
    assert isinstance(s, dc.Stats)


def test_skipped_are_not_lost(backend):
    s = backend.stats.Stats()
    s.record(1, 0, 10)
    s.record(9, 0, 20, skipped=7)
    assert (s.lost, s.skipped) == (0, 7)


def test_seq_going_back_is_a_restart_not_loss(backend):
    s = backend.stats.Stats()
    feed(s, [5, 6, 7, 0, 1, 3])
    assert (s.restarts, s.lost) == (1, 1)


def test_sources_are_kept_apart(backend):
    s = backend.stats.Stats()
    for seq, src in [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (4, "a"), (2, "b")]:
        s.record(seq, 0, 1, source=src)
    assert (s.lost, s.restarts, s.received) == (2, 0, 6)


def test_a_forgotten_source_starts_afresh(backend):
    """forget(source) drops what is kept for a publisher gone for good (a listening
    tcp subscriber bounds its memory with it); the others are untouched."""
    s = backend.stats.Stats()
    for seq, src in [(5, "a"), (7, "b")]:
        s.record(seq, 0, 1, source=src)
    s.forget("a")
    s.forget("never seen")
    s.record(0, 0, 2, source="a")    # neither a restart nor loss: a new source
    s.record(9, 0, 3, source="b")    # b still counts its gap
    assert (s.lost, s.restarts, s.received) == (1, 0, 4)


def test_unnumbered_messages_count_without_loss(backend):
    s = backend.stats.Stats()
    s.record(None, None, 5)
    s.record(None, None, 10)
    assert (s.received, s.lost) == (2, 0) and s.latency_p50_us is None


def test_rate_and_longest_gap(backend):
    s = backend.stats.Stats()
    times = [0, 10_000_000, 20_000_000, 70_000_000, 80_000_000]
    for i, t in enumerate(times):
        s.record(i, t, t)
    assert s.rate_hz == pytest.approx(4 / 0.08)
    assert s.longest_gap_s == pytest.approx(0.05)
    assert s.add_lost(3) is None and s.lost == 3


def test_latency_percentiles_within_stated_accuracy(backend):
    rng = np.random.default_rng(1)
    lat = rng.lognormal(mean=10, sigma=1.5, size=20000).astype(np.int64) + 1
    s = backend.stats.Stats()
    for i, v in enumerate(lat):
        s.record(i, 10**12, 10**12 + int(v))
    for q in (50, 90, 99):
        want = np.percentile(lat, q) / 1000
        assert s.latency_us(q) == pytest.approx(want, rel=0.07)
    assert s.latency_max_us == lat.max() / 1000
    d = s.as_dict()
    assert d["received"] == 20000 and d["latency_p99_us"] == s.latency_p99_us


def test_backends_agree(backend):
    other = dc.backend.get("python").stats.Stats()
    s = backend.stats.Stats()
    for st in (s, other):
        feed(st, [0, 2, 3, 3, 9], step_ns=3_000_000)
    assert s.as_dict() == other.as_dict()


def test_a_wild_loss_count_saturates_instead_of_raising(backend):
    """Found by tests/fuzz/fuzz_shm.py: a scribbled or hostile seq makes a transport add
    a loss near 2**64, which the compiled Stats refused with OverflowError out of recv()."""
    s = backend.stats.Stats()
    s.add_lost(3)
    s.add_lost(2 ** 64 - 1)
    assert s.lost >= 2 ** 63 - 1
    s.add_lost(10 ** 30)
    assert s.lost >= 2 ** 63 - 1


def test_lost_through_counts_now_and_moves_the_next_gap(backend):
    """A transport that learns messages were sent and will never come (a tcp
    heartbeat's next seq) counts them at once, but for those passed over
    (skipped); the next message's gap starts after them, so nothing is counted
    twice. Nothing recorded yet: counted from first; -1 marks "at seq 0"."""
    s = backend.stats.Stats()
    s.lost_through("a", -1, 0, 0)
    s.record(5, 1, 2, 2, "a")          # 0..4 never recorded, 2 of them passed over
    assert (s.lost, s.skipped, s.restarts) == (3, 2, 0)
    s.lost_through("a", 9, 1)          # 6..9 never came but one passed over
    assert s.lost == 6
    s.record(10, 1, 2, 0, "a")
    s.lost_through("a", 8)             # behind what is recorded: moves nothing back
    s.record(11, 1, 2, 0, "a")
    assert (s.lost, s.restarts, s.received) == (6, 0, 3)
    s.lost_through("b", -1, 0, 0)
    s.record(3, None, 2, 0, "b")       # the general path (no timestamp) knows the mark too
    assert s.lost == 6 + 3
    s.lost_through("c", 4, 0, 2)       # nothing of c recorded: 2..4 lost
    s.lost_through("d", 4)             # nothing recorded and no start: nothing known
    s.record(6, 1, 2, 0, "c")
    s.record(7, 1, 2, 0, "d")
    assert (s.lost, s.restarts) == (6 + 3 + 3 + 1, 0)
