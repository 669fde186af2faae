"""The datacomms HDF5 layout (docs/files.md): which datasets a recording holds,
how a message becomes a row and a row becomes a message again, and how the
"open for write" flags a killed writer leaves in the superblock are cleared.

Root group attributes: ``datacomms_layout`` (format version, 1) and
``datacomms_kind``, one of

- ``array``:   ``/data`` is (N, *shape) of the first message's dtype;
- ``columns``: ``/data/<key>`` is one (N,) dataset per key of a dict of numbers,
  key order in the ``datacomms_columns`` attribute (a JSON list);
- ``frames``:  ``/data`` is (N,) variable-length uint8, each a datacomms frame.

``/seq`` and ``/timestamp_ns`` are (N,) int64 in every kind.

``datacomms_seq_last`` (1), when present, promises that the writer makes every
other dataset's rows durable before it flushes the ``/seq`` that counts them
(see Writer.flush), so a follower that sees seq at length n may read n rows of
every dataset without refreshing it (see Reader).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import h5py
import numpy as np

from ..errors import DataCommsError, FrameError

LAYOUT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KINDS = ("array", "columns", "frames")
SEQ_LAST = "datacomms_seq_last"
_VLEN_U8 = h5py.vlen_dtype(np.uint8)
_CHUNK_BYTES = 1 << 20
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# the smallest int that float() cannot take (it would round to 2**1024)
_FLOAT_INT_LIMIT = (1 << 1024) - (1 << 970)


def is_hdf5(path: str) -> bool | None:
    """True/False from the file signature, None when too short to tell (being created)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):   # opening a FIFO would wait for a writer
        raise not_ours(path, "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        return None
    return head == HDF5_SIGNATURE


def stored_end(path: str) -> int | None:
    """The end of file a version 2 or 3 superblock records (HDF5 checks a file's size
    against it, except when reading in SWMR mode), or None for other superblocks."""
    with open(path, "rb") as f:
        sb = f.read(48)
    if len(sb) < 12 or sb[:8] != HDF5_SIGNATURE or sb[8] not in (2, 3) or sb[9] not in (2, 4, 8):
        return None
    o = sb[9]
    if len(sb) < 12 + 3 * o:
        return None
    # signature, version, sizes of offsets and lengths, flags; then base, extension and end addresses
    return int.from_bytes(sb[12:12 + o], "little") + int.from_bytes(sb[12 + 2 * o:12 + 3 * o], "little")


def not_ours(path: str, why: str) -> FrameError:
    return FrameError(f"{path} is not a datacomms HDF5 recording ({why})")


def choose_kind(data: Any) -> str:
    """The layout the first message of a recording asks for."""
    if _fits_array(data) and data.dtype.kind in "biufc":
        return "array"
    if _fits_columns(data):
        return "columns"
    return "frames"


def _fits_array(data: Any) -> bool:
    # HDF5 chunks have no zero-length side, so an array layout needs rows of at least one element
    return isinstance(data, np.ndarray) and data.size > 0 and not data.dtype.hasobject


def _fits_columns(data: Any) -> bool:
    return type(data) is dict and bool(data) and all(_column_name_ok(k) and _column_dtype(v) is not None
                                                     for k, v in data.items())


def _what(data: Any) -> str:
    if isinstance(data, np.ndarray):
        return f"a {data.dtype} array of shape {data.shape}"
    if type(data) is dict:
        return f"a dict with keys {list(data)[:12]}"
    return f"a {type(data).__name__}"


def _column_name_ok(k: Any) -> bool:
    return type(k) is str and k not in ("", ".", "..") and "/" not in k


def _column_dtype(v: Any) -> np.dtype | None:
    t = type(v)
    if t is float:
        return np.dtype(np.float64)
    if t is bool:
        return np.dtype(np.bool_)
    if t is int:
        return np.dtype(np.int64) if _INT64_MIN <= v <= _INT64_MAX else None
    if isinstance(v, (np.bool_, np.integer, np.floating)):
        return np.dtype(type(v))
    return None


def _chunk_rows(row_nbytes: int) -> int:
    return max(1, min(4096, _CHUNK_BYTES // max(1, row_nbytes)))


def _rows_of(f: h5py.File, name: str, path: str, integers: bool = False, ndim: int = 0) -> h5py.Dataset:
    """Dataset name of a recording: chunked, one row per message (and 1-D integers or
    ndim dimensions when asked); FrameError otherwise."""
    d = f.get(name)
    if (not isinstance(d, h5py.Dataset) or d.chunks is None or d.ndim < 1 or (ndim and d.ndim != ndim)
            or (integers and (d.ndim != 1 or d.dtype.kind not in "iu"))):
        raise not_ours(path, f"/{name} is not a dataset of rows")
    return d


class Layout:
    """The datasets of one recording, bound to an open h5py file."""

    def __init__(self, f: h5py.File, path: str) -> None:
        try:
            self._bind(f, path)
        except (KeyError, RuntimeError) as exc:   # what h5py raises for damaged metadata
            raise not_ours(path, f"HDF5 cannot read it: {exc}") from None

    def _bind(self, f: h5py.File, path: str) -> None:
        attrs = f.attrs
        if "datacomms_layout" not in attrs:
            raise not_ours(path, "no datacomms_layout attribute on its root group")
        version = attrs["datacomms_layout"]
        if not isinstance(version, (int, np.integer)) or version != LAYOUT_VERSION:
            raise not_ours(path, f"layout version {version!r}; this build reads {LAYOUT_VERSION}")
        kind = attrs.get("datacomms_kind")
        self.kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if self.kind not in KINDS or "seq" not in f or "timestamp_ns" not in f or "data" not in f:
            raise not_ours(path, f"kind {self.kind!r} or its datasets are missing")
        self.seq: h5py.Dataset = _rows_of(f, "seq", path, integers=True)
        self.ts: h5py.Dataset = _rows_of(f, "timestamp_ns", path, integers=True)
        self.columns: list[str] = []
        if self.kind == "columns":
            try:
                self.columns = json.loads(attrs["datacomms_columns"])
            except (KeyError, TypeError, ValueError):
                raise not_ours(path, "its datacomms_columns attribute is missing or not JSON") from None
            if type(self.columns) is not list or not all(_column_name_ok(k) for k in self.columns):
                raise not_ours(path, "its datacomms_columns attribute is not a list of names")
            self.data: Any = {k: _rows_of(f, f"data/{k}", path, ndim=1) for k in self.columns}
            self.datasets = list(self.data.values())
        else:
            self.data = _rows_of(f, "data", path)
            self.datasets = [self.data]
        # written and flushed in this order, seq last: a follower that sees a seq row finds its data
        self.all = self.datasets + [self.ts, self.seq]
        self.seq_last = int(attrs.get(SEQ_LAST, 0)) == 1

    @staticmethod
    def create(f: h5py.File, kind: str, first: Any) -> None:
        """Creates the datasets for a recording whose first message is first; FrameError
        when first does not fit the layout."""
        if kind == "array" and not _fits_array(first):
            raise FrameError(f"layout 'array' records numpy arrays of at least one element; got {_what(first)}")
        if kind == "columns" and not _fits_columns(first):
            raise FrameError(f"layout 'columns' records dicts of numbers whose keys are names (no '/'); "
                             f"got {_what(first)}")
        f.attrs["datacomms_layout"] = LAYOUT_VERSION
        f.attrs["datacomms_kind"] = kind
        f.attrs[SEQ_LAST] = 1
        for name in ("seq", "timestamp_ns"):
            f.create_dataset(name, (0,), np.int64, maxshape=(None,), chunks=(4096,))
        if kind == "array":
            shape = first.shape
            f.create_dataset("data", (0, *shape), first.dtype, maxshape=(None, *shape),
                             chunks=(_chunk_rows(first.nbytes), *shape))
        elif kind == "columns":
            f.attrs["datacomms_columns"] = json.dumps(list(first))
            g = f.create_group("data")
            for k, v in first.items():
                g.create_dataset(k, (0,), _column_dtype(v), maxshape=(None,), chunks=(4096,))
        elif kind == "frames":
            f.create_dataset("data", (0,), _VLEN_U8, maxshape=(None,), chunks=(256,))
        else:
            raise DataCommsError(f"unknown hdf5 layout {kind!r}; choose auto, {', '.join(KINDS)}")

    def lengths(self) -> int:
        return min(d.shape[0] for d in self.all)

    def refresh(self) -> int:
        """The length of seq as a SWMR reader sees it now: the cheap look (one
        dataset of twelve in the joint-state case) that tells whether rows came."""
        self.seq.refresh()
        return self.seq.shape[0]

    def refresh_rest(self) -> int:
        """After refresh(): refreshes the other datasets too; the rows every one of them
        holds (a flush in progress may have extended some datasets and not others)."""
        for d in self.all:
            if d is not self.seq:
                d.refresh()
        return self.lengths()

    def refresh_all(self) -> int:
        self.refresh()
        return self.refresh_rest()


class Stage:
    """Rows waiting to be written, kept columnar so one write covers many messages."""

    def __init__(self, layout: Layout, backend: Any) -> None:
        self.layout = layout
        self.kind = layout.kind
        self.framing = backend.framing
        self.seqs: list[int] = []
        self.ts: list[int] = []
        if self.kind == "columns":
            self.keys = layout.columns
            self.nkeys = len(self.keys)
            self.dtypes = [d.dtype for d in layout.datasets]
            self.cols: list[list[Any]] = [[] for _ in self.keys]
            self.checks = [_checker(dt) for dt in self.dtypes]
            self.all_float = all(dt.kind == "f" for dt in self.dtypes)
            self.key_tuple = tuple(self.keys)
            self.fill_columns = backend.columns.fill_columns
        elif self.kind == "array":
            ds = layout.data
            self.shape, self.dtype = ds.shape[1:], ds.dtype
            row = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
            self.limit = _chunk_rows(row)
            self.block = np.empty((self.limit, *self.shape), self.dtype) if self.limit > 1 else None
            self.direct: np.ndarray | None = None
        else:
            self.frames: list[np.ndarray] = []
            self.nbytes = 0
        self.limit = getattr(self, "limit", 4096)

    def __len__(self) -> int:
        return len(self.seqs)

    def full(self) -> bool:
        if self.kind == "frames":
            return len(self.seqs) >= self.limit or self.nbytes >= _CHUNK_BYTES * 4
        return len(self.seqs) >= self.limit

    def add(self, data: Any, seq: int, ts: int) -> None:
        """Stages one message; raises FrameError (staging nothing) when it does not fit the layout."""
        if self.kind == "columns":
            if type(data) is not dict or len(data) != self.nkeys:
                raise self._misfit(data)
            try:
                values = [data[k] for k in self.keys]
            except (KeyError, TypeError):
                raise self._misfit(data) from None
            for k, v, dt, ok in zip(self.keys, values, self.dtypes, self.checks):
                if not ok(v):
                    raise FrameError(f"column {k!r} of this recording holds {dt}, which cannot take {v!r:.40}")
            for col, v in zip(self.cols, values):
                col.append(v)
        elif self.kind == "array":
            if type(data) is not np.ndarray or data.shape != self.shape or data.dtype != self.dtype:
                raise self._misfit(data)
            if self.block is None:
                self.direct = data  # one row fills a chunk: written from the caller's array, no copy
            else:
                self.block[len(self.seqs)] = data
        else:
            frame = self.framing.encode_bytes(data, seq, ts)
            self.frames.append(np.frombuffer(frame, np.uint8))
            self.nbytes += len(frame)
        self.seqs.append(seq)
        self.ts.append(ts)

    def _misfit(self, data: Any) -> FrameError:
        if self.kind == "columns":
            want = f"a dict of numbers with keys {self.keys}"
        else:
            want = f"a {self.dtype} array of shape {self.shape}"
        return FrameError(f"this recording's layout is {self.kind!r} and takes {want}; got {_what(data)}. "
                          f"Record mixed data with Publisher(url, layout='frames')")

    def _not_dicts(self) -> FrameError:
        return FrameError(f"send_many to a 'columns' recording takes dicts with keys {self.keys}")

    def batch(self, items: list[Any], seq0: int, ts: int) -> list[np.ndarray]:
        """A block of columns for many messages at once, validated as a whole."""
        n = len(items)
        if self.kind == "columns":
            if self.all_float:  # the joint-state case: one compiled pass over the batch
                mat = np.empty((self.nkeys, n))
                try:
                    self.fill_columns(items, self.key_tuple, mat)
                except TypeError:
                    raise self._not_dicts() from None
                except KeyError as exc:
                    raise FrameError(f"send_many: an item lacks the key {exc.args[0]!r}") from None
                except ValueError:
                    raise FrameError(f"send_many: the columns {self.keys} take one number each") from None
                # each row of mat is one column, contiguous (a float32 column is cast by the Writer)
                return [*mat, np.full(n, ts, np.int64), np.arange(seq0, seq0 + n, dtype=np.int64)]
            if set(map(type, items)) != {dict} or set(map(len, items)) != {self.nkeys}:
                raise self._not_dicts()
            block = []
            for k, dt in zip(self.keys, self.dtypes):
                try:
                    col = np.asarray([d[k] for d in items])
                except KeyError:
                    raise FrameError(f"send_many: an item lacks the key {k!r}") from None
                if col.dtype.kind not in "biuf" or not np.can_cast(col.dtype, dt, "same_kind"):
                    raise FrameError(f"send_many: column {k!r} of {dt} got values of {col.dtype}")
                if dt.kind in "iu" and col.size and not _in_range(col, dt):
                    raise FrameError(f"send_many: column {k!r} of {dt} got values outside its range")
                with np.errstate(over="ignore"):  # an infinity, see Stage.take
                    block.append(col.astype(dt, copy=False))
        elif self.kind == "array":
            for a in items:
                if type(a) is not np.ndarray or a.shape != self.shape or a.dtype != self.dtype:
                    raise self._misfit(a)
            block = [np.stack(items)]
        else:
            frames = np.empty(n, dtype=_VLEN_U8)
            for i, d in enumerate(items):
                frames[i] = np.frombuffer(self.framing.encode_bytes(d, seq0 + i, ts), np.uint8)
            block = [frames]
        block.append(np.full(n, ts, np.int64))
        block.append(np.arange(seq0, seq0 + n, dtype=np.int64))
        return block

    def take(self) -> list[np.ndarray]:
        """The staged rows as one array per dataset (Layout.all order); empties the stage."""
        n = len(self.seqs)
        if self.kind == "columns":
            # A float32 column stores what it cannot hold as an infinity (docs/files.md), without
            # numpy's RuntimeWarning: under -W error that would fail this and every later flush.
            with np.errstate(over="ignore"):
                block = [np.asarray(col, dt) for col, dt in zip(self.cols, self.dtypes)]
            self.cols = [[] for _ in self.keys]
        elif self.kind == "array":
            if self.block is None:
                block = [self.direct[None]]
                self.direct = None
            else:
                block = [self.block[:n]]  # written before the stage is reused, so no copy needed
        else:
            frames = np.empty(n, dtype=_VLEN_U8)
            for i, fr in enumerate(self.frames):  # item by item: equal lengths must not become 2-D
                frames[i] = fr
            block = [frames]
            self.frames, self.nbytes = [], 0
        block.append(np.asarray(self.ts, np.int64))
        block.append(np.asarray(self.seqs, np.int64))
        self.seqs, self.ts = [], []
        return block


def _in_range(col: np.ndarray, dt: np.dtype) -> bool:
    info = np.iinfo(dt)
    return int(info.min) <= int(col.min()) and int(col.max()) <= int(info.max)


def _checker(dt: np.dtype) -> Any:
    # A value is checked against its column's dtype when it is staged: one that the
    # flush could not convert would fail every later flush, with its seq used up.
    if dt.kind == "f":
        return lambda v: (type(v) is float or isinstance(v, (np.floating, np.integer))
                          or (type(v) is int and -_FLOAT_INT_LIMIT < v < _FLOAT_INT_LIMIT))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = int(info.min), int(info.max)
        return lambda v: (type(v) is int or isinstance(v, np.integer)) and lo <= int(v) <= hi
    return lambda v: type(v) is bool or isinstance(v, np.bool_)


class _LowLevel:
    """What Writer and Reader make once for h5py's low-level calls: a memory type
    per dataset (h5py derives one from the array on every call otherwise, which
    costs more than moving 1,000 floats; None keeps h5py's choice for
    variable-length data), and one file and one memory dataspace per row shape,
    reset in place rather than rebuilt for every dataset."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dsets = layout.all
        self.dtypes = [ds.dtype for ds in self.dsets]
        self.rests = [tuple(ds.shape[1:]) for ds in self.dsets]
        self.mtypes = [None if dt.kind == "O" else h5py.h5t.py_create(dt) for dt in self.dtypes]
        self.fspaces = {rest: h5py.h5s.create_simple((0, *rest), (h5py.h5s.UNLIMITED, *rest))
                        for rest in set(self.rests)}
        self.mspaces: dict[tuple[int, ...], Any] = {}

    def _spaces(self, a: int, b: int) -> dict[tuple[int, ...], tuple[Any, Any]]:
        """(memory space, file space) selecting rows [a, b) of a dataset b rows long, per row shape."""
        n = b - a
        spaces = {}
        for rest, fs in self.fspaces.items():
            fs.set_extent_simple((b, *rest), (h5py.h5s.UNLIMITED, *rest))
            fs.select_hyperslab((a,) + (0,) * len(rest), (n, *rest))
            shape = (n, *rest)
            ms = self.mspaces.get(shape)
            if ms is None:
                if len(self.mspaces) > 64:
                    self.mspaces.clear()
                ms = self.mspaces[shape] = h5py.h5s.create_simple(shape)
            spaces[rest] = (ms, fs)
        return spaces


class Writer(_LowLevel):
    """Appends blocks (one array per dataset, Layout.all order) through h5py's
    low-level calls. High-level resize and slice assignment cost three times as
    much, and turn equal-length byte arrays into a 2-D array that they refuse."""

    def flush(self, f: h5py.File) -> None:
        """Flushes every dataset but seq (its chunks and its object header with the new
        length), then the file, so seq's new length reaches the file last: the promise
        the ``datacomms_seq_last`` attribute makes to followers."""
        for ds in self.dsets[:-1]:
            ds.id.flush()
        f.flush()

    def write(self, old: int, block: list[np.ndarray]) -> int:
        """Appends block at row old; returns the new length. Nothing is flushed."""
        new = old + len(block[-1])
        spaces = self._spaces(old, new)
        for ds, dt, rest, mt, arr in zip(self.dsets, self.dtypes, self.rests, self.mtypes, block):
            did = ds.id
            did.set_extent((new, *rest))
            if arr.dtype != dt:
                with np.errstate(over="ignore"):  # an infinity, see Stage.take
                    arr = arr.astype(dt)
            ms, fs = spaces[rest]
            did.write(ms, fs, np.ascontiguousarray(arr), mtype=mt)
        return new


class Reader(_LowLevel):
    """Reads rows [a, b) of every dataset, each in one low-level call (the reading
    twin of Writer); variable-length frames through h5py's high-level slicing.

    A SWMR reader learns a dataset's new length only from a refresh, which costs
    about as much as the read itself, twelve times over in the joint-state case.
    When the writer flushes seq last (``Layout.seq_last``) and the reader keeps
    no chunk cache, a fixed-size dataset is refreshed only when rows reach past
    the chunks it held at its last refresh: those chunks are in the file at
    addresses that never change (unfiltered chunks are rewritten in place), so
    rows that seq counts are read from them directly. Chunks that held rows seq
    counted at that refresh are also never cut back by a restarted writer, which
    trims only rows past the shortest dataset, i.e. past seq."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.lazy = layout.seq_last and layout.kind != "frames"
        self.chunk_rows = [ds.chunks[0] for ds in self.dsets]
        self.trusted = [0] * len(self.dsets)   # rows readable without a refresh, per dataset
        # bytes a row takes in memory: known for fixed-size rows; for frames, measured by each
        # read (None until the first), so that a read can be kept to a budget (rows_within)
        fixed = [dt.itemsize * int(np.prod(rest, dtype=np.int64)) for dt, rest in zip(self.dtypes, self.rests)
                 if dt.kind != "O"]
        self.row_nbytes: int | None = sum(fixed) if layout.kind != "frames" else None

    def rows_within(self, budget: int, most: int) -> int:
        """How many rows (1 to most) one read may take to hold about budget bytes."""
        if self.row_nbytes is None:
            return 1
        return max(1, min(most, budget // max(1, self.row_nbytes)))

    def _held(self, i: int, b: int) -> bool:
        """Refreshes dataset i; whether it holds row b-1 (and how far it may be trusted)."""
        ds = self.dsets[i]
        ds.refresh()
        held = min(ds.shape[0], self.layout.seq.shape[0])
        c = self.chunk_rows[i]
        self.trusted[i] = -(-held // c) * c
        return held >= b

    def read(self, a: int, b: int) -> list[np.ndarray] | None:
        """One array per dataset (Layout.all order), or None when some dataset does not
        hold row b-1 yet; b must not exceed the length of seq at its last refresh."""
        if self.lazy:
            trusted = self.trusted
            for i in range(len(trusted) - 1):  # seq itself is refreshed by every poll
                if b > trusted[i] and not self._held(i, b):
                    return None
        spaces = self._spaces(a, b)
        out = []
        for ds, dt, rest, mt in zip(self.dsets, self.dtypes, self.rests, self.mtypes):
            if mt is None:
                frames = ds[a:b]
                # the largest frame of this read stands for the next ones (16: seq and timestamp)
                self.row_nbytes = max(fr.nbytes for fr in frames) + 16 if len(frames) else self.row_nbytes
                out.append(frames)
            else:
                arr = np.empty((b - a, *rest), dt)
                ms, fs = spaces[rest]
                ds.id.read(ms, fs, arr, mtype=mt)
                out.append(arr)
        return out


def read_rows(reader: Reader, a: int, b: int, framing: Any) -> list[tuple[Any, int, int]] | None:
    """Rows [a, b) as (data, seq, timestamp_ns) messages; None when not all are readable yet."""
    layout = reader.layout
    block = reader.read(a, b)
    if block is None:
        return None
    *datas, ts, seqs = block
    if layout.kind == "columns":
        cols = [c.tolist() for c in datas]
        keys = layout.columns
        data: Any = [dict(zip(keys, row)) for row in zip(*cols)]
    elif layout.kind == "array":
        data = list(datas[0])
    else:
        data = []
        for fr in datas[0]:
            try:
                data.append(framing.decode(fr)[0])
            except FrameError as exc:   # a damaged row: reported when its turn comes, not for its neighbours
                data.append(BadRow(exc))
    return list(zip(data, seqs.tolist(), ts.tolist()))


class BadRow:
    """Stands for a frame that does not decode, among the rows read with it."""

    def __init__(self, error: FrameError) -> None:
        self.error = error


# The superblock (versions 2 and 3) of a file a SWMR writer had open carries
# "open for write" flags; a writer killed before closing leaves them set, and
# HDF5 then refuses to open the file except for SWMR reading. Clearing them is
# what the h5clear tool does; here it is done in place, checksum included.

def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 hashlittle, the checksum of HDF5 metadata."""
    m = 0xFFFFFFFF
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= _rot(c, 4); c = (c + b) & m    # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 6); a = (a + c) & m    # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 8); b = (b + a) & m    # noqa: E702
        a = (a - c) & m; a ^= _rot(c, 16); c = (c + b) & m   # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 19); a = (a + c) & m   # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 4); b = (b + a) & m    # noqa: E702
        i += 12
    if n == i:
        return c
    tail = data[i:] + bytes(12 - (n - i))
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - _rot(b, 14)) & m   # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & m   # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & m   # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & m   # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & m    # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & m   # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & m   # noqa: E702
    return c


def clear_open_flags(path: str) -> bool:
    """Clears the superblock's open-for-write flags left by a killed writer, like
    ``h5clear -s``; returns whether any were set. Only safe when no process has
    the file open for writing (the Publisher holds a lock to know that)."""
    with open(path, "r+b") as f:
        sb = bytearray(f.read(48))
        if len(sb) < 12 or bytes(sb[:8]) != HDF5_SIGNATURE:
            raise not_ours(path, "no HDF5 superblock at offset 0")
        if sb[8] not in (2, 3):
            return False  # older superblocks carry no such flags
        end = 12 + 4 * sb[9]
        if len(sb) < end + 4 or sb[11] == 0:
            return False
        if int.from_bytes(sb[end:end + 4], "little") != lookup3(bytes(sb[:end])):
            raise not_ours(path, "superblock checksum mismatch")
        sb[11] = 0
        sb[end:end + 4] = lookup3(bytes(sb[:end])).to_bytes(4, "little")
        f.seek(0)
        f.write(sb[:end + 4])
        f.flush()
        os.fsync(f.fileno())
    return True
