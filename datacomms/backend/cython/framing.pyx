# cython: language_level=3
"""The framing layer, compiled: the header is packed and validated by
csrc/dc_frame.h, JSON goes through orjson. The readable reference of the same
API is backend/python/framing.py; docs/frame-format.md specifies the format.

Ownership: every frame lives in a buffer owned by Python (bytes, bytearray,
mmap, numpy); C only reads (pointer, length) pairs it is handed, after the
length checks in dc_header_unpack.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset

import numpy as np
import orjson

from ...errors import FrameError
from .. import _meta
from ._csrc cimport (
    DC_OK, DC_ERR_TRUNCATED, DC_ERR_MAGIC, DC_ERR_VERSION, DC_ERR_KIND, DC_ERR_LENGTH,
    DC_ERR_TOO_BIG, DC_ERR_RESERVED, dc_align64, dc_header, dc_header_pack, dc_header_unpack,
    dc_frame_len,
)

HEADER_SIZE = 64
VERSION = 1
KIND_RAW = 0
KIND_ARRAY = 1
KIND_JSON = 2
KIND_JSON_BUFFERS = 3
FLAG_CONTROL = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 30
MAX_FRAME_SIZE_LIMIT = 1 << 62

# Raw payloads up to this size are copied into the header's bytes object: one
# part is cheaper to hand around than three for small messages.
cdef enum:
    INLINE_RAW_MAX = 4096
    MAX_DEPTH = 254   # _meta.JSON_MAX_DEPTH: orjson writes no deeper, and reads up to 1024

cdef object _dumps = orjson.dumps
cdef object _loads = orjson.loads
cdef object _array_spec = _meta.array_spec
# not OPT_NON_STR_KEYS: orjson writes float keys its own way (1e-9, 0.000038536333326653204),
# where the format says Python's repr (1e-09, 3.8536333326653204e-05): plain_json writes them
cdef int _OPTS = orjson.OPT_SERIALIZE_NUMPY
cdef object _json_value = _meta.json_value   # numpy scalars: the same values as the python backend
cdef object _plain_json = _meta.plain_json
cdef object _too_deep = _meta.too_deep
cdef object is_dataclass_type = _meta.is_dataclass_type
cdef bytes _ZEROS = bytes(64)
cdef object _ndarray = np.ndarray
cdef object _frombuffer = np.frombuffer


cdef int check_status(int rc, const dc_header *h, Py_ssize_t have, uint64_t max_frame) except -1:
    if rc == DC_OK:
        return 0
    if rc == DC_ERR_TRUNCATED:
        raise FrameError(f"truncated frame: need {HEADER_SIZE} header bytes, have {max(have, 0)}")
    if rc == DC_ERR_MAGIC:
        raise FrameError("not a datacomms frame (bad magic)")
    if rc == DC_ERR_VERSION:
        raise FrameError(f"frame version is not supported (this build reads {VERSION})")
    if rc == DC_ERR_KIND:
        raise FrameError(f"unknown frame kind {h.kind} or flags {h.flags:#x}")
    if rc == DC_ERR_RESERVED:
        raise FrameError("reserved header bytes are not zero")
    if rc == DC_ERR_TOO_BIG:
        raise FrameError(f"frame of {max(h.frame_len, h.payload_len)} bytes exceeds max_frame_size {max_frame}")
    if rc == DC_ERR_LENGTH:
        raise FrameError("inconsistent frame lengths in header")
    raise FrameError(f"frame rejected (code {rc})")


cdef int read_header(const uint8_t *p, Py_ssize_t have, uint64_t max_frame, dc_header *h) except -1:
    if have < 0:
        have = 0
    return check_status(dc_header_unpack(p, <size_t>have, max_frame, h), h, have, max_frame)


cdef void write_small(uint8_t *o, int kind, int flags, uint64_t seq, int64_t ts, const char *body,
                      Py_ssize_t body_len, uint32_t meta_len, uint32_t nbufs, uint64_t payload_len) noexcept nogil:
    """A whole frame whose only section is body (a raw payload or a JSON meta)
    at o, which holds 64 + align64(body_len) bytes."""
    cdef dc_header h
    h.kind = kind
    h.flags = flags
    h.seq = seq
    h.timestamp_ns = ts
    h.meta_len = meta_len
    h.nbufs = nbufs
    h.payload_len = payload_len
    dc_header_pack(o, &h)
    if body_len:
        memcpy(o + 64, body, body_len)
    memset(o + 64 + body_len, 0, dc_align64(body_len) - body_len)


cdef bytes _head(int kind, int flags, uint64_t seq, int64_t ts, const char *meta, uint32_t meta_len,
                 uint32_t nbufs, uint64_t payload_len, Py_ssize_t inline_payload):
    """Header + meta + padding in one new bytes object; with inline_payload > 0 the
    payload (given as meta) is laid after the header instead, as a raw frame's body."""
    cdef Py_ssize_t body = inline_payload if inline_payload >= 0 else meta_len
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 64 + <Py_ssize_t>dc_align64(body))
    write_small(<uint8_t *>PyBytes_AS_STRING(out), kind, flags, seq, ts, meta, body, meta_len, nbufs,
                payload_len)
    return out


