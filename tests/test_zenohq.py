"""The per-message work of zenoh:// on both backends: a publisher's send
(backend zenohq.Sender) and the queue between zenoh's callback threads and a
subscriber's reader (zenohq.SampleQueue), fed with stand-in puts and samples:
they need no zenoh. tests/test_zenoh.py covers them end to end through real
sessions."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import datacomms as dc
from datacomms.backend.python.zenohq import ENCODING, KEYS_KEPT

BLOCK, DROP = "block", "drop"   # stand-ins for zenoh.CongestionControl members


class Encoding:
    """Compares by value and prints as its text, as zenoh's Encoding does; a
    fresh object per sample, as zenoh hands out."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encoding) and other.text == self.text

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.text


class Payload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data


class Sample:
    def __init__(self, data: bytes, pub: str = "aa", key: str = "robots/a", cc: str = DROP,
                 encoding: str | None = None) -> None:
        self.encoding = Encoding(ENCODING + pub if encoding is None else encoding)
        self.key_expr = key
        self.payload = Payload(data)
        self.congestion_control = cc


def make(backend: Any, size: int = 4, nbytes: int = 1 << 20, max_frame_size: int = 1 << 20) -> Any:
    return backend.zenohq.SampleQueue("zenoh://robots/*", size, nbytes, BLOCK, backend.stats.Stats(),
                                      max_frame_size)


def frame(backend: Any, data: Any, seq: int) -> bytes:
    parts, _ = backend.framing.encode(data, seq, time.time_ns())
    return b"".join(bytes(p) for p in parts)


def test_items_come_out_in_order_with_source_and_key(backend):
    q = make(backend, size=100)
    q.on_sample(Sample(b"1", pub="aa", key="robots/a"))
    q.on_sample(Sample(b"2", pub="bb", key="robots/b"))
    q.on_sample(Sample(b"3", pub="aa", key="robots/a"))
    q.on_sample(Sample(b"4", key="robots/c", encoding="text/plain"))   # not a datacomms publisher
    got = [q.get(None, None) for _ in range(4)]
    assert got == [(b"1", ENCODING + "aa", "robots/a"), (b"2", ENCODING + "bb", "robots/b"),
                   (b"3", ENCODING + "aa", "robots/a"), (b"4", "robots/c", "robots/c")]


def test_the_key_of_a_publisher_is_looked_up_once_and_the_cache_is_bounded(backend):
    q = make(backend, size=KEYS_KEPT + 10)

    class CountingKey(str):
        reads = 0

        def __str__(self) -> str:
            CountingKey.reads += 1
            return str.__str__(self)

    for i in range(3):
        s = Sample(b"x", pub="aa")
        s.key_expr = CountingKey("robots/a")
        q.on_sample(s)
    assert CountingKey.reads == 1
    # more publishers than the cache keeps: every one still gets its own key right
    for i in range(KEYS_KEPT + 5):
        q.on_sample(Sample(b"y", pub=f"{i:04x}", key=f"robots/{i}"))
    items = q.get_all(None, None)
    assert [it[2] for it in items[3:]] == [f"robots/{i}" for i in range(KEYS_KEPT + 5)]
    assert all(it[1] == ENCODING + f"{i:04x}" for i, it in enumerate(items[3:]))


@pytest.mark.parametrize("bound", ["items", "bytes"])
def test_a_full_queue_pushes_out_the_oldest_and_counts_it(backend, bound):
    q = make(backend, size=3) if bound == "items" else make(backend, size=100, nbytes=30)
    for i in range(7):
        q.on_sample(Sample(bytes([i]) * 10))
    assert q.overflows == 4
    assert [q.get(None, None)[0][0] for _ in range(3)] == [4, 5, 6]
    with pytest.raises(dc.Timeout):
        q.get(time.monotonic(), 0)


def test_a_frame_bigger_than_the_byte_bound_is_still_delivered_alone(backend):
    q = make(backend, size=10, nbytes=8)
    q.on_sample(Sample(b"a" * 4))
    q.on_sample(Sample(b"b" * 20))
    assert q.overflows == 1
    assert q.get(None, None)[0] == b"b" * 20


