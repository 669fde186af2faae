"""The send loop of each backend on socket pairs: order, drop and block, ownership, dead peers."""

from __future__ import annotations

import gc
import inspect
import os
import select
import socket
import threading
import time

import numpy as np
import pytest

import datacomms as dc



@pytest.fixture
def loop(backend):
    sl = backend.sendloop.SendLoop()
    yield sl
    sl.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _read_frames(backend, sock, n, timeout=10.0):
    """Reads n frames from sock; returns [(seq, data)]."""
    buf = bytearray()
    out = []
    sock.settimeout(timeout)
    off = 0
    while len(out) < n:
        chunk = sock.recv(1 << 20)
        assert chunk, "peer closed early"
        buf += chunk
        while len(buf) - off >= 64:
            flen = backend.framing.unpack_header(buf, off)[7]
            if len(buf) - off < flen:
                break
            data, seq, *_ = backend.framing.decode(bytes(buf[off:off + flen]))
            out.append((seq, data))
            off += flen
    return out


def test_api_parity():
    cy = dc.backend.get("cython").sendloop.SendLoop
    py = dc.backend.get("python").sendloop.SendLoop
    names = {"add", "remove", "send", "send_data", "publish", "publish_nowait", "seal", "flush", "info", "dead",
             "close", "connections", "room_fd"}
    assert names <= set(dir(cy)) and names <= set(dir(py))
    for n in names - {"connections", "room_fd"}:
        assert list(inspect.signature(getattr(py, n)).parameters)[1:] == \
            [p for p in inspect.signature(getattr(cy, n)).parameters][1:] or n == "send", n


def test_order_and_big_buffers_written_in_place(backend, loop, pair):
    a, b = pair
    cid = loop.add(a, 100_000, 1 << 30, True)
    arr = np.arange(1 << 20, dtype=np.uint32)
    n = 3000
    frames = []
    for i in range(n):
        data = arr if i % 1000 == 7 else i.to_bytes(8, "little") * (i % 50 + 1)
        frames.append(data)
        parts, _ = backend.framing.encode(data, i, 0)
        assert loop.send(parts, cid, None) == 0
    del parts
    got = []
    t = threading.Thread(target=lambda: got.extend(_read_frames(backend, b, n)))
    t.start()
    assert loop.flush(-1, 20)
    t.join()
    assert [s for s, _ in got] == list(range(n))
    for (s, d), sent in zip(got, frames):
        if isinstance(sent, np.ndarray):
            np.testing.assert_array_equal(d, sent)
        else:
            assert bytes(d) == sent
    assert loop.info(cid)[3] == n


def test_loop_keeps_buffers_alive_until_written(backend, loop, pair):
    """The caller may drop its array right after send: the queue owns a reference."""
    a, b = pair
    cid = loop.add(a, 16, 1 << 30, False)
    arr = np.full(4 << 20, 7, dtype=np.uint8)
    loop.send(backend.framing.encode(arr, 1, 0)[0], cid, None)
    del arr
    gc.collect()
    (seq, data), = _read_frames(backend, b, 1)
    assert seq == 1 and int(data.min()) == 7 == int(data.max())


