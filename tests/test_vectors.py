"""Byte-level frame vectors (tests/vectors/, made by generate.py from the spec's
reference): every backend must decode each to its value and encode the value
back to exactly the same bytes."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from vectors.generate import build

HERE = pathlib.Path(__file__).parent / "vectors"
MANIFEST = json.loads((HERE / "vectors.json").read_text())


def assert_same(got: object, want: object) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    elif isinstance(want, bytes):
        assert bytes(got) == want
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for k in want:
            assert_same(got[k], want[k])
    else:
        assert got == want and type(got) is type(want)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vector_decodes(backend, name):
    case = MANIFEST[name]
    frame = (HERE / f"{name}.bin").read_bytes()
    data, seq, ts, flags, length = backend.framing.decode(frame)
    assert (seq, ts, flags, length) == (case["seq"], case["timestamp_ns"], case["flags"], len(frame))
    assert_same(data, build(case["value"]))


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vector_encodes_to_same_bytes(backend, name):
    case = MANIFEST[name]
    frame = backend.framing.encode_bytes(build(case["value"]), case["seq"], case["timestamp_ns"], case["flags"])
    assert frame == (HERE / f"{name}.bin").read_bytes()


def test_header_layout_matches_spec():
    """The documented offsets (docs/frame-format.md) read straight off a vector."""
    frame = (HERE / "array_f8_2x3.bin").read_bytes()
    assert frame[0:4] == b"DCMF" and frame[4] == 1 and frame[5] == 1
    assert int.from_bytes(frame[8:16], "little") == 10
    assert int.from_bytes(frame[16:24], "little") == 8
    meta_len = int.from_bytes(frame[24:28], "little")
    assert json.loads(frame[64:64 + meta_len]) == {"dtype": "<f8", "shape": [2, 3]}
    assert int.from_bytes(frame[28:32], "little") == 1
    assert int.from_bytes(frame[32:40], "little") == 48
    assert int.from_bytes(frame[40:48], "little") == len(frame) == 64 + 64 + 64
    assert np.frombuffer(frame, "<f8", 6, 128).tolist() == [0, 1, 2, 3, 4, 5]
