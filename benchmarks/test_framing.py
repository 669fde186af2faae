"""Framing costs, cython beside python and beside bare serializers.

Run: pytest benchmarks/test_framing.py --benchmark-group-by=group
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import orjson
import pytest

from conftest import joint_state

ARRAY_8M = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)
PAYLOAD_64 = b"x" * 64


def roundtrip(framing, value):
    frame = framing.encode_bytes(value, 1, 2)
    return framing.decode(frame)


@pytest.mark.benchmark(group="joint dict: encode+decode")
def test_joint_dict_roundtrip(benchmark, backend):
    """Encode + decode the joint-state dict as a frame."""
    value = joint_state()
    out = benchmark(roundtrip, backend.framing, value)
    assert out[0] == value


@pytest.mark.benchmark(group="joint dict: encode+decode")
@pytest.mark.parametrize("codec", ["orjson", "json", "pickle"])
def test_joint_dict_bare_codec(benchmark, codec):
    """The same dict through a bare serializer, no framing."""
    value = joint_state()
    dumps, loads = {"orjson": (orjson.dumps, orjson.loads), "json": (json.dumps, json.loads),
                    "pickle": (pickle.dumps, pickle.loads)}[codec]
    assert benchmark(lambda: loads(dumps(value))) == value


@pytest.mark.benchmark(group="64 B bytes: encode+decode")
def test_small_bytes_roundtrip(benchmark, backend):
    """Encode + decode a 64-byte raw payload."""
    out = benchmark(roundtrip, backend.framing, PAYLOAD_64)
    assert bytes(out[0]) == PAYLOAD_64


@pytest.mark.benchmark(group="8 MiB array: encode (scatter-gather parts)")
def test_big_array_encode(benchmark, backend):
    """Encode an 8 MiB uint8 array into parts (the array is referenced, not copied)."""
    parts, n = benchmark(backend.framing.encode, ARRAY_8M, 1, 2)
    assert n >= ARRAY_8M.nbytes


@pytest.mark.benchmark(group="decode: 8 MiB array vs 64 B (zero copy)")
@pytest.mark.parametrize("size", ["64B", "8MiB"])
def test_decode_array(benchmark, backend, size):
    """Decode an array frame already in memory; with no copy, size should not matter."""
    arr = ARRAY_8M if size == "8MiB" else ARRAY_8M[:64]
    frame = backend.framing.encode_bytes(arr, 1, 2)
    out = benchmark(backend.framing.decode, frame)
    assert out[0].nbytes == arr.nbytes


@pytest.mark.benchmark(group="header: pack+unpack")
def test_header_pack_unpack(benchmark, backend):
    """Pack a 64-byte header and validate/unpack it again."""
    f = backend.framing

    def run():
        return f.unpack_header(f.pack_header(2, 0, 123, 456, 100, 0, 0))

    assert benchmark(run)[2] == 123
