"""The framing layer in pure Python: the readable reference of the frame format
(docs/frame-format.md) and the fallback when the Cython backend is not built.
Its compiled twin is backend/cython/framing.pyx over csrc/dc_frame.h.

A frame is a 64-byte little-endian header, then an optional JSON meta padded
to 64 bytes, then raw buffers each padded to 64 bytes. ``encode`` returns the
frame as a list of parts for scatter-gather (large buffers are never copied);
``decode`` returns views of the buffer it is given.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import numpy as np

from ...errors import FrameError
from .. import _meta

HEADER_SIZE = 64
VERSION = 1
MAGIC = b"DCMF"
KIND_RAW = 0
KIND_ARRAY = 1
KIND_JSON = 2
KIND_JSON_BUFFERS = 3
FLAG_CONTROL = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 30
MAX_FRAME_SIZE_LIMIT = 1 << 62

_HEADER = struct.Struct("<4sBBHQqIIQQ16s")
_ZEROS = bytes(64)
_RESERVED = bytes(16)
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _align(n: int) -> int:
    return (n + 63) & ~63


def pack_header(kind: int, flags: int, seq: int, timestamp_ns: int, meta_len: int, nbufs: int,
                payload_len: int) -> bytes:
    """The 64 header bytes of a frame with these fields."""
    frame_len = HEADER_SIZE + _align(meta_len) + _align(payload_len)
    try:
        return _HEADER.pack(MAGIC, VERSION, kind, flags, seq, timestamp_ns, meta_len, nbufs, payload_len,
                            frame_len, _RESERVED)
    except struct.error as exc:
        raise FrameError(f"header field out of range: {exc}") from None


def unpack_header(buf: Any, offset: int = 0, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
                  ) -> tuple[int, int, int, int, int, int, int, int]:
    """Validates the header at offset and returns
    (kind, flags, seq, timestamp_ns, meta_len, nbufs, payload_len, frame_len).
    The rest of the frame need not be present yet: compare frame_len with what you hold."""
    if offset < 0 or len(buf) - offset < HEADER_SIZE:
        raise FrameError(f"truncated frame: need {HEADER_SIZE} header bytes, have {max(0, len(buf) - offset)}")
    (magic, version, kind, flags, seq, ts, meta_len, nbufs, payload_len, frame_len,
     reserved) = _HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        raise FrameError(f"not a datacomms frame (magic {bytes(magic)!r})")
    if version != VERSION:
        raise FrameError(f"frame version {version} is not supported (this build reads {VERSION})")
    if kind > KIND_JSON_BUFFERS or flags & ~FLAG_CONTROL:
        raise FrameError(f"unknown frame kind {kind} or flags {flags:#x}")
    if reserved != _RESERVED:
        raise FrameError("reserved header bytes are not zero")
    if frame_len > max_frame_size or payload_len > max_frame_size:
        raise FrameError(f"frame of {max(frame_len, payload_len)} bytes exceeds max_frame_size {max_frame_size}")
    if frame_len != HEADER_SIZE + _align(meta_len) + _align(payload_len):
        raise FrameError("inconsistent frame lengths in header")
    if kind in (KIND_RAW, KIND_ARRAY) and nbufs != 1:
        raise FrameError("inconsistent frame lengths in header")
    if kind == KIND_RAW and meta_len != 0:
        raise FrameError("inconsistent frame lengths in header")
    if kind == KIND_JSON and (nbufs != 0 or payload_len != 0):
        raise FrameError("inconsistent frame lengths in header")
    if kind == KIND_JSON_BUFFERS and not 0 < nbufs <= meta_len:
        raise FrameError("inconsistent frame lengths in header")
    return kind, flags, seq, ts, meta_len, nbufs, payload_len, frame_len


# Where an integer may not fit in 64 bits (20 digits, or 19 after a minus; a time.time_ns() has
# 19 and no minus) and a float may overflow (an exponent of 3 digits): only then is a text checked.
# The text is mapped to its digits ("0"), minus, plus and "e" (a regular expression cost 4 us on a
# small dict here, this 0.5).
_NUMBER_MAP = bytes(48 if 48 <= i <= 57 else i if i in b"-+" else 101 if i in b"eE" else 32 for i in range(256))
_DIGITS_20, _MINUS_19 = b"0" * 20, b"-" + b"0" * 19


def _long_number(text: bytes, exponents: bool) -> bool:
    t = text.translate(_NUMBER_MAP)
    return (_DIGITS_20 in t or _MINUS_19 in t
            or exponents and (b"e000" in t or b"e-000" in t or b"e+000" in t))


def dumps_json(obj: Any) -> bytes:
    # json writes plain JSON types and their subclasses itself, numpy scalars and the like
    # through _meta.json_value, and more than 64-bit integers, which a look at the text finds;
    # what it refuses even so (NaN, keys that are not plain) goes through plain_json, as on the
    # cython backend. Deeper than orjson writes is refused, as there.
    try:
        try:
            out = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                             default=_meta.json_value).encode("utf-8")
            if _long_number(out, False):
                _meta.plain_json(obj)  # raises for an integer beyond 64 bits
        except FrameError:
            raise
        except (TypeError, ValueError):
            out = json.dumps(_meta.plain_json(obj), separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
    except FrameError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise FrameError(f"cannot encode {type(obj).__name__} as JSON: {exc}") from None
    if len(out) > _MAX_DEPTH and _too_deep(out):
        raise FrameError(f"cannot encode {type(obj).__name__} as JSON: {_meta.too_deep()}")
    return out


# A JSON string, to be cut out of a text before its brackets are counted.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(i for i in range(256) if i not in b"[]{}")
_MAX_DEPTH = _meta.JSON_MAX_DEPTH


def _too_deep(text: bytes) -> bool:
    """Whether a JSON text nests arrays and objects deeper than _meta.JSON_MAX_DEPTH
    (exact for valid JSON; cheap unless it has that many brackets at all). The levels are
    summed a megabyte at a time: a peer's meta may be as large as a frame."""
    if text.count(b"[") + text.count(b"{") <= _MAX_DEPTH:
        return False
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), 1 << 20):
        steps = np.frombuffer(brackets, np.uint8, min(1 << 20, len(brackets) - start), start)
        levels = np.cumsum(np.where((steps == 91) | (steps == 123), 1, -1), dtype=np.int64) + depth
        if int(levels.max()) > _MAX_DEPTH:
            return True
        depth = int(levels[-1])
    return False


