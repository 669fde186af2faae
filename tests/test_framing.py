"""The framing layer on both backends: round trips, zero copy, cross-backend
decoding, and a clear FrameError for every kind of bad input."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import struct
import uuid

import numpy as np
import pytest

import datacomms as dc

from conftest import AVAILABLE

VALUES = [
    b"", b"x", b"\x00" * 63, b"y" * 5000, bytearray(b"abc"),
    {"timestamp": 1.0, **{f"joint_{i}": i * 0.1 for i in range(1, 9)}},
    [1, 2.5, "three", None, True, {"nested": [False]}], "text", 17, -3.25, None,
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.zeros((0, 5), dtype=np.int16), np.array(3.5), np.arange(7, dtype=">u8"),
    np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    np.array([[1 + 2j]], dtype=np.complex128),
    {"frame": np.ones((4, 4, 3), np.uint8), "meta": {"id": 3, "raw": b"\x01\x02"}, "list": [np.arange(3)]},
]


def same(a: object, b: object) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(b, (bytes, bytearray, memoryview)):
        return bytes(a) == bytes(b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def frame_of(backend, value, seq=5, ts=77) -> bytes:
    parts, n = backend.framing.encode(value, seq, ts)
    frame = b"".join(bytes(p) for p in parts)
    assert len(frame) == n and n % 64 == 0
    return frame


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_both_directions(backend, value):
    frame = frame_of(backend, value)
    for decoder in map(dc.backend.get, AVAILABLE):
        data, seq, ts, flags, n = decoder.framing.decode(frame)
        assert same(data, value) and (seq, ts, flags, n) == (5, 77, 0, len(frame))


def test_backends_encode_identical_frames(backend):
    for other in map(dc.backend.get, AVAILABLE):
        for value in VALUES:
            assert frame_of(backend, value) == frame_of(other, value)


def test_decode_is_zero_copy_and_respects_writability(backend):
    arr = np.arange(1 << 20, dtype=np.uint8)
    frame = bytearray(frame_of(backend, arr))
    out = backend.framing.decode(frame)[0]
    assert np.shares_memory(out, np.frombuffer(frame, np.uint8))
    assert out.flags.writeable  # a bytearray is writable, so is the view
    ro = backend.framing.decode(bytes(frame))[0]
    assert not ro.flags.writeable
    raw = backend.framing.decode(bytes(frame_of(backend, b"abc")))[0]
    assert isinstance(raw, memoryview) and raw.readonly and bytes(raw) == b"abc"


def test_decoding_from_a_byte_array_gives_what_bytes_give(backend):
    """A frame held in a uint8 ndarray (an shm ring's, sliced rather than re-viewed) decodes
    to what the same bytes decode to, at an offset, as views of that array, read-only when it is."""
    values = [np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(7, dtype=np.uint8), b"raw", {"j": 1},
              {"a": np.arange(3, dtype=np.int16), "b": b"q" * 5}]
    for value in values:
        frame = bytes(frame_of(backend, value, seq=9))
        store = np.zeros(128 + len(frame), np.uint8)
        store[128:] = np.frombuffer(frame, np.uint8)
        store.flags.writeable = False
        got, seq, *_ = backend.framing.decode(store, 128)
        want = backend.framing.decode(frame)[0]
        assert seq == 9
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value)
            assert np.shares_memory(got, store) and not got.flags.writeable
        elif isinstance(value, bytes):
            assert bytes(got) == bytes(want) == value
        elif "a" in value:
            assert np.array_equal(got["a"], value["a"]) and bytes(got["b"]) == value["b"]
        else:
            assert got == want == value


def test_payloads_are_64_byte_aligned(backend):
    value = {"a": np.arange(3, dtype=np.uint8), "b": np.arange(5, dtype=np.float64), "c": b"q" * 70}
    buf = np.zeros(4096 + 64, np.uint8)
    base = (-buf.ctypes.data) % 64
    frame = frame_of(backend, value)
    buf[base:base + len(frame)] = np.frombuffer(frame, np.uint8)
    out = backend.framing.decode(buf[base:base + len(frame)])[0]
    assert out["a"].ctypes.data % 64 == 0 and out["b"].ctypes.data % 64 == 0


def test_encode_references_large_buffers_without_copying(backend):
    arr = np.ones((2048, 2048), np.uint8)
    parts, n = backend.framing.encode(arr, 1, 1)
    assert any(np.shares_memory(np.frombuffer(p, np.uint8), arr) for p in parts[1:])
    assert n == 64 + 64 + arr.nbytes


def test_non_contiguous_array_becomes_contiguous(backend):
    arr = np.arange(100, dtype=np.int32).reshape(10, 10)[::2, ::3]
    out = backend.framing.decode(frame_of(backend, arr))[0]
    assert np.array_equal(out, arr) and out.flags.c_contiguous


def test_frames_decode_at_an_offset(backend):
    a, b = frame_of(backend, {"k": 1}, seq=1), frame_of(backend, b"second", seq=2)
    stream = a + b
    first = backend.framing.decode(stream)
    second = backend.framing.decode(stream, first[4])
    assert first[0] == {"k": 1} and bytes(second[0]) == b"second" and second[1] == 2


def test_nan_becomes_null_on_both_backends(backend):
    out = backend.framing.decode(frame_of(backend, {"x": float("nan"), "y": float("inf")}))[0]
    assert out == {"x": None, "y": None}


@pytest.mark.parametrize("bad", [{1, 2}, object(), np.array([object()]), {"a": {1, 2}}])
def test_unencodable_values_are_frame_errors(backend, bad):
    with pytest.raises(dc.FrameError):
        backend.framing.encode(bad, 0, 0)


class _Float(float):
    pass


class _Colour(enum.Enum):
    RED = (1, 2)


@dataclasses.dataclass
class _Joint:
    position: float
    limits: list


# (value, what every decoder returns) for values JSON has no type of its own for
# (docs/frame-format.md): the two backends used to differ on most of them
ODD_JSON = [
    (2 ** 64 - 1, 2 ** 64 - 1), (-2 ** 63, -2 ** 63), ({"n": 10 ** 18}, {"n": 10 ** 18}),
    (np.bool_(True), True), (np.int8(-3), -3), (np.uint64(2 ** 64 - 1), 2 ** 64 - 1),
    (np.float16(0.1), 0.099975586), (np.float32(0.1), 0.1),
    (np.datetime64("2020-01-02"), "2020-01-02T00:00:00"),
    (np.datetime64("2020-01-02T03:04:05.120", "ms"), "2020-01-02T03:04:05.120000"),
    ({"t": np.datetime64("2020-01-02T03:04:05.123456789")}, {"t": "2020-01-02T03:04:05.123456"}), ({"x": np.float32(3.4e38)}, {"x": 3.4e38}),
    (np.float64(0.1), 0.1), (np.float32("nan"), None), ([np.float64("-inf")], [None]),
    (_Float(1.5), 1.5), ({"x": _Float("nan")}, {"x": None}), (float("nan"), None),
    ((1, (2, "3")), [1, [2, "3"]]),
    ({1: "a", 2.5: "b", False: "c", None: "d"}, {"1": "a", "2.5": "b", "false": "c", "null": "d"}),
    ({np.int64(7): 1, np.float64(0.5): 2, np.float32(0.25): 3, np.bool_(False): 4},
     {"7": 1, "0.5": 2, "0.25": 3, "false": 4}),
    ({float("nan"): 1}, {"null": 1}), ({2 ** 64 - 1: 0}, {str(2 ** 64 - 1): 0}),
    # float keys as Python prints them: orjson wrote "1e-9", "0.000038536333326653204"
    ({1e-09: 1, 3.8536333326653204e-05: 2, 1e16: 3}, {"1e-09": 1, "3.8536333326653204e-05": 2, "1e+16": 3}),
    (uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005"), (_Colour.RED, [1, 2]),
    (datetime.datetime(2021, 1, 2, 3, 4, 5), "2021-01-02T03:04:05"),
    (datetime.datetime(2021, 1, 2, 3, 4, 5, 120, tzinfo=datetime.timezone.utc), "2021-01-02T03:04:05.000120+00:00"),
    (datetime.datetime(2021, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(-datetime.timedelta(hours=3, seconds=15))),
     "2021-01-02T03:04:05-03:00"),
    # an offset's seconds round it to the nearest minute, 30 away from zero, as orjson writes it
    (datetime.datetime(2021, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=1, seconds=30))),
     "2021-01-02T00:00:00+01:01"),
    (datetime.datetime(2021, 1, 2, tzinfo=datetime.timezone(-datetime.timedelta(hours=3, seconds=45))),
     "2021-01-02T00:00:00-03:01"),
    ({datetime.date(2021, 1, 2): datetime.time(3, 4, 5, 7)}, {"2021-01-02": "03:04:05.000007"}),
    (_Joint(1.5, [np.float32(0.1), (2, 3)]), {"position": 1.5, "limits": [0.1, [2, 3]]}),
]
NO_JSON = [2 ** 64, -2 ** 63 - 1, {"a": [2 ** 70]}, {2 ** 64: 1}, np.datetime64("NaT"), np.timedelta64(5, "s"),
           np.longdouble(1.5), np.complex128(1j), decimal.Decimal("1.5"), {1, 2}, frozenset(), {(1,): 2},
           {b"k": 1}, {"a": {"b": np.timedelta64(0, "s")}}, "\ud800",
           datetime.time(3, 4, tzinfo=datetime.timezone.utc), _Joint]


@pytest.mark.parametrize("value,expected", ODD_JSON, ids=lambda v: type(v).__name__)
def test_values_json_has_no_type_for_encode_alike_on_both_backends(backend, value, expected):
    """Both backends write the same JSON for numpy scalars, tuples, float subclasses, NaN and
    non-string keys, and every decoder reads it back the same."""
    frame = frame_of(backend, value)
    for decoder in map(dc.backend.get, AVAILABLE):
        got = decoder.framing.decode(frame)[0]
        assert got == expected and type(got) is type(expected)
    for other in map(dc.backend.get, AVAILABLE):
        assert other.framing.loads_json(other.framing.dumps_json(value)) == expected


@pytest.mark.parametrize("bad", NO_JSON, ids=lambda v: type(v).__name__)
def test_values_the_format_cannot_carry_are_frame_errors_on_both_backends(backend, bad):
    """Integers beyond 64 bits (docs/frame-format.md), numpy NaT and timedeltas, Decimal, sets,
    keys that are not scalars: dc.FrameError on both backends. The python backend used to send
    big integers."""
    with pytest.raises(dc.FrameError, match="JSON"):
        backend.framing.encode(bad, 0, 0)
    with pytest.raises(dc.FrameError, match="JSON"):
        backend.framing.encode({"x": bad, "img": np.zeros(2)}, 0, 0)   # kind 3: JSON with buffers


@pytest.mark.parametrize("text,expected", [
    (b"18446744073709551615", 2 ** 64 - 1), (b"-9223372036854775808", -2 ** 63),
    (b"18446744073709551616", 2.0 ** 64), (b"[-9223372036854775809]", [-2.0 ** 63]), (b"1e-400", 0.0),
    (b'"123456789012345678901234567890"', "123456789012345678901234567890"),
])
def test_numbers_beyond_64_bits_decode_alike_on_both_backends(backend, text, expected):
    """What another encoder may write: an integer beyond 64 bits reads as a float on both."""
    got = backend.framing.loads_json(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b"[1" + b"0" * 400 + b".0]",
                                  b"[1" + b"0" * 400 + b"]", b"-" + b"9" * 310])
def test_json_without_a_finite_number_is_a_frame_error_on_both_backends(backend, text):
    """An integer too large even for a float too: the python backend used to read it as inf."""
    with pytest.raises(dc.FrameError):
        backend.framing.loads_json(text)


def json_frame(body: bytes, flags: int = 0) -> bytes:
    """A kind-2 frame around a JSON text, as any peer may send it."""
    head = dc.backend.get("python").framing.pack_header(2, flags, 1, 2, len(body), 0, 0)
    return head + body + bytes(-len(body) % 64)


@pytest.mark.parametrize("body", [b'{"x":"\\ud800"}', b'"\\udc00"', b'["\\ud800\\u0041"]', b'"\\uDFFF\\ud800"',
                                  b'{"\\ud83d":1}', b'["a","b\\ud800"]', b'{"a":"\\udf69","a":0}'])
@pytest.mark.parametrize("flags", [0, 1], ids=["data", "control"])
def test_a_lone_surrogate_escape_is_a_frame_error_on_both_backends(backend, body, flags):
    """orjson refuses an escaped surrogate that is not half of a pair; the python backend
    used to read it into a str that neither backend can encode again."""
    with pytest.raises(dc.FrameError, match="surrogate"):
        backend.framing.decode(json_frame(body, flags))


def test_escaped_surrogate_pairs_and_escaped_backslashes_read_alike(backend):
    text = b'{"p":"\\ud83d\\ude00","P":"\\uD83D\\uDE00","b":"\\\\ud800"}'
    assert backend.framing.decode(json_frame(text))[0] == {"p": "\U0001F600", "P": "\U0001F600", "b": "\\ud800"}


def _nested(depth: int, kind: type = list, leaf: object = None) -> object:
    value = leaf
    for _ in range(depth):
        value = [value] if kind is list else {"k": value}
    return value


@pytest.mark.parametrize("kind", [list, dict])
def test_json_nested_254_deep_is_the_limit_on_both_backends(backend, kind):
    """docs/frame-format.md: 254 levels of arrays and objects, written or read. orjson writes
    no deeper and read up to 1024; the python backend wrote up to ~990 and read as deep as
    its stack allowed (RecursionError past it)."""
    deepest, deeper = _nested(254, kind, 1), _nested(255, kind, 1)
    frame = frame_of(backend, deepest)
    for decoder in map(dc.backend.get, AVAILABLE):
        assert decoder.framing.decode(frame)[0] == deepest
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.encode(deeper, 0, 0)
    text = b'{"k":' * 255 + b"1" + b"}" * 255 if kind is dict else b"[" * 255 + b"1" + b"]" * 255  # another encoder's
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.decode(json_frame(text))
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.decode(json_frame(b"[" * 1000 + b"]" * 1000, flags=1))
    # brackets inside strings are no nesting
    flat = {"s": "[{" * 300 + "\\\"[" * 10}
    assert backend.framing.decode(frame_of(backend, flat))[0] == flat


def test_json_with_buffers_nested_too_deep_is_a_frame_error_on_both_backends(backend):
    """A kind 3 meta nests the data one level deeper ({"data": ...}): the same limit holds for
    the whole meta, on both backends."""
    ok = _nested(253, list, np.arange(3))
    frame = frame_of(backend, ok)
    for decoder in map(dc.backend.get, AVAILABLE):
        assert same(decoder.framing.decode(frame)[0], ok)
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.encode(_nested(254, list, np.arange(3)), 0, 0)


class _Dict(dict):
    pass


class _List(list):
    pass


@pytest.mark.parametrize("value", [_Dict(a=np.arange(3)), {"x": _List([np.arange(2.0), b"yz"])},
                                   collections.OrderedDict(a=np.ones(2, np.uint8)), _Dict(k=(np.zeros(1),))],
                         ids=["dict-subclass", "list-subclass", "ordereddict", "tuple-in-subclass"])
def test_arrays_inside_dict_and_list_subclasses_travel_as_buffers_on_both_backends(backend, value):
    """The cython backend wrote them as JSON lists (orjson's numpy option), the python one
    refused them: both now send them as buffers, as in a plain dict or list."""
    frame = frame_of(backend, value)
    for decoder in map(dc.backend.get, AVAILABLE):
        assert same(decoder.framing.decode(frame)[0], value)


def test_arrays_inside_a_dataclass_travel_as_buffers_on_both_backends(backend):
    """A dataclass is written as the dict of its fields; the arrays in it went as JSON lists
    on the cython backend and were refused on the python one."""
    value = [_Joint(1.5, [np.arange(3, dtype=np.int16), b"q"]), {"j": _Joint(np.ones((2, 2)), [])}]
    frame = frame_of(backend, value)
    want = [{"position": 1.5, "limits": [np.arange(3, dtype=np.int16), b"q"]}, {"j": {"position": np.ones((2, 2)),
                                                                                     "limits": []}}]
    for decoder in map(dc.backend.get, AVAILABLE):
        assert same(decoder.framing.decode(frame)[0], want)


@pytest.mark.parametrize("value", [{0: np.zeros(2)}, {"a": [{1.5: b"x"}]}, {None: {"b": np.ones(1)}}])
def test_a_buffer_under_a_key_that_is_not_a_string_is_a_frame_error(backend, value):
    """docs/frame-format.md: dict keys holding buffers must be strings. Both backends used to
    write a frame whose buffer path no decoder could follow."""
    with pytest.raises(dc.FrameError, match="must be a string"):
        backend.framing.encode(value, 0, 0)


@pytest.mark.parametrize("kind", [list, dict, tuple])
def test_very_deep_values_are_frame_errors_not_crashes(backend, kind):
    """The compiled backend looked for buffers by C recursion, without a limit: a list nested
    100,000 deep crashed the process. The python backend raised RecursionError."""
    value: object = None
    for _ in range(100_000):
        value = {"k": value} if kind is dict else kind([value])
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.encode(value, 0, 0)
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.encode([np.zeros(1), value], 0, 0)
    with pytest.raises(dc.FrameError, match="nested deeper than 254"):
        backend.framing.encode_bytes(value, 0, 0)


def _patch(frame: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(frame)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


GOOD_ARRAY = np.arange(6, dtype="<f8").reshape(2, 3)


def _bad_frames(backend):
    arr = frame_of(backend, GOOD_ARRAY)
    js = frame_of(backend, {"a": 1})
    mixed = frame_of(backend, {"img": np.arange(4, dtype=np.uint8), "b": b"zz"})

    def with_meta(frame: bytes, meta: bytes, kind: int | None = None) -> bytes:
        # rebuild a frame with a different meta but the same payload section
        (_, _, k, flags, seq, ts, mlen, nbufs, plen, flen, _) = struct.unpack_from("<4sBBHQqIIQQ16s", frame)
        start = 64 + ((mlen + 63) & ~63)
        payload = frame[start:]
        mpad = meta + bytes((-len(meta)) % 64)
        hdr = struct.pack("<4sBBHQqIIQQ16s", b"DCMF", 1, k if kind is None else kind, flags, seq, ts, len(meta),
                          nbufs, plen, 64 + len(mpad) + len(payload), bytes(16))
        return hdr + mpad + payload

    return {
        "empty": (b"", "truncated"),
        "short header": (arr[:40], "truncated"),
        "truncated body": (arr[:-64], "truncated"),
        "bad magic": (b"XXXX" + arr[4:], "magic"),
        "bad version": (_patch(arr, 4, "<B", 9), "version"),
        "bad kind": (_patch(arr, 5, "<B", 200), "kind"),
        "bad flags": (_patch(arr, 6, "<H", 0x80), "flags"),
        "reserved set": (_patch(arr, 60, "<B", 1), "reserved"),
        "huge frame_len": (_patch(arr, 40, "<Q", 1 << 40), "max_frame_size"),
        "huge payload_len": (_patch(arr, 32, "<Q", (1 << 64) - 64), "max_frame_size"),
        "frame_len lies": (_patch(arr, 40, "<Q", 256 + 64), "inconsistent"),
        "meta_len lies": (_patch(js, 24, "<I", 70), "inconsistent"),
        "json with buffers count": (_patch(js, 28, "<I", 2), "inconsistent"),
        "not json meta": (with_meta(js, b"{not json"), "JSON"),
        "utf-16 meta": (with_meta(js, '{"a":1}'.encode("utf-16-le")), "JSON"),
        "bad dtype": (with_meta(arr, b'{"dtype":"<zz9","shape":[2,3]}'), "dtype"),
        "object dtype": (with_meta(arr, b'{"dtype":"|O","shape":[6]}'), "dtype"),
        "subarray dtype": (with_meta(arr, b'{"dtype":"3f8","shape":[2]}'), "subarray"),
        "shape too big": (with_meta(arr, b'{"dtype":"<f8","shape":[1000,1000]}'), "shape"),
        "negative shape": (with_meta(arr, b'{"dtype":"<f8","shape":[-2,-3]}'), "shape"),
        "shape not list": (with_meta(arr, b'{"dtype":"<f8","shape":"x"}'), "shape"),
        "meta not object": (with_meta(arr, b"[1,2]"), "object"),
        "table overruns": (with_meta(mixed, b'{"data":{"img":null,"b":null},"buffers":[[["img"],"|u1",[4],4],'
                                             b'[["b"],null,null,9999]]}'), "overruns"),
        "table wrong count": (with_meta(mixed, b'{"data":{"img":null},"buffers":[[["img"],"|u1",[4],4]]}'),
                              "buffer table"),
        "table bad path": (with_meta(mixed, b'{"data":{"img":null,"b":null},"buffers":[[["nope"],"|u1",[4],4],'
                                            b'[["b"],null,null,2]]}'), "path"),
        "table path into int": (with_meta(mixed, b'{"data":{"img":5,"b":null},"buffers":[[["img","x"],"|u1",[4],'
                                                 b'4],[["b"],null,null,2]]}'), "path"),
        "table bad entry": (with_meta(mixed, b'{"data":{},"buffers":[7,8]}'), "entry"),
    }


BAD_NAMES = list(_bad_frames(dc.backend.get("python")))


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_frames_are_frame_errors(backend, case):
    frame, reason = _bad_frames(backend)[case]
    with pytest.raises(dc.FrameError, match=f"(?i){reason}"):
        backend.framing.decode(frame)


def test_a_remembered_array_meta_is_still_checked_against_the_payload(backend):
    """Array metas seen before skip parsing, never the check that the shape fills the payload."""
    good = frame_of(backend, np.arange(8, dtype=np.uint8))
    assert backend.framing.decode(good)[0].tolist() == list(range(8))   # now remembered
    (_, _, k, flags, seq, ts, mlen, nbufs, plen, flen, _) = struct.unpack_from("<4sBBHQqIIQQ16s", good)
    longer = struct.pack("<4sBBHQqIIQQ16s", b"DCMF", 1, k, flags, seq, ts, mlen, nbufs, 64, flen, bytes(16))
    with pytest.raises(dc.FrameError, match="shape"):
        backend.framing.decode(longer + good[64:])
    assert backend.framing.decode(good)[0].tolist() == list(range(8))


def test_max_frame_size_is_checked_before_reading_the_body(backend):
    frame = frame_of(backend, np.zeros(1000, np.uint8))
    with pytest.raises(dc.FrameError, match="max_frame_size"):
        backend.framing.decode(frame[:64], max_frame_size=512)
    assert backend.framing.unpack_header(frame[:64])[7] == len(frame)


def test_header_round_trip(backend):
    h = backend.framing.pack_header(2, 1, 2**64 - 1, -5, 10, 0, 0)
    assert len(h) == 64
    assert backend.framing.unpack_header(h + bytes(64)) == (2, 1, 2**64 - 1, -5, 10, 0, 0, 128)


def test_frame_error_is_a_value_error():
    assert issubclass(dc.FrameError, ValueError) and issubclass(dc.FrameError, dc.DataCommsError)