def test_a_blocking_sample_waits_for_room_and_nothing_is_lost(backend):
    q = make(backend, size=2)
    done = threading.Event()

    def zenoh_thread() -> None:
        for i in range(50):
            q.on_sample(Sample(bytes([i]), cc=BLOCK))
        done.set()

    t = threading.Thread(target=zenoh_thread)
    t.start()
    time.sleep(0.2)
    assert not done.is_set()   # held back by the full queue
    got = [q.get(time.monotonic() + 10, 10)[0][0] for _ in range(50)]
    t.join(10)
    assert got == list(range(50)) and q.overflows == 0 and done.is_set()


def test_get_waits_for_a_sample_and_times_out_naming_the_url(backend):
    q = make(backend)
    threading.Timer(0.1, q.on_sample, args=(Sample(b"late"),)).start()
    assert q.get(time.monotonic() + 10, 10)[0] == b"late"
    t0 = time.monotonic()
    with pytest.raises(dc.Timeout, match=r"zenoh://robots/\* after 0.2 s"):
        q.get(t0 + 0.2, 0.2)
    assert time.monotonic() - t0 >= 0.2


def test_get_all_takes_everything_and_makes_room(backend):
    q = make(backend, size=2)
    q.on_sample(Sample(b"1"))
    q.on_sample(Sample(b"2"))
    t = threading.Thread(target=q.on_sample, args=(Sample(b"3", cc=BLOCK),))
    t.start()
    assert [it[0] for it in q.get_all(None, None)] == [b"1", b"2"]
    t.join(10)
    assert q.get(time.monotonic() + 1, 1)[0] == b"3" and q.overflows == 0


def test_close_wakes_a_waiting_reader_with_closed(backend):
    q = make(backend)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            q.get(None, None)
        except BaseException as exc:
            errors.append(exc)

    r = threading.Thread(target=reader)
    r.start()
    time.sleep(0.2)
    q.close()
    r.join(10)
    assert not r.is_alive() and len(errors) == 1 and isinstance(errors[0], dc.Closed)


def test_close_releases_a_blocked_sample_and_drops_what_is_queued(backend):
    q = make(backend, size=1)
    q.on_sample(Sample(b"1"))
    blocked = threading.Thread(target=q.on_sample, args=(Sample(b"2", cc=BLOCK),))
    blocked.start()
    time.sleep(0.2)
    assert blocked.is_alive()
    q.close()
    blocked.join(10)
    assert not blocked.is_alive()
    q.on_sample(Sample(b"3"))   # a sample after close is dropped, not queued
    with pytest.raises(dc.Closed, match=r"zenoh://robots/\* is closed"):
        q.get(None, None)