def test_drop_mode_drops_when_full(backend, loop, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cid = loop.add(a, 4, 1 << 20, False)
    dropped = sum(loop.send(backend.framing.encode(b"x" * 4000, i, 0)[0], cid, None) for i in range(2000))
    assert dropped > 0
    assert loop.info(cid)[2] == dropped


def test_block_mode_times_out(backend, loop, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cid = loop.add(a, 2, 1 << 20, True)
    with pytest.raises(dc.Timeout):
        for i in range(10_000):
            loop.send(backend.framing.encode(b"y" * 4000, i, 0)[0], cid, 0.2)
    # a reader makes room again
    t = threading.Thread(target=lambda: b.recv(1 << 20))
    t.start()
    loop.send(backend.framing.encode(b"z", 0, 0)[0], cid, 5)
    t.join()


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def _drain(fd: int) -> None:
    while _readable(fd, 0):
        os.read(fd, 4096)


def test_publish_nowait_is_all_or_nothing_and_room_fd_says_when_to_retry(backend, loop, pair):
    """publish_nowait queues on every connection or on none (no seq used), never waits,
    and room_fd turns readable once the full queue has room again."""
    a, b = pair
    c, d = socket.socketpair()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        loop.add(a, 2, 1 << 20, True)        # fills after a few frames
        loop.add(c, 100_000, 1 << 30, True)  # never fills here
        seqs = []
        while True:
            seq = loop.publish_nowait(b"y" * 4000)
            if seq is None:
                time.sleep(0.05)   # the loop thread may still be moving frames into the kernel
                seq = loop.publish_nowait(b"y" * 4000)
                if seq is None:
                    break
            seqs.append(seq)
            assert len(seqs) < 10_000, "never filled"
        assert seqs == list(range(len(seqs)))
        assert loop.next_seq == len(seqs)
        _drain(loop.room_fd)                       # wake-ups of the tries before the last
        assert loop.publish_nowait(b"y" * 4000) is None   # refused again: arms room_fd
        assert not _readable(loop.room_fd, 0.2)    # nothing moves now: no wake-up
        # the other connection got exactly what was published, nothing of the refused tries
        got_d = _read_frames(backend, d, len(seqs))
        d.settimeout(0.2)
        with pytest.raises(socket.timeout):
            d.recv(1)
        assert [s for s, _ in got_d] == seqs
        got_b = _read_frames(backend, b, 1)        # room on the full one
        assert got_b[0][0] == 0
        assert _readable(loop.room_fd, 5)
        nxt = None
        deadline = time.monotonic() + 5
        while nxt is None and time.monotonic() < deadline:
            nxt = loop.publish_nowait(b"next")
            if nxt is None:
                time.sleep(0.01)
        assert nxt == len(seqs)
    finally:
        c.close()
        d.close()


def test_publish_nowait_waits_for_nothing_when_the_publisher_is_busy(backend, loop, pair):
    """A publish_nowait that finds another thread's publish waiting for room returns None at
    once, and room_fd wakes it when that publish is done."""
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    loop.add(a, 2, 1 << 20, True)
    while loop.publish_nowait(b"z" * 4000) is not None or (time.sleep(0.05) or
                                                           loop.publish_nowait(b"z" * 4000) is not None):
        pass
    blocked = threading.Thread(target=loop.publish, args=(b"blocked", 30))
    blocked.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    assert loop.publish_nowait(b"busy") is None
    assert time.monotonic() - t0 < 1.0     # a liveness bound: it must not wait for the blocked publish
    reader = threading.Thread(target=lambda: _read_frames(backend, b, 3))
    reader.start()
    blocked.join(10)
    assert not blocked.is_alive()
    assert _readable(loop.room_fd, 5)
    reader.join(10)


def test_dead_peer_reported_and_removal_is_clean(backend, loop, pair):
    a, b = pair
    c2a, c2b = socket.socketpair()
    try:
        cid = loop.add(a, 16, 1 << 20, False)
        cid2 = loop.add(c2a, 16, 1 << 20, False)
        assert loop.connections == 2
        b.close()
        deadline = time.monotonic() + 5
        while cid not in loop.dead() and time.monotonic() < deadline:
            loop.send(backend.framing.encode(b"ping", 0, 0)[0], cid, 0)
            time.sleep(0.01)
        assert loop.dead() == [cid]
        loop.remove(cid)
        a.close()
        loop.send(backend.framing.encode(b"still here", 3, 0)[0], -1, 1)
        (seq, data), = _read_frames(backend, c2b, 1)
        assert bytes(data) == b"still here" and loop.info(cid) is None and loop.info(cid2) is not None
    finally:
        c2a.close()
        c2b.close()


def test_closed_loop_refuses(backend, pair):
    sl = backend.sendloop.SendLoop()
    sl.close()
    sl.close()
    with pytest.raises(dc.Closed):
        sl.send([b"x" * 64], -1, 0)
    with pytest.raises(dc.Closed):
        sl.add(pair[0])


def test_stalling_reader_keeps_order_across_inline_and_queued_writes(backend, loop, pair):
    """A reader that stops and starts makes the sender switch between writing
    at once, partial writes and queueing; the byte stream must stay exact."""
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    cid = loop.add(a, 1 << 16, 1 << 30, True)
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 40_000, 4000)
    n = len(sizes)
    got: list = []

    def reader() -> None:
        buf = bytearray()
        off = 0
        b.settimeout(20)
        while len(got) < n:
            if len(got) % 300 == 0:
                time.sleep(0.002)      # stall: the sender's queue fills, then drains
            chunk = b.recv(1 << 16)
            assert chunk
            buf += chunk
            while len(buf) - off >= 64:
                flen = backend.framing.unpack_header(buf, off)[7]
                if len(buf) - off < flen:
                    break
                data, seq, *_ = backend.framing.decode(bytes(buf[off:off + flen]))
                got.append((seq, len(data), bytes(data[:1])))
                off += flen

    t = threading.Thread(target=reader)
    t.start()
    for i, s in enumerate(sizes):
        loop.send(backend.framing.encode(bytes([i % 251]) * int(s), i, 0)[0], cid, None)
    t.join(30)
    assert [g[0] for g in got] == list(range(n))
    assert all(g[1] == s and g[2] == bytes([i % 251]) for i, (g, s) in enumerate(zip(got, sizes)))


def test_bursts_with_pauses_never_strand_a_queue(backend, loop, pair):
    """Bursts separated by pauses around the loop's linger time: every frame is
    written (a lost wake-up would leave frames queued and flush would time out)."""
    a, b = pair
    cid = loop.add(a, 8, 1 << 20, True)
    n = 0
    got: list = []
    t = threading.Thread(target=lambda: got.extend(_read_frames(backend, b, 30 * 300, timeout=30)))
    t.start()
    rng = np.random.default_rng(7)
    for burst in range(300):
        for _ in range(30):
            loop.send(backend.framing.encode(b"b" * 100, n, 0)[0], cid, 10)
            n += 1
        time.sleep(float(rng.uniform(0, 120e-6)))
    assert loop.flush(-1, 20), "frames left queued"
    t.join(30)
    assert [s for s, _ in got] == list(range(n))


def test_send_data_frames_what_encode_frames(backend, loop, pair):
    """send_data (the publisher's path: frame and queue in one call) gives the
    frames encode + send give, small ones built in place and large ones by parts."""
    a, b = pair
    loop.add(a, 64, 1 << 24, True)
    sent = [b"x" * 64, {"joint_1": 0.5, "t": [1, 2]}, b"y" * 20_000, np.arange(5000, dtype=np.float32),
            {"big": "z" * 20_000}, b"", {}]
    before = time.time_ns()
    for i, d in enumerate(sent):
        assert loop.send_data(d, 100 + i, 5) == 0
    got = _read_frames(backend, b, len(sent))
    assert [g[0] for g in got] == [100 + i for i in range(len(sent))]
    for (_, data), d in zip(got, sent):
        if isinstance(d, np.ndarray):
            np.testing.assert_array_equal(data, d)
        elif isinstance(d, bytes):
            assert bytes(data) == d
        else:
            assert data == d
    b.setblocking(True)
    loop.send_data(b"t", 7)
    head = b.recv(64)
    assert backend.framing.unpack_header(head)[3] >= before


def test_publish_numbers_in_order_and_start_frames_come_first(backend, loop, pair):
    fr = backend.framing
    a, b = pair
    loop.add(a, 64, 1 << 20, True)
    assert [loop.publish(b"m%d" % i, 5) for i in range(3)] == [0, 1, 2]
    with pytest.raises(dc.FrameError):
        loop.publish({"x": object()})        # not encodable: the seq is not used
    c, d = socket.socketpair()
    with c, d:
        loop.add(c, 64, 1 << 20, True, lambda nxt: fr.encode({"dc": "start", "next_seq": nxt}, 0, 0,
                                                             fr.FLAG_CONTROL)[0])
        assert loop.publish(b"late", 5) == 3 and loop.next_seq == 4
        got = _read_frames(backend, d, 2)
        assert got == [(0, {"dc": "start", "next_seq": 3}), (3, got[1][1])] and bytes(got[1][1]) == b"late"
    assert [(s, bytes(x)) for s, x in _read_frames(backend, b, 4)] == [(0, b"m0"), (1, b"m1"), (2, b"m2"),
                                                                       (3, b"late")]
    loop.seal()
    with pytest.raises(dc.Closed):
        loop.publish(b"after")


def test_a_connection_beyond_the_first_256_is_still_written(backend, loop):
    """The compiled loop polled at most 256 connections, the newest. An older one
    whose socket was full once (want_out) never got the POLLOUT that clears it:
    with 300 subscribers the oldest stayed stuck with a full queue, every later
    frame dropped for it, however fast it read (the Python loop polls all)."""
    pairs = [socket.socketpair() for _ in range(300)]
    try:
        a0, b0 = pairs[0]
        a0.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        cids = [loop.add(a, 10_000, 1 << 30, False) for a, _ in pairs]
        n = 500
        for i in range(n):
            assert loop.send(backend.framing.encode(b"z" * 4000, i, 0)[0], cids[0], None) == 0
        assert loop.info(cids[0])[0] > 0     # the socket is full: the rest waits in the queue
        got = _read_frames(backend, b0, n, timeout=10)
        assert [seq for seq, _ in got] == list(range(n))
    finally:
        for a, b in pairs:
            a.close()
            b.close()
