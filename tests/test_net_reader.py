"""The receive side's frame reader against arbitrary chunking and arbitrary bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datacomms as dc


def FrameReader(fr, max_frame_size, chunk=1 << 20):
    """The stream reader of the backend whose framing module fr is."""
    name = "cython" if fr is dc.backend.get("cython").framing else "python"
    return dc.backend.get(name).streamreader.FrameReader(fr, max_frame_size, chunk=chunk)


class ChunkedSocket:
    """Hands out a byte string in the chunk sizes given, like a stream socket."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.pos, self.i = data, sizes, 0, 0

    def recv_into(self, view: memoryview) -> int:
        if self.pos >= len(self.data):
            return 0
        want = self.sizes[self.i % len(self.sizes)] if self.sizes else len(self.data)
        self.i += 1
        n = min(want, len(view), len(self.data) - self.pos)
        view[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def _read_all(reader, sock: ChunkedSocket) -> list:
    out = []
    while True:
        f = reader.next()
        if f is not None:
            out.append(f)
            continue
        if reader.fill(sock) == 0:
            return out


payloads = st.one_of(
    st.binary(max_size=3000),
    st.integers(0, 50_000).map(lambda n: np.arange(n, dtype=np.uint16)),
    st.dictionaries(st.text(max_size=5), st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=4),
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(msgs=st.lists(payloads, min_size=1, max_size=12), sizes=st.lists(st.integers(1, 70_000), max_size=6),
       chunk=st.sampled_from([256, 4096, 1 << 16]), name=st.sampled_from(["cython", "python"]))
def test_any_chunking_gives_the_same_frames(msgs, sizes, chunk, name):
    fr = dc.backend.get(name).framing
    stream = b"".join(fr.encode_bytes(m, i, i * 10) for i, m in enumerate(msgs))
    reader = FrameReader(fr, 1 << 30, chunk=chunk)
    got = _read_all(reader, ChunkedSocket(stream, sizes))
    assert [g[1] for g in got] == list(range(len(msgs)))
    for (data, _, ts, _), sent in zip(got, msgs):
        if isinstance(sent, np.ndarray):
            np.testing.assert_array_equal(data, sent)
        elif isinstance(sent, bytes):
            assert bytes(data) == sent
        else:
            assert data == sent
    # every view handed out still holds its own bytes after the whole stream was read
    assert all(g[2] == i * 10 for i, g in enumerate(got))


@SETTINGS
@given(junk=st.binary(min_size=1, max_size=4000), sizes=st.lists(st.integers(1, 500), max_size=4),
       name=st.sampled_from(["cython", "python"]))
def test_arbitrary_bytes_are_a_frame_error_or_nothing(junk, sizes, name):
    fr = dc.backend.get(name).framing
    reader = FrameReader(fr, 1 << 20, chunk=1024)
    try:
        _read_all(reader, ChunkedSocket(junk, sizes))
    except dc.FrameError:
        pass


@pytest.mark.parametrize("name", ["cython", "python"])
def test_huge_length_rejected_before_allocation(name):
    fr = dc.backend.get(name).framing
    head = fr.pack_header(0, 0, 0, 0, 0, 1, 1 << 40)
    reader = FrameReader(fr, 1 << 20)
    reader.fill(ChunkedSocket(head, []))
    with pytest.raises(dc.FrameError, match="exceeds max_frame_size"):
        reader.next()
    assert len(reader.buf) <= 1 << 20


@SETTINGS
@given(msgs=st.lists(payloads, min_size=1, max_size=6), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)),
                                                                     min_size=1, max_size=8),
       name=st.sampled_from(["cython", "python"]))
