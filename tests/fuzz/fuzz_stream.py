"""Coverage-guided fuzzing of the TCP stream parser (transports/_net.py
FrameReader) through a fake socket that hands out the input in chunks the
input itself chooses.

    python tests/fuzz/fuzz_stream.py -max_total_time=600 tests/fuzz/corpus/stream

Input layout: byte 0 picks the framing backend (bit 0) and the reader's
buffer size; bytes 1..4 are chunk sizes; the rest is the byte stream. The
properties checked on every input:
  - the only exception is dc.FrameError;
  - the frames the reader yields are exactly the frames a one-shot decode of
    the whole stream yields, in order, up to the first bad or incomplete one,
    whatever the chunking and the buffer size (nothing torn, skipped or
    invented, and a bad frame stops the reader where it stops the decoder);
  - views it handed out keep their bytes after the rest of the stream is read.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import datacomms as dc
    from datacomms.backend import _meta  # noqa: F401  (instrumented for coverage)
    from datacomms.backend.python import framing as py_framing
    from datacomms.transports._net import FrameReader

import numpy as np

FRAMINGS = (py_framing, dc.backend.get("cython").framing)
CHUNKS = (256, 1024, 4096, 1 << 16)
MAX_FRAME = 1 << 16


class ChunkedSocket:
    """recv_into in the given chunk sizes, 0 at the end: a stream socket."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.pos, self.i = data, sizes, 0, 0

    def recv_into(self, view: memoryview) -> int:
        want = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        n = min(want, len(view), len(self.data) - self.pos)
        view[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def canonical(value: object) -> object:
    """A comparable, copied form of a decoded value (views are read now)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    if isinstance(value, dict):
        return ("dict", [(k, canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [canonical(v) for v in value])
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def one_shot(framing, stream: bytes) -> list:
    """Frames of the stream decoded in place, up to the first that does not decode."""
    out, off = [], 0
    while off < len(stream):
        try:
            data, seq, ts, flags, n = framing.decode(stream, off, MAX_FRAME)
        except dc.FrameError:
            break
        out.append((canonical(data), seq, ts, flags))
        off += n
    return out


def test_one_input(data: bytes) -> None:
    if len(data) < 5:
        return
    framing = FRAMINGS[data[0] & 1]
    chunk = CHUNKS[(data[0] >> 1) & 3]
    sizes = [1 + b * (1 + (data[0] >> 3)) for b in data[1:5]]
    stream = data[5:]
    reader = FrameReader(framing, MAX_FRAME, chunk=chunk)
    sock = ChunkedSocket(stream, sizes)
    got, views = [], []
    try:
        for _ in range(len(stream) + 10):  # every round yields a frame or reads >= 1 byte
            f = reader.next()
            if f is not None:
                got.append((canonical(f[0]), f[1], f[2], f[3]))
                views.append((f[0], got[-1][0]))
                continue
            if reader.fill(sock) == 0:
                break
        else:
            raise AssertionError("the reader neither yields frames nor consumes bytes")
    except dc.FrameError:
        pass
    expect = one_shot(framing, stream)
    if got != expect:
        raise AssertionError(f"stream reader gave {len(got)} frames, a one-shot decode {len(expect)}, or they differ")
    for view, seen in views:
        if canonical(view) != seen:
            raise AssertionError("a frame handed out earlier changed while the stream was read on")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