def _int_or_float(s: str) -> Any:
    # as orjson reads: an integer beyond the 64-bit range becomes a float
    v = int(s)
    return v if -(1 << 63) <= v < (1 << 64) else _finite_float(s)


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"number {s:.40} is out of range")
    return v


def _no_constant(s: str) -> Any:
    raise ValueError(f"{s} is not JSON")


# made once: json.loads with any argument makes a decoder per call (3 us here)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_EXACT = json.JSONDecoder(parse_constant=_no_constant, parse_int=_int_or_float, parse_float=_finite_float)


# An escape in a JSON text (backslashes appear nowhere else).
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _lone_surrogate(text: bytes) -> bool:
    """Whether a valid JSON text escapes a surrogate that is not a high one right before
    a low one: orjson refuses it, json would read it into a str no encoder can write."""
    high_end = -1   # where a high surrogate's escape ended, while its low half is awaited
    for m in _ESCAPE.finditer(text):
        code = int(m.group(1), 16) if m.group(1) else -1
        if high_end >= 0:
            if m.start() != high_end or not 0xDC00 <= code <= 0xDFFF:
                return True
            high_end = -1
        elif 0xD800 <= code <= 0xDBFF:
            high_end = m.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return True
    return high_end >= 0


def loads_json(b: Any) -> Any:
    try:
        # decode explicitly: json.loads(bytes) would guess UTF-16/32 from NUL bytes, where orjson refuses
        raw = bytes(b)
        s = raw.decode("utf-8")
        if len(raw) > _MAX_DEPTH and _too_deep(raw):
            raise _meta.too_deep()
        value = (_EXACT if _long_number(raw, True) else _DECODER).decode(s)
    except (ValueError, RecursionError) as exc:   # FrameError is a ValueError
        raise FrameError(f"bad JSON in frame: {exc}") from None
    if (b"\\ud" in raw or b"\\uD" in raw) and _lone_surrogate(raw):   # a surrogate's escape starts so
        raise FrameError("bad JSON in frame: a string holds a lone surrogate escape (\\ud800-\\udfff)")
    return value


def _bytes_view(obj: Any) -> memoryview:
    m = memoryview(obj)
    if m.format != "B" or m.ndim != 1:
        m = m.cast("B") if m.c_contiguous else memoryview(m.tobytes())
    return m


