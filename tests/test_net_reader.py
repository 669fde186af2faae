"""The receive side's frame reader against arbitrary chunking and arbitrary bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datacomms as dc
from datacomms.transports._net import FrameReader



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


def _read_all(reader: FrameReader, sock: ChunkedSocket) -> list:
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