def test_mutated_stream_fails_cleanly(msgs, flips, name):
    """A corrupted stream gives valid frames up to the damage, then a FrameError: nothing else."""
    fr = dc.backend.get(name).framing
    stream = bytearray(b"".join(fr.encode_bytes(m, i, 0) for i, m in enumerate(msgs)))
    for pos, val in flips:
        stream[pos % len(stream)] = val
    reader = FrameReader(fr, 1 << 24, chunk=4096)
    try:
        _read_all(reader, ChunkedSocket(bytes(stream), [777]))
    except dc.FrameError:
        pass


def _take_all(reader, stats, controls):
    out = []
    while True:
        m = reader.take(controls.append, stats)
        if m is None:
            return out
        out.append(m)


def test_take_counts_delivers_once_and_hands_over_control_frames(backend):
    fr = backend.framing
    reader = backend.streamreader.FrameReader(fr, 1 << 20, chunk=4096)
    reader.epoch, reader.seen = "e1", {"e1": 4}   # seq 4 came on an earlier connection
    reader.expect = 3
    stream = b"".join([fr.encode_bytes({"dc": "hb"}, 0, 0, fr.FLAG_CONTROL)]
                      + [fr.encode_bytes(b"m%d" % i, i, 100 + i) for i in range(3, 8)]
                      + [fr.encode_bytes({"k": 1}, 8, 108)])
    reader.fill(ChunkedSocket(stream, []))
    stats, controls = backend.stats.Stats(), []
    got = _take_all(reader, stats, controls)
    assert controls == [{"dc": "hb"}]
    assert [m.seq for m in got] == [5, 6, 7, 8] and [m.timestamp_ns for m in got] == [105, 106, 107, 108]
    assert bytes(got[0].data) == b"m5" and got[-1].data == {"k": 1}
    assert reader.seen == {"e1": 8} and stats.received == 4 and stats.lost == 0


def test_take_counts_what_was_sent_before_the_connection(backend):
    fr = backend.framing
    reader = backend.streamreader.FrameReader(fr, 1 << 20)
    reader.epoch, reader.expect = "e2", 10   # the start frame said 10, the first data frame is 13
    reader.fill(ChunkedSocket(b"".join(fr.encode_bytes(b"x", i, 0) for i in (13, 14)), []))
    stats = backend.stats.Stats()
    got = _take_all(reader, stats, [])
    assert [m.seq for m in got] == [13, 14] and stats.lost == 3 and reader.expect is None
    # without record, take counts the loss but leaves recording to the caller
    reader.fill(ChunkedSocket(fr.encode_bytes(b"y", 15, 0), []))
    assert reader.take(lambda d: None, stats, False).seq == 15 and stats.received == 2


def test_take_garbage_is_a_frame_error(backend):
    fr = backend.framing
    reader = backend.streamreader.FrameReader(fr, 1 << 20)
    reader.fill(ChunkedSocket(fr.encode_bytes(b"ok", 0, 0) + b"GET / HTTP/1.1\r\n" + bytes(100), []))
    assert reader.take(lambda d: None, backend.stats.Stats()).seq == 0
    with pytest.raises(dc.FrameError, match="not a datacomms frame"):
        reader.take(lambda d: None, backend.stats.Stats())


def test_take_bad_json_is_a_frame_error(backend):
    fr = backend.framing
    frame = bytearray(fr.encode_bytes({"a": 1}, 0, 0))
    frame[64] = ord("}")
    reader = backend.streamreader.FrameReader(fr, 1 << 20)
    reader.fill(ChunkedSocket(bytes(frame), []))
    with pytest.raises(dc.FrameError):
        reader.take(lambda d: None, backend.stats.Stats())