class Waiter:
    """Stands in for an _aio.PipeWaiter: records pokes and the shutdown."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def poke(self) -> None:
        self.calls.append("poke")

    def shutdown(self) -> None:
        self.calls.append("shutdown")


def test_arm_pokes_the_waiter_once_for_the_next_sample(backend):
    q = make(backend)
    q.waiter = Waiter()
    pokes = q.waiter.calls
    assert q.arm() is True
    q.on_sample(Sample(b"1"))
    q.on_sample(Sample(b"2"))
    assert pokes == ["poke"]
    assert q.arm() is False   # something to read: do not sleep
    q.get_all(None, None)
    assert q.arm() is True
    q.close()
    assert pokes == ["poke", "shutdown"] and q.arm() is False


def test_callbacks_of_several_links_at_once_keep_every_publisher_whole(backend):
    # zenoh may run the callbacks of two links at the same time: each thread here is
    # one link's publisher, blocking, into a small queue that one reader drains
    q = make(backend, size=8)
    n, pubs = 5000, 4

    def link(i: int) -> None:
        for seq in range(n):
            q.on_sample(Sample(seq.to_bytes(4, "little"), pub=f"{i:02x}", key=f"robots/{i}", cc=BLOCK))

    threads = [threading.Thread(target=link, args=(i,)) for i in range(pubs)]
    for t in threads:
        t.start()
    got: dict[str, list[int]] = {}
    for _ in range(n * pubs):
        frame, source, key = q.get(time.monotonic() + 30, 30)
        assert key == f"robots/{int(source[len(ENCODING):], 16)}"
        got.setdefault(source, []).append(int.from_bytes(frame, "little"))
    for t in threads:
        t.join(10)
    assert q.overflows == 0
    assert got == {ENCODING + f"{i:02x}": list(range(n)) for i in range(pubs)}


def test_recv_makes_messages_of_frames_and_accounts_for_each_publisher(backend):
    q = make(backend, size=100)
    for seq in (0, 1, 4):   # publisher aa lost 2 and 3
        q.on_sample(Sample(frame(backend, {"seq": seq}, seq), pub="aa", key="robots/a"))
    for seq in (7, 8):      # bb joined at 7: nothing lost
        q.on_sample(Sample(frame(backend, b"b%d" % seq, seq), pub="bb", key="robots/b"))
    got = [q.recv(10) for _ in range(5)]
    assert [(m.seq, m.source) for m in got] == [(0, "robots/a"), (1, "robots/a"), (4, "robots/a"),
                                               (7, "robots/b"), (8, "robots/b")]
    assert got[2].data == {"seq": 4} and got[4].data == b"b8"
    assert (q.stats.received, q.stats.lost, q.stats.skipped) == (5, 2, 0)
    assert q.seen == {ENCODING + "aa": 4, ENCODING + "bb": 8}


def test_recv_passes_over_bad_and_duplicate_frames_and_counts_them(backend):
    q = make(backend, size=100, max_frame_size=4096)
    q.on_sample(Sample(b"GET / HTTP/1.1\r\n\r\n" + bytes(64)))           # not a frame
    q.on_sample(Sample(frame(backend, b"one", 1)))
    q.on_sample(Sample(frame(backend, b"one", 1)))                           # its duplicate
    q.on_sample(Sample(frame(backend, bytes(8192), 2)))                      # over max_frame_size
    q.on_sample(Sample(frame(backend, b"three", 3)[:70]))                    # truncated
    q.on_sample(Sample(frame(backend, b"three", 3)))
    assert [q.recv(10).data for _ in range(2)] == [b"one", b"three"]
    assert (q.bad_frames, q.duplicates) == (3, 1)
    assert (q.stats.received, q.stats.lost) == (2, 1)   # seq 2 never came whole
    with pytest.raises(dc.Timeout, match=r"zenoh://robots/\* after 0.1 s"):
        q.recv(0.1)


def test_skips_latest_passed_over_count_with_the_next_message_of_that_publisher(backend):
    q = make(backend, size=100)
    aa, bb = ENCODING + "aa", ENCODING + "bb"
    q.pending_skip[aa] = 2   # latest() passed over aa's seq 1 and 2
    q.on_sample(Sample(frame(backend, b"x", 0), pub="bb", key="robots/b"))
    q.on_sample(Sample(b"garbage" * 10, pub="aa"))   # refused: the skip waits for a valid one
    q.on_sample(Sample(frame(backend, b"y", 3), pub="aa"))
    assert q.recv(10).source == "robots/b" and q.stats.skipped == 0
    assert q.pending_skip == {aa: 2}
    m = q.recv(10)
    assert (m.seq, q.stats.skipped, q.stats.lost, q.pending_skip) == (3, 2, 0, {})
    assert q.seen == {bb: 0, aa: 3}


def test_a_retired_publisher_is_forgotten_once_its_queued_messages_are_read(backend):
    """A publisher gone for good (zenohbus retires one replaced, or gone longer than
    GONE_KEPT others) leaves nothing behind, so a wildcard subscriber over publishers
    that come and go does not grow; what it had queued is accounted first."""
    q = make(backend, size=100)
    aa, bb = ENCODING + "aa", ENCODING + "bb"
    for seq in (0, 1, 3):   # aa lost its seq 2
        q.on_sample(Sample(frame(backend, b"a", seq), pub="aa"))
    assert q.recv(10).seq == 0
    with q.lock:
        q.retire(aa)
    q.on_sample(Sample(frame(backend, b"b", 0), pub="bb", key="robots/b"))
    assert [q.recv(10).seq for _ in range(2)] == [1, 3]
    assert (q.stats.lost, q.seen) == (1, {aa: 3})
    assert q.recv(10).source == "robots/b"
    assert q.seen == {bb: 0}
    # aa's seqs are forgotten by the stats too: its id again is a new stream,
    # neither a duplicate nor a restart
    q.on_sample(Sample(frame(backend, b"a", 0), pub="aa"))
    assert q.recv(10).seq == 0
    assert (q.stats.received, q.stats.lost, q.stats.restarts, q.duplicates) == (5, 1, 0, 0)


def test_skips_of_a_retired_publisher_count_and_an_idle_reader_forgets_too(backend):
    q = make(backend, size=100)
    aa = ENCODING + "aa"
    q.on_sample(Sample(frame(backend, b"a", 0), pub="aa"))
    q.recv(10)
    q.pending_skip[aa] = 2   # latest() passed over two of aa's, then aa went
    with q.lock:
        q.retire(aa)
    with pytest.raises(dc.Timeout):
        q.recv(0)   # nothing queued: the reader forgets on its way in all the same
    assert (q.seen, q.pending_skip, q.stats.skipped, q.stats.lost) == ({}, {}, 2, 0)


def test_what_a_reader_that_reads_nothing_keeps_of_retired_publishers_is_bounded(backend):
    q = make(backend, size=100)
    aa = ENCODING + "aa"
    q.on_sample(Sample(frame(backend, b"a", 0), pub="aa"))
    q.recv(10)
    with q.lock:
        q.retire(aa)
        for i in range(3 * KEYS_KEPT):   # publishers it never read come and go
            q.retire(ENCODING + f"{i:06x}")
        assert len(q._retiring) <= KEYS_KEPT + 1
    with pytest.raises(dc.Timeout):
        q.recv(0)
    assert q.seen == {} and len(q._retiring) == 0


def test_recv_waits_for_a_frame_and_close_ends_it_with_closed(backend):
    q = make(backend)
    threading.Timer(0.1, q.on_sample, args=(Sample(frame(backend, b"late", 0)),)).start()
    assert q.recv(10).data == b"late"
    threading.Timer(0.1, q.close).start()
    with pytest.raises(dc.Closed, match="closed"):
        q.recv()


def test_sender_frames_each_message_with_the_next_seq_and_puts_it_whole(backend):
    put, large = [], []
    tx = backend.zenohq.Sender("zenoh://robots/a", put.append, lambda *a: large.append(a), 1 << 20)
    t0 = time.time_ns()
    assert [tx.send(b"abc"), tx.send({"q": [1.5, 2]}), tx.send(np.arange(6, dtype=np.float32))] == [0, 1, 2]
    assert tx.seq == 3 and large == [] and all(type(p) is bytes for p in put)
    got = [backend.framing.decode(p) for p in put]
    assert [g[1] for g in got] == [0, 1, 2]
    assert got[0][0] == b"abc" and got[1][0] == {"q": [1.5, 2]}
    assert np.array_equal(got[2][0], np.arange(6, dtype=np.float32))
    assert all(t0 <= g[2] <= time.time_ns() for g in got)


def test_sender_hands_a_large_frame_over_in_parts(backend):
    put, large = [], []
    tx = backend.zenohq.Sender("zenoh://robots/a", put.append, lambda *a: large.append(a), 4096)
    arr = np.arange(2048, dtype=np.uint16)   # 4 KiB of payload: a frame over large_min
    assert tx.send(arr) == 0 and put == []
    (parts, n), = large
    frame = b"".join(bytes(p) for p in parts)
    assert len(frame) == n and np.array_equal(backend.framing.decode(frame)[0], arr)


def test_sender_counts_only_what_was_put_and_refuses_once_closed(backend):
    def put(frame: bytes) -> None:
        raise RuntimeError("zenoh said no")
    tx = backend.zenohq.Sender("zenoh://robots/a", put, None, 1 << 20)
    with pytest.raises(RuntimeError, match="zenoh said no"):
        tx.send(b"x")
    assert tx.seq == 0   # nothing went out: the next message still gets seq 0
    tx.put = [].append
    assert tx.send(b"x") == 0
    tx.closed = True
    with pytest.raises(dc.Closed, match="zenoh://robots/a is closed"):
        tx.send(b"x")
    assert tx.seq == 1


def test_sender_counts_the_sends_inside_put_and_says_why_it_is_closed(backend):
    # zenohsession's exit hook sets closed (and why), then waits for busy to reach 0
    # before it closes the session: no put may be under way then, nor start after
    seen = []
    tx = backend.zenohq.Sender("zenoh://robots/a", None, None, 1 << 20)

    def put(frame: bytes) -> None:
        seen.append(tx.busy)
        tx.closed = True   # closed while this put is under way: it still completes

    tx.put = put
    assert tx.send(b"x") == 0 and seen == [1] and tx.busy == 0

    def failing_put(frame: bytes) -> None:
        raise RuntimeError("zenoh said no")

    tx.closed, tx.put = False, failing_put
    with pytest.raises(RuntimeError):
        tx.send(b"x")
    assert tx.busy == 0
    tx.why, tx.closed = ": the interpreter is exiting", True
    with pytest.raises(dc.Closed, match="zenoh://robots/a is closed: the interpreter is exiting"):
        tx.send(b"x")
    assert tx.busy == 0 and tx.seq == 1


# --- ChannelQueue: the reader takes samples out of zenoh's FIFO channel (fifo=True) -------------

class ChannelClosed(Exception):
    """What the stand-in channel raises once closed, as zenoh's raises ZError."""


