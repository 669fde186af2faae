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


def test_arm_pokes_the_waiter_once_for_the_next_sample(backend):
    pokes: list[str] = []

    class Waiter:
        def poke(self) -> None:
            pokes.append("poke")

        def shutdown(self) -> None:
            pokes.append("shutdown")

    q = make(backend)
    q.waiter = Waiter()
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