def _array_bytes(arr: np.ndarray) -> memoryview:
    return memoryview(arr.reshape(-1).view(np.uint8))


def _with_padding(parts: list[Any], n: int) -> None:
    pad = _align(n) - n
    if pad:
        parts.append(_ZEROS[:pad])


def encode(data: Any, seq: int, timestamp_ns: int, flags: int = 0) -> tuple[list[Any], int]:
    """Encodes data as a frame: (parts, frame_len). Parts are bytes-like, to be
    written in order (sendmsg, writev, or copied into a ring slot)."""
    if isinstance(data, _BYTES_LIKE):
        view = _bytes_view(data)
        parts: list[Any] = [pack_header(KIND_RAW, flags, seq, timestamp_ns, 0, 1, view.nbytes), view]
        _with_padding(parts, view.nbytes)
        return parts, HEADER_SIZE + _align(view.nbytes)
    if isinstance(data, np.ndarray):
        arr = _meta.contiguous(data)
        meta = dumps_json(_meta.array_meta(arr))
        head = pack_header(KIND_ARRAY, flags, seq, timestamp_ns, len(meta), 1, arr.nbytes) + meta
        parts = [head + _ZEROS[:_align(len(meta)) - len(meta)], _array_bytes(arr)]
        _with_padding(parts, arr.nbytes)
        return parts, HEADER_SIZE + _align(len(meta)) + _align(arr.nbytes)
    if _meta.has_buffers(data):
        skeleton, table, bufs = _meta.extract_buffers(data)
        meta = dumps_json({"data": skeleton, "buffers": table})
        payload_len = 0
        body: list[Any] = []
        for entry, b in zip(table, bufs):
            payload_len = _align(payload_len)
            body.append(_array_bytes(b) if isinstance(b, np.ndarray) else b)
            _with_padding(body, entry[3])
            payload_len += entry[3]
        head = pack_header(KIND_JSON_BUFFERS, flags, seq, timestamp_ns, len(meta), len(bufs), payload_len)
        parts = [head + meta + _ZEROS[:_align(len(meta)) - len(meta)]] + body
        return parts, HEADER_SIZE + _align(len(meta)) + _align(payload_len)
    meta = dumps_json(data)
    frame = pack_header(KIND_JSON, flags, seq, timestamp_ns, len(meta), 0, 0) + meta
    frame += _ZEROS[:_align(len(meta)) - len(meta)]
    return [frame], len(frame)


def encode_bytes(data: Any, seq: int, timestamp_ns: int, flags: int = 0) -> bytes:
    """The whole frame as one bytes object (copies; for small frames and tests)."""
    parts, _ = encode(data, seq, timestamp_ns, flags)
    return b"".join(parts)


def decode(buf: Any, offset: int = 0, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
           ) -> tuple[Any, int, int, int, int]:
    """Decodes the frame at offset: (data, seq, timestamp_ns, flags, frame_len).
    Arrays and bytes-like results are views of buf (read-only when buf is)."""
    mv = _bytes_view(buf)
    kind, flags, seq, ts, meta_len, nbufs, payload_len, frame_len = unpack_header(mv, offset, max_frame_size)
    if len(mv) - offset < frame_len:
        raise FrameError(f"truncated frame: header says {frame_len} bytes, have {len(mv) - offset}")
    meta_start = offset + HEADER_SIZE
    start = meta_start + _align(meta_len)
    if kind == KIND_RAW:
        return mv[start:start + payload_len], seq, ts, flags, frame_len
    if kind == KIND_ARRAY:
        dt, shape = _meta.array_spec(bytes(mv[meta_start:meta_start + meta_len]), payload_len, loads_json)
        return _meta.view_array(buf if type(buf) is np.ndarray else mv, start, payload_len, dt, shape), seq, ts, flags, \
            frame_len
    meta = loads_json(mv[meta_start:meta_start + meta_len])
    if kind == KIND_JSON:
        return meta, seq, ts, flags, frame_len
    if type(meta) is not dict:
        raise FrameError("frame meta is not a JSON object")
    table = meta.get("buffers")
    if not isinstance(table, list) or len(table) != nbufs:
        raise FrameError(f"buffer table does not list the {nbufs} buffers the header announces")
    data = _meta.insert_buffers(meta.get("data"), table, mv, start, payload_len)
    return data, seq, ts, flags, frame_len