def test_fill_fd_reads_a_socket_without_waiting(backend):
    import socket

    fr = backend.framing
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        reader = backend.streamreader.FrameReader(fr, 1 << 20, chunk=256)
        assert reader.fill_fd(b.fileno()) == -1          # nothing there yet
        big = np.arange(300, dtype=np.uint8)
        a.sendall(fr.encode_bytes(big, 0, 0) + b"\xff" * 64)
        frames = []
        while len(frames) < 1:
            assert reader.fill_fd(b.fileno()) > 0
            f = reader.next()
            if f is not None:
                frames.append(f)
        np.testing.assert_array_equal(frames[0][0], big)
        while reader.fill_fd(b.fileno()) > 0:
            pass
        with pytest.raises(dc.FrameError, match="not a datacomms frame"):
            reader.next()
        a.close()
        assert reader.fill_fd(b.fileno()) == 0          # the peer closed
    with pytest.raises(OSError):
        reader.fill_fd(b.fileno())                      # closed descriptor


@pytest.mark.parametrize("size", [64, 4096, 4097, 70_000])
def test_views_stay_valid_while_the_reader_moves_on(backend, size):
    """Small raw payloads are copies, large ones views; a view held by the caller
    keeps its bytes while later frames are read into fresh or recycled buffers."""
    fr = backend.framing
    msgs = [bytes([i]) * size for i in range(40)]
    reader = backend.streamreader.FrameReader(fr, 1 << 24, chunk=8192)
    got = _read_all(reader, ChunkedSocket(b"".join(fr.encode_bytes(m, i, 0) for i, m in enumerate(msgs)), [5000]))
    assert [bytes(g[0]) for g in got] == msgs
    assert all(type(g[0]) is (bytes if size <= backend.streamreader.SMALL_COPY else memoryview) for g in got)


@pytest.mark.parametrize("poll_first", [False, True])
@pytest.mark.parametrize("spin_ns", [0, 200_000])
def test_wait_fd_reads_times_out_and_wakes(backend, spin_ns, poll_first):
    import os
    import socket
    import threading

    fr = backend.framing
    a, b = socket.socketpair()
    rfd, wfd = os.pipe()
    try:
        b.setblocking(False)
        reader = backend.streamreader.FrameReader(fr, 1 << 20, chunk=256)
        a.sendall(fr.encode_bytes(b"early", 2, 0))
        assert reader.wait_fd(b.fileno(), rfd, 5, spin_ns, poll_first) > 0     # already there
        assert reader.next()[:2] == (b"early", 2)
        assert reader.wait_fd(b.fileno(), rfd, 0.01, spin_ns, poll_first) == -1     # nothing came in time
        os.write(wfd, b"\0")
        assert reader.wait_fd(b.fileno(), rfd, 5, spin_ns, poll_first) == -2        # woken
        os.read(rfd, 1)
        t = threading.Timer(0.05, a.sendall, [fr.encode_bytes(b"late", 3, 0)])
        t.start()
        n = reader.wait_fd(b.fileno(), -1, None, spin_ns, poll_first)               # waits for it
        t.join()
        assert n > 0 and reader.next()[:2] == (b"late", 3)
        a.close()
        assert reader.wait_fd(b.fileno(), rfd, 5, spin_ns, poll_first) == 0         # the peer closed
    finally:
        b.close()
        os.close(rfd)
        os.close(wfd)


def test_wait_fd_reads_an_announced_frame_whole(backend):
    """Once a header announced a big frame, one wait_fd call reads all of it
    (polling as the sender goes), not one socket buffer's worth."""
    import socket
    import threading

    fr = backend.framing
    big = np.arange(1 << 20, dtype=np.uint32)           # a 4 MiB frame
    frame = fr.encode_bytes(big, 9, 0)
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        reader = backend.streamreader.FrameReader(fr, 1 << 24, chunk=4096)
        t = threading.Thread(target=a.sendall, args=(frame,))
        t.start()
        f, calls = None, 0
        while f is None:
            assert reader.wait_fd(b.fileno(), -1, 10) > 0
            calls += 1
            f = reader.next()
        t.join()
        assert f[1] == 9 and calls <= 3   # the header, then the rest in one call
        np.testing.assert_array_equal(f[0], big)


def _whole(fr, data, seq: int, ts: int = 7) -> bytes:
    parts, _ = fr.encode(data, seq, ts)
    return b"".join(bytes(p) for p in parts)