def pack_header(int kind, int flags, uint64_t seq, int64_t timestamp_ns, uint32_t meta_len, uint32_t nbufs,
                uint64_t payload_len):
    """The 64 header bytes of a frame with these fields."""
    cdef dc_header h
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 64)
    if not 0 <= kind <= 255 or not 0 <= flags <= 0xFFFF:
        raise FrameError("header field out of range")
    h.kind = kind
    h.flags = flags
    h.seq = seq
    h.timestamp_ns = timestamp_ns
    h.meta_len = meta_len
    h.nbufs = nbufs
    h.payload_len = payload_len
    dc_header_pack(<uint8_t *>PyBytes_AS_STRING(out), &h)
    return out


def unpack_header(buf, Py_ssize_t offset=0, uint64_t max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """Validates the header at offset and returns
    (kind, flags, seq, timestamp_ns, meta_len, nbufs, payload_len, frame_len)."""
    cdef Py_buffer view
    cdef dc_header h
    if type(buf) is bytes:  # the common case: no buffer acquisition needed
        _header_at(PyBytes_AS_STRING(buf), len(<bytes>buf), offset, max_frame_size, &h)
    else:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            _header_at(<const char *>view.buf, view.len, offset, max_frame_size, &h)
        finally:
            PyBuffer_Release(&view)
    return (h.kind, h.flags, h.seq, h.timestamp_ns, h.meta_len, h.nbufs, h.payload_len, h.frame_len)


cdef int _header_at(const char *base, Py_ssize_t length, Py_ssize_t offset, uint64_t max_frame,
                    dc_header *h) except -1:
    if offset < 0 or offset > length:
        raise FrameError(f"offset {offset} outside a buffer of {length} bytes")
    return read_header(<const uint8_t *>base + offset, length - offset, max_frame, h)


cpdef bytes dumps_json(object obj):
    # Plain orjson first: the options cost about 40% more on a small dict, and
    # only numpy scalars or float subclasses need them. numpy
    # scalars are orjson's own (OPT_SERIALIZE_NUMPY: five times faster than a
    # default called for each; _meta.json_value writes them the same way). What
    # orjson refuses even so (an integer beyond 64 bits, a key that is not a string)
    # goes through _meta.plain_json, the rule the python backend follows too.
    try:
        return _dumps(obj)
    except TypeError:
        pass
    try:
        return _dumps(obj, default=_json_value, option=_OPTS)
    except TypeError:
        pass
    try:
        return _dumps(_plain_json(obj))
    except FrameError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        if str(exc) == "Recursion limit reached":   # orjson's words for deeper than MAX_DEPTH
            exc = _too_deep()
        raise FrameError(f"cannot encode {type(obj).__name__} as JSON: {exc}") from None


cdef int check_depth(const unsigned char *p, Py_ssize_t n) except -1:
    """FrameError when the JSON text at p nests arrays and objects deeper than MAX_DEPTH
    (exact for valid JSON; a count of brackets first, the scan only past it)."""
    cdef Py_ssize_t i, opens = 0
    cdef int depth = 0
    cdef bint in_string = False
    cdef unsigned char c
    for i in range(n):
        opens += p[i] == b'[' or p[i] == b'{'
    if opens <= MAX_DEPTH:
        return 0
    i = 0
    while i < n:
        c = p[i]
        if in_string:
            if c == b'\\':
                i += 1
            elif c == b'"':
                in_string = False
        elif c == b'"':
            in_string = True
        elif c == b'[' or c == b'{':
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep()
        elif c == b']' or c == b'}':
            depth -= 1
        i += 1
    return 0


cpdef object loads_json(object b):
    # shorter than MAX_DEPTH, a text cannot be too deep: a level takes a byte
    if type(b) is not bytes or PyBytes_GET_SIZE(b) > MAX_DEPTH:
        if type(b) is not bytes:
            b = bytes(b)
        if PyBytes_GET_SIZE(b) > MAX_DEPTH:
            try:
                check_depth(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
            except FrameError as exc:
                raise FrameError(f"bad JSON in frame: {exc}") from None
    try:
        return _loads(b)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"bad JSON in frame: {exc}") from None


cdef bint has_buffers(object o, int depth=0) except -1:
    # FrameError past the depth no JSON document may have: C recursion stays bounded
    cdef type t = type(o)
    if t is float or t is int or t is str or t is bool or o is None:
        return False
    if t is dict or (t is not list and t is not tuple and isinstance(o, dict)):   # an OrderedDict too
        if depth >= MAX_DEPTH:
            raise _too_deep()
        for v in (<dict>o).values():
            if has_buffers(v, depth + 1):
                return True
        return False
    if t is list or t is tuple or isinstance(o, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise _too_deep()
        for v in o:
            if has_buffers(v, depth + 1):
                return True
        return False
    if isinstance(o, (_ndarray, bytes, bytearray, memoryview)):
        return True
    if _dataclass(t):   # orjson would write its arrays as lists: they go as buffers instead
        return has_buffers(_json_value(o), depth)
    return False


cdef dict _DATACLASS = {}   # type -> whether it is a dataclass: a lookup costs a tenth of the check


cdef bint _dataclass(type t) except -1:
    cdef object known = _DATACLASS.get(t)
    if known is None:
        known = bool(is_dataclass_type(t))
        if len(_DATACLASS) < 256:
            _DATACLASS[t] = known
    return known is True


cdef object _byte_view(object obj):
    cdef object m = memoryview(obj)
    if m.format != "B" or m.ndim != 1:
        m = m.cast("B") if m.c_contiguous else memoryview(m.tobytes())
    return m


cdef inline void _pad(list parts, Py_ssize_t n):
    cdef Py_ssize_t pad = <Py_ssize_t>dc_align64(n) - n
    if pad:
        parts.append(_ZEROS[:pad])


cpdef tuple encode(object data, uint64_t seq, int64_t timestamp_ns, int flags=0):
    """Encodes data as a frame: (parts, frame_len). Parts are bytes-like, to be
    written in order; large buffers are referenced, never copied."""
    cdef type t = type(data)
    cdef bytes meta
    cdef Py_ssize_t n
    cdef uint64_t payload_len
    cdef list parts
    if t is dict or t is list or t is str or t is float or t is int:
        if not has_buffers(data):
            meta = dumps_json(data)
            head = _head(2, flags, seq, timestamp_ns, meta, len(meta), 0, 0, -1)
            return [head], len(head)
    if t is bytes:
        n = len(<bytes>data)
        if n <= INLINE_RAW_MAX:
            head = _head(0, flags, seq, timestamp_ns, data, 0, 1, n, n)
            return [head], len(head)
        parts = [_head(0, flags, seq, timestamp_ns, NULL, 0, 1, n, 0), data]
        _pad(parts, n)
        return parts, 64 + <Py_ssize_t>dc_align64(n)
    if isinstance(data, (bytearray, memoryview)):
        view = _byte_view(data)
        n = view.nbytes
        parts = [_head(0, flags, seq, timestamp_ns, NULL, 0, 1, n, 0), view]
        _pad(parts, n)
        return parts, 64 + <Py_ssize_t>dc_align64(n)
    if isinstance(data, _ndarray):
        arr = _meta.contiguous(data)
        meta = dumps_json(_meta.array_meta(arr))
        n = arr.nbytes
        parts = [_head(1, flags, seq, timestamp_ns, meta, len(meta), 1, n, -1),
                 memoryview(arr.reshape(-1).view(np.uint8))]
        _pad(parts, n)
        return parts, 64 + <Py_ssize_t>dc_align64(len(meta)) + <Py_ssize_t>dc_align64(n)
    if not has_buffers(data):
        meta = dumps_json(data)
        head = _head(2, flags, seq, timestamp_ns, meta, len(meta), 0, 0, -1)
        return [head], len(head)
    skeleton, table, bufs = _meta.extract_buffers(data)
    meta = dumps_json({"data": skeleton, "buffers": table})
    payload_len = 0
    parts = [None]
    for entry, b in zip(table, bufs):
        payload_len = dc_align64(payload_len)
        parts.append(memoryview(b.reshape(-1).view(np.uint8)) if isinstance(b, _ndarray) else b)
        _pad(parts, entry[3])
        payload_len += <uint64_t>entry[3]
    parts[0] = _head(3, flags, seq, timestamp_ns, meta, len(meta), len(bufs), payload_len, -1)
    return parts, <Py_ssize_t>dc_frame_len(len(meta), payload_len)


def encode_bytes(data, uint64_t seq, int64_t timestamp_ns, int flags=0):
    """The whole frame as one bytes object (copies; for small frames and tests)."""
    cdef bytes meta
    if type(data) is dict and not has_buffers(data):  # the joint-state case, without the parts list
        meta = dumps_json(data)
        return _head(2, flags, seq, timestamp_ns, meta, len(meta), 0, 0, -1)
    parts, _ = encode(data, seq, timestamp_ns, flags)
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


cdef object _read_frame(const char *base, Py_ssize_t length, Py_ssize_t offset, uint64_t max_frame,
                        dc_header *h):
    """Validates the header and the frame's extent; returns the parsed meta (None for raw)."""
    _header_at(base, length, offset, max_frame, h)
    if h.frame_len > <uint64_t>(length - offset):
        raise FrameError(f"truncated frame: header says {h.frame_len} bytes, have {length - offset}")
    if h.kind == 0:
        return None
    meta = PyBytes_FromStringAndSize(base + offset + 64, h.meta_len)
    return meta if h.kind == 1 else loads_json(meta)   # an array's meta: see _meta.array_spec


def decode(buf, Py_ssize_t offset=0, uint64_t max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """Decodes the frame at offset: (data, seq, timestamp_ns, flags, frame_len).
    Arrays and bytes-like results are views of buf (read-only when buf is)."""
    cdef Py_buffer view
    cdef dc_header h
    cdef object meta = None
    cdef Py_ssize_t start
    if type(buf) is bytes:  # the common case: no buffer acquisition needed
        meta = _read_frame(PyBytes_AS_STRING(buf), len(<bytes>buf), offset, max_frame_size, &h)
    else:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            meta = _read_frame(<const char *>view.buf, view.len, offset, max_frame_size, &h)
        finally:
            PyBuffer_Release(&view)
    if h.kind == 2:
        return meta, h.seq, h.timestamp_ns, h.flags, h.frame_len
    start = offset + 64 + <Py_ssize_t>dc_align64(h.meta_len)
    if h.kind == 1:
        dt, shape = _array_spec(meta, h.payload_len, loads_json)
        # a byte ndarray (an shm ring's) is sliced as it is: no memoryview in between
        data = _meta.view_array(buf if type(buf) is _ndarray else _byte_view(buf), start, h.payload_len, dt, shape)
        return data, h.seq, h.timestamp_ns, h.flags, h.frame_len
    mv = _byte_view(buf)
    if h.kind == 0:
        return mv[start:start + <Py_ssize_t>h.payload_len], h.seq, h.timestamp_ns, h.flags, h.frame_len
    if type(meta) is not dict:
        raise FrameError("frame meta is not a JSON object")
    table = meta.get("buffers")
    if not isinstance(table, list) or len(table) != h.nbufs:
        raise FrameError(f"buffer table does not list the {h.nbufs} buffers the header announces")
    data = _meta.insert_buffers(meta.get("data"), table, mv, start, h.payload_len)
    return data, h.seq, h.timestamp_ns, h.flags, h.frame_len
