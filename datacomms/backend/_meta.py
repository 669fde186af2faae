"""Frame meta shared by both backends: dtype descriptions, array checks, and the
table of raw buffers carried beside a JSON document.

Everything here is cold-path Python (it runs once per array, not per byte);
the backends differ in how they pack the header, encode JSON and copy bytes.
The frame format is specified in docs/frame-format.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any

import numpy as np

from ..errors import FrameError

# An entry of the buffer table: [path, dtype descr or None for bytes, shape or None, nbytes].
Path = list  # list[str | int]


_DESCR_CACHE: dict[np.dtype, str] = {}


def dtype_to_json(dt: np.dtype) -> Any:
    """A JSON description of a dtype that round-trips through ``dtype_from_json``."""
    descr = _DESCR_CACHE.get(dt)
    if descr is not None:
        return descr
    if dt.hasobject:
        raise FrameError(f"arrays of dtype {dt} hold Python objects and cannot be sent")
    descr = np.lib.format.dtype_to_descr(dt)
    # plain dtypes only: a structured one's equality ignores details its descr keeps
    if isinstance(descr, str) and dt.fields is None and len(_DESCR_CACHE) < 256:
        _DESCR_CACHE[dt] = descr
    return descr


def _tuplify(descr: Any) -> Any:
    if isinstance(descr, list):
        out = []
        for field in descr:
            if not isinstance(field, list) or not 2 <= len(field) <= 3:
                raise FrameError(f"bad structured dtype field in meta: {field!r}")
            name, sub = field[0], field[1]
            if not isinstance(name, (str, list)):
                raise FrameError(f"bad structured dtype field name in meta: {name!r}")
            item = [tuple(name) if isinstance(name, list) else name, _tuplify(sub)]
            if len(field) == 3:
                item.append(tuple(field[2]) if isinstance(field[2], list) else field[2])
            out.append(tuple(item))
        return out
    return descr


_DTYPE_CACHE: dict[str, np.dtype] = {}


def dtype_from_json(descr: Any) -> np.dtype:
    if isinstance(descr, str):
        dt = _DTYPE_CACHE.get(descr)
        if dt is not None:
            return dt
    try:
        dt = np.lib.format.descr_to_dtype(_tuplify(descr))
    except FrameError:
        raise
    except Exception as exc:  # numpy raises several types for nonsense
        raise FrameError(f"bad dtype in frame meta: {descr!r} ({exc})") from None
    if dt.hasobject:
        raise FrameError(f"dtype {descr!r} holds Python objects; refused")
    if dt.subdtype is not None:  # e.g. "2f8": no array has one, numpy expands it into the shape
        raise FrameError(f"dtype {descr!r} is a subarray dtype; send the shape in 'shape' instead")
    if isinstance(descr, str) and len(_DTYPE_CACHE) < 256:
        _DTYPE_CACHE[descr] = dt
    return dt


# An array frame's meta, as sent, -> (dtype, shape, nbytes): the same few
# metas come again and again (a camera's frames), and a hit skips parsing and
# checking them. Only metas that passed every check are kept.
_ARRAY_META: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def array_spec(meta: bytes, payload_len: int, loads: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an array frame's meta (its raw bytes) gives its
    payload of payload_len bytes, checked as check_shape does; loads parses
    the meta (the backend's JSON decoder)."""
    hit = _ARRAY_META.get(meta)
    if hit is not None and hit[2] == payload_len:
        return hit[0], hit[1]
    doc = loads(meta)
    if type(doc) is not dict:
        raise FrameError("frame meta is not a JSON object")
    dt = dtype_from_json(doc.get("dtype"))
    shape = check_shape(doc.get("shape"), dt, payload_len)
    if len(_ARRAY_META) >= 256:
        _ARRAY_META.clear()
    _ARRAY_META[meta] = (dt, shape, payload_len)
    return dt, shape


def contiguous(arr: np.ndarray) -> np.ndarray:
    """The array itself if it is C-contiguous, else a C-contiguous copy."""
    if arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr)


def array_meta(arr: np.ndarray) -> dict[str, Any]:
    return {"dtype": dtype_to_json(arr.dtype), "shape": list(arr.shape)}


def check_shape(shape: Any, dt: np.dtype, nbytes: int) -> tuple[int, ...]:
    """Validates a shape read from outside against the byte count it must fill."""
    if not isinstance(shape, list) or len(shape) > 64:
        raise FrameError(f"bad shape in frame meta: {shape!r}")
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:
            raise FrameError(f"bad shape in frame meta: {shape!r}")
        count *= d
    if count * dt.itemsize != nbytes:
        raise FrameError(f"shape {shape} of {dt} needs {count * dt.itemsize} bytes, frame has {nbytes}")
    return tuple(shape)