def test_take_frame_of_a_sample(backend):
    """take_frame (one frame that arrived by itself): a Message per fresh seq of each
    source, None for a seq that source already delivered, stats kept per source."""
    take, fr = backend.streamreader.take_frame, backend.framing
    stats, seen = backend.stats.Stats(), {}
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = take(_whole(fr, b"x" * 64, 0), "a", seen, stats, 1 << 20)
    assert (m.data, m.seq, m.timestamp_ns) == (b"x" * 64, 0, 7) and type(m.data) is bytes
    m = take(_whole(fr, arr, 3), "a", seen, stats, 1 << 20, 1)
    assert m.seq == 3 and np.array_equal(m.data, arr)
    assert take(_whole(fr, {"k": 1}, 0), "b", seen, stats, 1 << 20).data == {"k": 1}
    assert take(_whole(fr, b"again", 3), "a", seen, stats, 1 << 20) is None
    assert seen == {"a": 3, "b": 0}
    assert (stats.received, stats.lost, stats.skipped) == (3, 1, 1)  # seq 1, 2 of "a": one skipped, one lost


@pytest.mark.parametrize("cut", ["truncated", "garbage", "too_big"])
def test_take_frame_refuses_bad_frames(backend, cut):
    take, fr = backend.streamreader.take_frame, backend.framing
    frame = _whole(fr, b"y" * 200, 5)
    bad = {"truncated": frame[:100], "garbage": b"GET / HTTP/1.1\r\n" * 8, "too_big": frame}[cut]
    seen, stats = {}, backend.stats.Stats()
    with pytest.raises(dc.FrameError):
        take(bad, "a", seen, stats, 128 if cut == "too_big" else 1 << 20)
    assert seen == {} and stats.received == 0


def test_room_for_a_frame_grows_with_what_arrives_not_with_what_its_header_says(backend):
    """A 64-byte header announcing a frame up to max_frame_size made the reader
    allocate all of it at once: three connections to a listening subscriber that
    sent a header each (and nothing else) took 3 GB of its memory. Room now grows
    with the bytes that came (at most 8 times them, at least chunk); once a frame
    that big came whole, the next one gets its room at once (no regrowing copies)."""
    import socket
    import threading

    fr = backend.framing
    chunk = 1 << 16
    frame = fr.encode_bytes(np.arange(1 << 20, dtype=np.uint32), 5, 0)   # 4 MiB and 128 bytes
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        reader = backend.streamreader.FrameReader(fr, 1 << 30, chunk=chunk)
        a.sendall(fr.pack_header(0, 0, 0, 0, 0, 1, (1 << 26) - 64))   # announces 64 MiB
        assert reader.fill_fd(b.fileno()) == 64 and reader.next() is None
        assert len(reader.buf) <= chunk, len(reader.buf)
        sent = 64
        while sent < 2 << 20:
            piece = min(sent, 1 << 16)   # the stream doubles, in pieces the socket takes at once
            a.sendall(bytes(piece))
            sent += piece
            while reader.end - reader.start < sent:
                assert reader.fill_fd(b.fileno()) > 0
                assert reader.next() is None
                assert len(reader.buf) <= max(chunk, 8 * (reader.end - reader.start)), len(reader.buf)
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        reader = backend.streamreader.FrameReader(fr, 1 << 30, chunk=chunk)
        for seq in range(2):
            t = threading.Thread(target=a.sendall, args=(frame,))
            t.start()
            got = None
            while got is None:
                assert reader.wait_fd(b.fileno(), -1, 10) > 0
                if seq == 1 and reader.end - reader.start < len(frame):
                    assert len(reader.buf) >= len(frame)   # as big as one that came whole: at once
                got = reader.next()
            t.join()
            assert got[1] == 5 and np.array_equal(got[0], np.arange(1 << 20, dtype=np.uint32))
            del got