class Channel:
    """Stands in for the handler of a zenoh subscriber declared with a FifoChannel:
    try_recv and recv (blocking, no time limit), both raising once closed. It
    counts the consumers inside recv, which must never be two at once."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.samples: list[Sample] = []
        self.closed = False
        self.inside = 0
        self.most_inside = 0

    def put(self, sample: Sample) -> None:
        with self.cond:
            self.samples.append(sample)
            self.cond.notify_all()

    def try_recv(self) -> Sample | None:
        with self.cond:
            if self.closed and not self.samples:
                raise ChannelClosed("channel is empty and closed")
            return self.samples.pop(0) if self.samples else None

    def recv(self) -> Sample:
        with self.cond:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            try:
                while not self.samples:
                    if self.closed:
                        raise ChannelClosed("channel is empty and closed")
                    self.cond.wait()
                return self.samples.pop(0)
            finally:
                self.inside -= 1

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


@pytest.fixture
def make_channel() -> Any:
    """make_channel(backend, size=8) -> (ChannelQueue, its stand-in Channel), both closed afterwards."""
    made: list[tuple[Any, Channel]] = []

    def make(backend: Any, size: int = 8) -> tuple[Any, Channel]:
        q = backend.zenohq.ChannelQueue("zenoh://robots/*", size, 1 << 20, BLOCK, backend.stats.Stats(), 1 << 20)
        ch = Channel()
        q.attach(ch, ChannelClosed)
        made.append((q, ch))
        return q, ch

    yield make
    for q, ch in made:
        q.close()
        ch.close()


def fetchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("datacomms fetch")]


def test_channel_recv_decodes_in_order_with_and_without_a_time_limit(backend, make_channel):
    q, ch = make_channel(backend)
    for seq in (0, 1, 3):
        ch.put(Sample(frame(backend, {"seq": seq}, seq), pub="aa", key="robots/a"))
    ch.put(Sample(b"not a frame" * 8, pub="aa"))
    ch.put(Sample(frame(backend, b"b", 0), pub="bb", key="robots/b"))
    got = [q.recv(None), q.recv(0), q.recv(5), q.recv(None)]
    assert [(m.seq, m.source) for m in got] == [(0, "robots/a"), (1, "robots/a"), (3, "robots/a"), (0, "robots/b")]
    assert (q.stats.received, q.stats.lost, q.bad_frames, q.overflows) == (4, 1, 1, 0)
    with pytest.raises(dc.Timeout, match=r"zenoh://robots/\* after 0.1 s"):
        q.recv(0.1)
    with pytest.raises(dc.Timeout, match=r"zenoh://robots/\*$"):
        q.recv(0)


def test_channel_a_timed_wait_hands_over_to_the_fetcher_and_loses_nothing(backend, make_channel):
    q, ch = make_channel(backend)
    with pytest.raises(dc.Timeout):
        q.recv(0.05)   # the fetcher now waits in the channel for the next sample
    deadline = time.monotonic() + 10   # the fetcher thread gets there by itself
    while ch.inside != 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ch.inside == 1
    for seq in range(5):   # the first goes to the fetcher, the rest stay in the channel
        ch.put(Sample(frame(backend, seq, seq)))
    assert [q.recv(5).seq for _ in range(5)] == [0, 1, 2, 3, 4]
    # a sample arriving during a timed wait ends it, in order with what follows
    threading.Timer(0.1, lambda: [ch.put(Sample(frame(backend, s, s))) for s in (5, 6)]).start()
    assert q.recv(5).seq == 5 and q.recv(None).seq == 6
    assert ch.most_inside == 1 and q.stats.lost == 0
    q.close()
    ch.close()


def test_channel_takers_on_many_threads_get_every_sample_once(backend, make_channel):
    # timed and untimed takers on several threads against a writer (get: recv's
    # accounting is the one reader's): every sample comes out once
    q, ch = make_channel(backend)
    n, got, lock = 3000, [], threading.Lock()

    def take(timeout: float | None) -> None:
        while True:
            try:
                item = q.get(None if timeout is None else time.monotonic() + timeout, timeout)
            except dc.Timeout:
                continue
            except dc.Closed:
                return
            with lock:
                got.append(item[0])

    takers = [threading.Thread(target=take, args=(t,)) for t in (0.001, 0.001, None)]
    for t in takers:
        t.start()
    for i in range(n):
        ch.put(Sample(b"%d" % i))
        if i % 500 == 0:
            time.sleep(0.01)
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    ch.close()
    for t in takers:
        t.join(5)
    assert sorted(got, key=int) == [b"%d" % i for i in range(n)]
    assert not any(t.is_alive() for t in takers)


def test_channel_close_wakes_every_reader_and_ends_the_fetcher(backend, make_channel):
    before = set(fetchers())
    q, ch = make_channel(backend)
    with pytest.raises(dc.Timeout):
        q.recv(0.01)   # starts the fetcher
    ended: list[Any] = []

    def read(timeout: float | None) -> None:
        try:
            q.recv(timeout)
        except dc.Closed as exc:
            ended.append(exc)

    # one reader waits on the fetcher (time limit), one waits with it (none)
    readers = [threading.Thread(target=read, args=(t,)) for t in (30, None)]
    for t in readers:
        t.start()
    time.sleep(0.1)
    q.close()      # as ZenohSubscriber.close: the queue first, then undeclaring...
    ch.close()     # ...which closes the channel under the fetcher
    for t in readers:
        t.join(5)
    assert len(ended) == 2 and all("closed" in str(e) for e in ended)
    deadline = time.monotonic() + 5
    while set(fetchers()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(fetchers()) - before


def test_channel_nothing_comes_out_once_closed(backend, make_channel):
    q, ch = make_channel(backend)
    for seq in range(3):
        ch.put(Sample(frame(backend, seq, seq)))
    assert q.recv(None).seq == 0
    q.close()   # the channel still holds two: they are never handed out
    for timeout in (None, 0, 1):
        with pytest.raises(dc.Closed):
            q.recv(timeout)
    assert q.arm() is False


def test_channel_closed_underneath_is_closed_for_the_reader(backend, make_channel):
    q, ch = make_channel(backend)
    ch.put(Sample(frame(backend, b"last", 0)))
    ch.close()     # the session went away: what is in the channel is still read
    assert q.recv(1).data == b"last"
    with pytest.raises(dc.Closed):
        q.recv(1)
    with pytest.raises(dc.Closed):
        q.recv(None)


def test_channel_arm_keeps_a_waiting_sample_and_pokes_for_the_next(backend, make_channel):
    q, ch = make_channel(backend)
    q.waiter = Waiter()
    pokes = q.waiter.calls
    ch.put(Sample(frame(backend, b"0", 0)))
    assert q.arm() is False and pokes == []   # something to read, kept in order
    assert q.arm() is False
    assert q.recv(0).seq == 0
    assert q.arm() is True                    # nothing: the fetcher waits for the next
    ch.put(Sample(frame(backend, b"1", 1)))
    ch.put(Sample(frame(backend, b"2", 2)))
    deadline = time.monotonic() + 5
    while not pokes and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pokes == ["poke"]
    assert [q.recv(0).seq, q.recv(0).seq] == [1, 2]
    q.close()
    ch.close()
    assert pokes == ["poke", "shutdown"] and q.arm() is False


def test_channel_get_all_takes_what_waits_up_to_one_channel_more(backend, make_channel):
    q, ch = make_channel(backend, size=4)
    for seq in range(7):
        ch.put(Sample(frame(backend, seq, seq)))
    items = q.get_all(None, None)
    assert len(items) == 5   # the first, then at most size more
    assert [q.recv(0).seq for _ in range(2)] == [5, 6]
    threading.Timer(0.1, ch.put, args=(Sample(frame(backend, 7, 7)),)).start()
    assert len(q.get_all(time.monotonic() + 5, 5)) == 1



def test_channel_drain_empties_it_until_zenoh_lets_go(backend, make_channel):
    # ZenohSubscriber.close drains after undeclaring: a zenoh thread still holding the
    # full channel then puts its sample and lets go (here: closes the channel later)
    q, ch = make_channel(backend)
    for i in range(5):
        ch.put(Sample(b"%d" % i))
    q.close()
    threading.Timer(0.1, lambda: (ch.put(Sample(b"late")), ch.close())).start()
    q.drain(30)
    assert ch.samples == [] and ch.closed
    q2, ch2 = make_channel(backend)   # a channel nobody lets go: drain gives up after its time
    ch2.put(Sample(b"x"))
    q2.drain(0.05)
    assert ch2.samples == []


def test_channel_a_retired_publisher_is_forgotten_once_its_samples_are_out(backend, make_channel):
    q, ch = make_channel(backend, size=4)
    aa, bb = ENCODING + "aa", ENCODING + "bb"
    for seq in (0, 1, 3):
        ch.put(Sample(frame(backend, b"a", seq), pub="aa"))
    assert q.recv(None).seq == 0
    with q.lock:
        q.retire(aa)
    ch.put(Sample(frame(backend, b"b", 0), pub="bb", key="robots/b"))
    assert [q.recv(None).seq for _ in range(3)] == [1, 3, 0]
    assert aa in q.seen   # the channel was never found empty, nor 2 x 4 samples taken since
    with pytest.raises(dc.Timeout):
        q.recv(0)   # found empty: everything before the retirement is out
    assert (q.seen, q.stats.lost) == ({bb: 0}, 1)
    # a channel never found empty: forgotten once twice its size were taken since
    # (plus the one the fetching thread, started by the wait above, may hold)
    cc = ENCODING + "cc"
    ch.put(Sample(frame(backend, b"b", 1), pub="bb", key="robots/b"))
    with q.lock:
        q.retire(bb)
    for seq in range(12):
        ch.put(Sample(frame(backend, b"c", seq), pub="cc", key="robots/c"))
    got = [q.recv(10) for _ in range(8)]
    assert [(m.source, m.seq) for m in got] == [("robots/b", 1)] + [("robots/c", i) for i in range(7)]
    assert bb in q.seen
    assert [q.recv(10).seq for _ in range(2)] == [7, 8]
    assert q.seen == {cc: 8}