def view_array(buf: Any, offset: int, nbytes: int, dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """An array viewing nbytes of buf at offset (zero-copy; read-only when buf is). A
    contiguous 1-D byte ndarray buf is sliced: a fifth of the cost of np.frombuffer."""
    try:
        if nbytes == 0 or dt.itemsize == 0:
            return np.empty(shape, dt)
        if type(buf) is np.ndarray and buf.ndim == 1 and buf.strides[0] == 1:
            arr = buf[offset:offset + nbytes]
            if dt is not arr.dtype:
                arr = arr.view(dt)
        else:
            arr = np.frombuffer(buf, dt, nbytes // dt.itemsize, offset)
        return arr if len(shape) == 1 else arr.reshape(shape)
    except (ValueError, TypeError, MemoryError) as exc:  # a last line of defence: checks above should catch all
        raise FrameError(f"cannot view {nbytes} bytes as {dt} {shape}: {exc}") from None


# -- JSON values ----------------------------------------------------------------------------------
# What both backends write for values JSON has no type of its own for (docs/frame-format.md):
# the python backend's json module and the cython one's orjson each accept a different set of
# them, so whatever one of them does not take on its fast path goes through plain_json, the
# one rule.

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1   # orjson's range, an int64 or a uint64
# The deepest nesting of arrays and objects a JSON document may have, written or read, on both
# backends: orjson writes no deeper (docs/frame-format.md).
JSON_MAX_DEPTH = 254


def too_deep() -> FrameError:
    return FrameError(f"JSON nested deeper than {JSON_MAX_DEPTH} arrays and objects")


def json_value(o: Any) -> Any:
    """The JSON-typed value a non-JSON scalar is written as, or TypeError (a json/orjson ``default``)."""
    if isinstance(o, np.generic):
        # as orjson's OPT_SERIALIZE_NUMPY writes them, which the cython backend uses
        if isinstance(o, np.datetime64):
            if np.isnat(o):
                raise TypeError("numpy datetime64 NaT has no JSON form")
            # an RFC 3339 string to the microsecond (finer digits are cut off), no zero fraction
            text = str(np.datetime_as_string(o.astype("datetime64[us]")))
            return text[:-7] if text.endswith(".000000") else text
        if isinstance(o, np.timedelta64):  # a timedelta64 is a numpy integer too
            raise TypeError("numpy timedelta64 has no JSON form (send x.astype('int64'))")
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, (np.float16, np.float32)):
            # the shortest digits that give the value back as a float32
            return float(str(np.float32(o)))
        if isinstance(o, np.float64):
            return float(o)
        raise TypeError(f"numpy {type(o).__name__} has no JSON form")
    if isinstance(o, float):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, uuid.UUID):  # orjson writes these natively: the python backend does the same
        return str(o)
    if isinstance(o, (datetime.date, datetime.time)):  # a datetime is a date too
        return _iso(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    if isinstance(o, enum.Enum):
        return o.value
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _iso(o: datetime.date | datetime.time) -> str:
    """An RFC 3339 text of o as orjson writes it: its isoformat, but a UTC offset to the
    nearest minute (its seconds from 30 up round it away from zero, its microseconds are
    left out), and no time of day with a zone."""
    if isinstance(o, datetime.time) and o.tzinfo is not None:
        raise TypeError("a datetime.time with a tzinfo has no JSON form")
    off = o.utcoffset() if isinstance(o, datetime.datetime) else None
    if off is None or not (off.seconds % 60 or off.microseconds):
        return o.isoformat()
    sign, secs = ("-", 86400 - off.seconds) if off.days < 0 and off.seconds else ("+", off.seconds)
    hours, minutes = secs // 3600, secs // 60 % 60
    if secs % 60 >= 30:
        minutes += 1   # as orjson does, even to "+23:60"
    return f"{o.replace(tzinfo=None).isoformat()}{sign}{hours:02d}:{minutes:02d}"


def _json_int(o: int) -> int:
    if not _INT_MIN <= o <= _INT_MAX:
        raise FrameError(f"cannot encode an integer beyond 64 bits as JSON: {str(o)[:40]}")
    return o


def _json_key(k: Any) -> str:
    t = type(k)
    if t is str:
        return k
    if isinstance(k, str):
        return str.__str__(k)
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int):
        return str(_json_int(int(k)))
    if isinstance(k, float):
        return float.__repr__(k) if math.isfinite(k) else "null"
    try:
        v = json_value(k)
    except TypeError as exc:
        raise FrameError(f"cannot encode a dict key of type {type(k).__name__} as JSON: {exc}") from None
    if type(v) not in (str, int, float, bool) and v is not None:
        raise FrameError(f"cannot encode a dict key of type {type(k).__name__} as JSON")
    return _json_key(v)


