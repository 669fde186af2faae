"""Property tests of the framing layer: random payloads round-trip on each
backend and across backends, and mutated frames never crash either decoder."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import datacomms as dc
from conftest import AVAILABLE
from test_framing import same

BACKENDS = [dc.backend.get(name) for name in AVAILABLE]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=20)
arrays = hnp.arrays(dtype=hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes(),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
leaves = json_scalars | arrays | st.binary(max_size=100)
mixed = st.recursive(leaves, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
payloads = st.binary(max_size=300) | json_values | arrays | mixed

pairs = [(a, b) for a in BACKENDS for b in BACKENDS]
settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("enc,dec", pairs, ids=[f"{a.name}->{b.name}" for a, b in pairs])
@settings_
@given(value=payloads, seq=st.integers(0, 2**64 - 1), ts=st.integers(-(2**63), 2**63 - 1))
def test_round_trip(enc, dec, value, seq, ts):
    frame = enc.framing.encode_bytes(value, seq, ts)
    data, s, t, flags, n = dec.framing.decode(frame)
    assert (s, t, flags, n) == (seq, ts, 0, len(frame))
    assert same(data, value)


@pytest.mark.parametrize("dec", BACKENDS, ids=[b.name for b in BACKENDS])
@settings_
@given(value=payloads, data=st.data())
def test_mutated_frames_fail_cleanly(dec, value, data):
    frame = bytearray(dc.backend.get("python").framing.encode_bytes(value, 1, 2))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and frame:
            i = data.draw(st.integers(0, len(frame) - 1))
            frame[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del frame[data.draw(st.integers(0, len(frame))):]
        else:
            frame += data.draw(st.binary(max_size=64))
    try:
        dec.framing.decode(bytes(frame))
    except dc.FrameError:
        pass


@pytest.mark.parametrize("dec", BACKENDS, ids=[b.name for b in BACKENDS])
@settings_
@given(junk=st.binary(max_size=512))
def test_random_bytes_fail_cleanly(dec, junk):
    try:
        dec.framing.decode(junk)
    except dc.FrameError:
        pass
    with pytest.raises(dc.FrameError):
        dec.framing.decode(b"NOPE" + junk)
