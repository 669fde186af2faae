"""Property tests of the framing layer: random payloads round-trip on each
backend and across backends, mutated frames never crash either decoder, and the
two backends' JSON decoders and encoders accept, refuse and read alike."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
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


# -- the two JSON decoders and encoders agree ------------------------------------------------------
# Texts near the edges of JSON, valid or not: escapes of every kind (lone and paired surrogates
# among them), numbers at and past the float and 64-bit limits, duplicate and non-string keys,
# BOMs, whitespace JSON has and has not, trailing bytes, invalid UTF-8.

_hex = st.sampled_from("0123456789abcdefABCDEF")
_escapes = (st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\x41", "\\a", "\\U0041", "\\u12"])
            | st.builds(lambda a, b, c: f"\\u{a}{b}{c}", st.sampled_from(["d8", "DB", "dc", "DF", "00", "e0", "D7"]), _hex, _hex))
_raw_bytes = st.sampled_from([b"\x00", b"\x1f", b"\x7f", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x80\xa8",
                              b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf", b"\t", b"\n"])
_string_parts = st.text(max_size=4).map(lambda s: s.replace("\\", "").replace('"', "").encode("utf-8", "replace")) \
    | _escapes.map(str.encode) | _raw_bytes
json_strings = st.lists(_string_parts, max_size=4).map(lambda parts: b'"' + b"".join(parts) + b'"')
json_numbers = (st.from_regex(rb"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,4})?([eE][-+]?[0-9]{1,4})?\Z")
                | st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"-0", b"-0.0", b".5", b"5.", b"01", b"+1", b"1E5",
                                   b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808",
                                   b"-9223372036854775809", b"1" + b"0" * 400, b"1" + b"0" * 310 + b"e-300",
                                   b"1.7976931348623159e308", b"2.4703282292062328e-324", b"NaN", b"-Infinity"]))
json_atoms = json_strings | json_numbers | st.sampled_from([b"true", b"false", b"null", b"True", b"nul"])
_ws = st.sampled_from([b"", b"", b" ", b"\t", b"\n", b"\r", b"\x0c", b"\xc2\xa0"])


def _array(items, ws):
    return b"[" + ws + b",".join(items) + ws + b"]"


def _object(pairs, ws):
    return b"{" + b",".join(k + ws + b":" + v for k, v in pairs) + b"}"


json_texts = st.recursive(
    json_atoms,
    lambda kids: st.builds(_array, st.lists(kids, max_size=4), _ws)
    | st.builds(_object, st.lists(st.tuples(json_strings | json_numbers | st.just(b'"k"'), kids), max_size=4), _ws),
    max_leaves=12)
json_documents = st.builds(lambda bom, lead, text, trail: bom + lead + text + trail,
                           st.sampled_from([b"", b"", b"", b"\xef\xbb\xbf"]), _ws, json_texts,
                           _ws | st.sampled_from([b"\x00", b"x", b"{}", b",", b"\n\n"]))


def _outcome(loads, text):
    try:
        return repr(loads(text))   # repr tells 1 from 1.0 and -0.0 from 0.0
    except dc.FrameError:
        return "FrameError"


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both backends")
@settings_
@given(text=json_documents)
def test_both_json_decoders_accept_and_refuse_alike(text):
    cy, py = (dc.backend.get(name).framing for name in ("cython", "python"))
    assert _outcome(cy.loads_json, text) == _outcome(py.loads_json, text)


# Values either encoder may be handed, near the edges of what JSON carries: both write frames
# read to the same value, or both refuse with FrameError.
_edge_scalars = (json_scalars | st.integers(-(2**64), 2**65) | st.floats() | st.text(max_size=4)
                 | st.sampled_from([np.float32("nan"), np.float64("inf"), np.int64(-5), np.uint64(2**64 - 1),
                                    np.float16(0.1), np.float32(3.4e38), np.bool_(True), np.longdouble(1),
                                    np.datetime64("2020-01-02T03:04:05.123456789"), np.datetime64("NaT"), (1, "a")])
                 | st.datetimes(timezones=st.timedeltas(-datetime.timedelta(hours=23), datetime.timedelta(hours=23))
                                .map(datetime.timezone)))
_keys = st.text(max_size=4) | st.integers(-(2**64), 2**65) | st.floats() | st.booleans() | st.none() \
    | st.sampled_from([np.int64(7), np.float32(0.25), np.bool_(False)])


class _Dict(dict):
    pass


@dataclasses.dataclass
class _Box:
    item: object


edge_values = st.recursive(_edge_scalars | arrays.filter(lambda a: a.size < 8) | st.binary(max_size=4),
                           lambda kids: st.lists(kids, max_size=4) | st.tuples(kids)
                           | st.dictionaries(_keys, kids, max_size=4) | st.dictionaries(_keys, kids, max_size=3).map(_Dict)
                           | kids.map(_Box), max_leaves=10)


def _canon(v):
    """v as plain Python data that compares equal only when the decoded values are the same."""
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, memoryview):
        return ("bytes", bytes(v))
    if isinstance(v, dict):
        return ("dict", [(k, _canon(x)) for k, x in v.items()])
    if isinstance(v, list):
        return ("list", [_canon(x) for x in v])
    return (type(v).__name__, repr(v))


def _read_back(encode, value):
    """What every decoder reads from the frame an encoder writes of value (or its refusal)."""
    try:
        frame = encode(value, 1, 2)
    except dc.FrameError:
        return "FrameError"
    return [_canon(b.framing.decode(frame)[0]) for b in BACKENDS]


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both backends")
@settings_
@given(value=edge_values)
def test_both_encoders_write_or_refuse_alike(value):
    """Both refuse, or both write a frame every decoder reads to the same value (the bytes
    may differ: orjson writes 1e-05 as 0.00001)."""
    cy, py = (dc.backend.get(name).framing for name in ("cython", "python"))
    written = _read_back(cy.encode_bytes, value)
    assert written == _read_back(py.encode_bytes, value)
    assert written == "FrameError" or written[0] == written[-1]