def plain_json(o: Any) -> Any:
    """o as plain JSON types (str keys, lists, no NaN: None in its place), or FrameError;
    the reference of what both backends write."""
    t = type(o)
    if t is str or t is bool or o is None:
        return o
    if t is float or isinstance(o, float):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, int) and not isinstance(o, bool):
        return _json_int(int(o))
    if isinstance(o, str):
        return str.__str__(o)
    if isinstance(o, dict):
        return {_json_key(k): plain_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain_json(v) for v in o]
    try:
        v = json_value(o)
    except TypeError as exc:
        raise FrameError(f"cannot encode {type(o).__name__} as JSON: {exc}") from None
    return plain_json(v)


def has_buffers(obj: Any, depth: int = 0) -> bool:
    """True when a JSON-like value holds an array or a bytes-like object anywhere inside;
    FrameError for lists and dicts nested deeper than any JSON document may be."""
    t = type(obj)
    if t is float or t is int or t is str or t is bool or obj is None:
        return False
    if isinstance(obj, (dict, list, tuple)):   # subclasses too: JSON writes them as their base
        if depth >= JSON_MAX_DEPTH:
            raise too_deep()
        return any(has_buffers(v, depth + 1) for v in (obj.values() if isinstance(obj, dict) else obj))
    if isinstance(obj, (np.ndarray, bytes, bytearray, memoryview)):
        return True
    if is_dataclass_type(t):   # written as the dict of its fields: so are its buffers
        return has_buffers(json_value(obj), depth)
    return False


def is_dataclass_type(t: type) -> bool:
    """Whether instances of t are dataclass instances (t itself not a metaclass)."""
    return hasattr(t, "__dataclass_fields__") and not issubclass(t, type)


def extract_buffers(obj: Any) -> tuple[Any, list[list[Any]], list[Any]]:
    """Splits a value into a JSON skeleton (buffers replaced by None), the buffer
    table, and the buffers themselves (contiguous, not copied when already so)."""
    table: list[list[Any]] = []
    bufs: list[Any] = []

    def walk(o: Any, path: list[Any]) -> Any:
        if isinstance(o, (dict, list, tuple)) and len(path) >= JSON_MAX_DEPTH:
            raise too_deep()
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                held = len(table)
                out[k] = walk(v, path + [k])
                if len(table) > held and not isinstance(k, str):  # JSON would make it a string: no path
                    raise FrameError(f"a dict key holding an array or bytes must be a string, not {type(k).__name__}")
            return out
        if isinstance(o, (list, tuple)):
            return [walk(v, path + [i]) for i, v in enumerate(o)]
        if isinstance(o, np.ndarray):
            a = contiguous(o)
            table.append([path, dtype_to_json(a.dtype), list(a.shape), a.nbytes])
            bufs.append(a)
            return None
        if isinstance(o, (bytes, bytearray, memoryview)):
            m = memoryview(o)
            if not m.c_contiguous:
                m = memoryview(m.tobytes())
            table.append([path, None, None, m.nbytes])
            bufs.append(m)
            return None
        if is_dataclass_type(type(o)):
            return walk(json_value(o), path)
        return o

    skeleton = walk(obj, [])
    return skeleton, table, bufs


def insert_buffers(skeleton: Any, table: Any, buf: Any, start: int, payload_len: int) -> Any:
    """Puts views of the payload region of buf back where the table says, checking
    every entry read from outside: paths, dtypes, shapes and byte ranges."""
    if not isinstance(table, list):
        raise FrameError("frame meta has no buffer table")
    off = end = 0
    for entry in table:
        if not isinstance(entry, list) or len(entry) != 4:
            raise FrameError(f"bad buffer table entry: {entry!r}")
        path, descr, shape, nbytes = entry
        if type(nbytes) is not int or nbytes < 0 or off + nbytes > payload_len:
            raise FrameError(f"buffer of {nbytes!r} bytes at {off} overruns a payload of {payload_len}")
        if descr is None:
            value: Any = memoryview(buf)[start + off:start + off + nbytes]
        else:
            dt = dtype_from_json(descr)
            value = view_array(buf, start + off, nbytes, dt, check_shape(shape, dt, nbytes))
        skeleton = _set_path(skeleton, path, value)
        end = off + nbytes
        off += (nbytes + 63) & ~63
    if end != payload_len:
        raise FrameError(f"buffers end at {end} but the header says the payload is {payload_len} bytes")
    return skeleton


def _set_path(root: Any, path: Any, value: Any) -> Any:
    if not isinstance(path, list):
        raise FrameError(f"bad buffer path: {path!r}")
    if not path:
        return value
    node = root
    for key in path[:-1]:
        node = node[_checked_key(node, key, path)]
    node[_checked_key(node, path[-1], path)] = value
    return root


def _checked_key(node: Any, key: Any, path: Any) -> Any:
    if type(key) is str and type(node) is dict and key in node:
        return key
    if type(key) is int and type(node) is list and 0 <= key < len(node):
        return key
    raise FrameError(f"buffer path {path!r} does not name a place in the frame's document")
