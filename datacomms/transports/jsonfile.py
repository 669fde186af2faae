"""json://PATH: the latest value as a plain JSON document, replaced atomically.

The publisher writes each version to a temporary file in the same directory and
``os.replace()``s it over PATH, so a reader opens either the old document or the
new one, never a torn one. The document (docs/files.md) is

    {"seq": 41, "timestamp_ns": 1712345678901234567, "data": ...}

with numpy arrays inside ``data`` written as nested lists (they come back as
lists: JSON has no arrays of a dtype) and NaN/infinities as null. Bytes-like
values have no JSON form and are refused with dc.FrameError.

A subscriber notices a new version by stat() alone and reads a file only when
its identity (inode) or mtime/ctime/size changed. It keeps the version it read
open, so the filesystem cannot hand that inode number to the next version and
make two versions look alike. Plain JSON written by another program is read
too: ``seq`` is None (no loss accounting) and ``timestamp_ns`` is the file's
mtime. Such a writer may rewrite the file in place; a read that does not parse
while the file is still fresh (changed within ``settle`` seconds) is taken for a
write in progress and retried, and counted in ``retries``, not raised. A file
that stays unparseable is reported once per version as dc.FrameError.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Any, Iterable

import numpy as np

from .. import _aio, pubsub
from ..backend._meta import has_buffers, is_dataclass_type, json_value
from ..errors import Closed, check_timeout, FrameError
from ..message import Message
from . import _files

# nonblocking: opening a FIFO for reading would wait for a writer (a regular file ignores the flag)
_OPEN_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _jsonable(obj: Any) -> Any:
    """Arrays to nested lists; bytes refused (JSON has no bytes). Only called when
    the value holds a buffer, so plain dicts of numbers go to the encoder untouched."""
    if isinstance(obj, dict):   # subclasses too, as has_buffers looks into them
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise FrameError(f"json:// cannot write arrays of dtype {obj.dtype}; send numbers, or use hdf5://")
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raise FrameError("json:// writes plain JSON, which has no bytes; send text or numbers, "
                         "or use hdf5:// / shm:// for binary payloads")
    if is_dataclass_type(type(obj)):
        return _jsonable(json_value(obj))
    return obj


def _unpack(doc: Any) -> tuple[Any, int | None, int | None]:
    """(data, seq, timestamp_ns) of a document; a document not of our shape is all data."""
    if type(doc) is dict and len(doc) == 3 and "data" in doc:
        seq, ts = doc.get("seq"), doc.get("timestamp_ns")
        if type(seq) is int and type(ts) is int and seq >= 0:
            return doc["data"], seq, ts
    return doc, None, None


def _read_all(fd: int, size_hint: int) -> bytes:
    chunks = []
    want = max(size_hint, 4096)
    while True:
        b = os.read(fd, want)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        want = 1 << 20


def _remove(path: str) -> None:
    # Only ever a temp file this publisher may have made. unlink() reports a read-only file
    # system (EROFS) even for a name that is not there, and a publisher that cannot make its
    # temp file has none to remove: nothing to raise about.
    try:
        os.unlink(path)
    except OSError:
        pass


class JsonPublisher(pubsub.Publisher):
    """Publishes the latest value as PATH, one atomic replace per send.

    ``durable=True`` fsyncs the new file before the replace and the directory
    after it, so a power cut leaves the old or the new version on disk.
    ``on_full`` is accepted for API parity: a file never fills, so send never waits.
    A publisher that finds its own document at PATH continues its sequence.
    """

    def __init__(self, url: str, backend: Any = None, durable: bool = False, on_full: str = "drop") -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        self.url = url
        self.path = _files.path_of(url, "json")
        self.backend = _files.get_backend(backend)
        self.durable = durable
        self._dumps = self.backend.framing.dumps_json
        directory = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path)
        # One temp name per publisher: a crash leaves at most one stray file, which
        # the next publisher of the same pid would reuse; a dot keeps globs off it.
        self._tmp = os.path.join(directory, f".{base}.{os.getpid()}.{id(self):x}.tmp")
        self._dir_fd = os.open(directory, os.O_RDONLY) if durable else -1
        self._closed = False
        self._seq = self._next_seq()
        # sends from several threads take turns: they share the temp file and the counter
        self._lock = threading.Lock()

    def _next_seq(self) -> int:
        try:
            fd = os.open(self.path, _OPEN_READ)
        except OSError:
            return 0
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return 0
            _, seq, _ = _unpack(self.backend.framing.loads_json(_read_all(fd, 0)))
        except (OSError, FrameError):
            return 0
        finally:
            os.close(fd)
        return 0 if seq is None else seq + 1

    def _encode(self, data: Any, seq: int, ts: int) -> bytes:
        if has_buffers(data):
            data = _jsonable(data)
        elif isinstance(data, np.generic):
            data = data.item()
        return self._dumps({"seq": seq, "timestamp_ns": ts, "data": data})

    def _write(self, doc: bytes) -> None:
        fd = os.open(self._tmp, _OPEN_WRITE, 0o666)
        try:
            try:
                view = memoryview(doc)
                while view:
                    view = view[os.write(fd, view):]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except BaseException:
            _remove(self._tmp)   # a full disk, PATH a directory: no half-written temp file stays
            raise
        if self.durable:
            os.fsync(self._dir_fd)

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Replaces the document with data; returns its seq. timeout is unused (never waits)."""
        check_timeout(timeout)
        with self._lock:
            if self._closed:
                raise Closed(f"publisher on {self.url} is closed")
            seq = self._seq
            doc = self._encode(data, seq, time.time_ns())
            self._write(doc)
            self._seq = seq + 1
            return seq

    def send_many(self, items: Iterable[Any], timeout: float | None = None) -> int:
        """Publishes a batch in one write: every item takes a seq, but only the last
        becomes the document (a latest-value file keeps one value), so a subscriber
        counts the others as lost. Returns the last seq; -1 for an empty batch."""
        check_timeout(timeout)
        items = list(items)
        with self._lock:
            if self._closed:
                raise Closed(f"publisher on {self.url} is closed")
            if not items:
                return -1
            seq = self._seq + len(items) - 1
            self._write(self._encode(items[-1], seq, time.time_ns()))
            self._seq = seq + 1
            return seq

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        """Raises dc.DataCommsError: a file cannot know who reads it (see docs/files.md)."""
        raise _files.readers_unknowable("json")

    @property
    def subscribers(self) -> int:
        """Raises dc.DataCommsError: a file cannot know who reads it (see docs/files.md)."""
        raise _files.readers_unknowable("json")

    def close(self) -> None:
        """Stops publishing. The document stays: it is the value late readers get."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                _remove(self._tmp)
            finally:
                if self._dir_fd >= 0:
                    os.close(self._dir_fd)
                    self._dir_fd = -1


class JsonSubscriber(pubsub.Subscriber):
    """Reads each new version of a JSON document.

    ``recv()`` returns the next version this subscriber has not seen and counts
    versions it never saw (seq gaps) as lost; ``latest()`` does the same but
    counts them as skipped, since its caller asked only for the newest. A new
    subscriber's first call returns the current document if there is one. A
    missing file (or directory) is waited for.
    """

    def __init__(self, url: str, backend: Any = None, poll_interval: float = _files.DEFAULT_POLL_INTERVAL,
                 settle: float = 0.25) -> None:
        self.url = url
        self.path = _files.path_of(url, "json")
        self.backend = _files.get_backend(backend)
        self.stats = _files.make_stats(self.backend)
        self.poll_interval = poll_interval
        self.settle = settle
        self.retries = 0        # reads of a half-written foreign file, retried
        self.bad_versions = 0   # versions that never parsed, reported as FrameError
        self._loads = self.backend.framing.loads_json
        self._key: tuple[int, ...] | None = None
        self._held_fd = -1
        self._last_id: tuple[int, int] | None = None
        self._closed = False
        # A look and close() from another thread take turns: close() must not close the
        # held descriptor while a look replaces it, nor a look hold one after close().
        self._lock = threading.Lock()

    def _look(self) -> tuple[Any, int | None, int] | None:
        """Reads the document if it changed since the last read: (data, seq, ts) or None."""
        with self._lock:
            if self._closed:
                raise Closed(f"subscriber on {self.url} is closed")
            return self._look_locked()

    def _look_locked(self) -> tuple[Any, int | None, int] | None:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        if key == self._key:
            return None
        if not stat.S_ISREG(st.st_mode):
            self._key = key   # reported once, like a document that does not parse
            self.bad_versions += 1
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise FrameError(f"{self.path} is {what}, not a JSON document")
        try:
            fd = os.open(self.path, _OPEN_READ)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fst = os.fstat(fd)
            raw = _read_all(fd, fst.st_size)
            after = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        key = (after.st_dev, after.st_ino, after.st_mtime_ns, after.st_ctime_ns, after.st_size)
        changing = (fst.st_mtime_ns, fst.st_size) != (after.st_mtime_ns, after.st_size)
        try:
            doc = self._loads(raw)
        except FrameError as exc:
            fresh = time.time_ns() - after.st_mtime_ns < self.settle * 1e9
            if changing or fresh:
                os.close(fd)
                self.retries += 1
                return None
            self._hold(fd, key)
            self.bad_versions += 1
            raise FrameError(f"{self.path} is not a JSON document ({exc})") from None
        self._hold(fd, key)
        data, seq, ts = _unpack(doc)
        if ts is None:
            return data, None, after.st_mtime_ns
        if (seq, ts) == self._last_id:
            # the same version under a new stat key (metadata touched): not news
            return None
        self._last_id = (seq, ts)
        return data, seq, ts

    def _hold(self, fd: int, key: tuple[int, ...]) -> None:
        # Holding the version just read keeps its inode allocated, so the next
        # version gets a different inode even when mtime and size repeat.
        if self._held_fd >= 0:
            os.close(self._held_fd)
        self._held_fd = fd
        self._key = key

    def _take(self, timeout: float | None, as_skipped: bool) -> Message:
        data, seq, ts = _files.wait_for(self._look, timeout, self.poll_interval, self.url)
        skipped = 0
        if as_skipped and seq is not None:
            last = self._last_seq
            if last is not None and seq > last + 1:
                skipped = seq - last - 1
        self.stats.record(seq, ts, time.time_ns(), skipped)
        if seq is not None:
            self._last_seq = seq
        return Message(data, seq, ts)

    _last_seq: int | None = None

    def recv(self, timeout: float | None = None) -> Message:
        return self._take(timeout, as_skipped=False)

    def latest(self, timeout: float | None = None) -> Message:
        return self._take(timeout, as_skipped=True)

    def _aio_waiter(self) -> _aio.Waiter:
        with self._lock:
            return _files.dir_waiter(self)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            w = self.__dict__.pop("_aio_w", None)
            if self._held_fd >= 0:
                os.close(self._held_fd)
                self._held_fd = -1
        if w is not None:
            w.shutdown()
