# cython: language_level=3
"""The per-message work of zenoh:// publishers and subscribers (a send, the
queue between zenoh's callback threads and a subscriber's reader, and the
reader's side of zenoh's own FIFO channel), compiled:
the same as the Python twin (its docstrings give the contract), done without
the interpreter's dispatch, since every microsecond of it is held with the GIL
by zenoh's thread or the reader (docs/zenoh.md, "Cost per message")."""

import threading
import time
from collections import deque

from cpython.time cimport time_ns
from libc.stdint cimport uint64_t

from ...errors import Closed, NAN_TIMEOUT, FrameError, Timeout
from ..python.zenohq import ENCODING, KEYS_KEPT, _closed, _timed_out
from .framing cimport encode
from .streamreader cimport take_frame

cdef object _monotonic = time.monotonic


cdef class Sender:
    cdef public str name, why
    cdef public object put, large
    cdef public Py_ssize_t large_min
    cdef public uint64_t seq
    cdef public bint closed
    cdef readonly int busy   # sends inside put (the GIL is held from the count to the check)
    cdef object __weakref__

    def __init__(self, str name, put, large, Py_ssize_t large_min):
        self.name = name
        self.put = put
        self.large = large
        self.large_min = large_min
        self.seq = 0
        self.closed = False
        self.why = ""
        self.busy = 0

    def send(self, data, timeout=None):
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        cdef uint64_t seq = self.seq
        cdef tuple frame
        cdef list parts
        if self.closed:
            raise Closed(f"publisher on {self.name} is closed{self.why}")
        frame = encode(data, seq, time_ns())
        parts = frame[0]
        self.busy += 1
        try:
            if self.closed:
                raise Closed(f"publisher on {self.name} is closed{self.why}")
            if <Py_ssize_t>frame[1] >= self.large_min:
                self.large(parts, frame[1])
            else:
                self.put(parts[0] if len(parts) == 1 else b"".join(parts))
        finally:
            self.busy -= 1
        self.seq = seq + 1
        return seq


cdef class SampleQueue:
    cdef public str name, why
    cdef public Py_ssize_t size, nbytes
    cdef public object block, waiter, lock
    cdef public long long overflows, bad_frames, duplicates
    cdef public bint closed
    cdef public object stats
    cdef public uint64_t max_frame_size
    cdef public dict seen, pending_skip
    cdef object _data, _room, _items, _append, _popleft, _acquire, _release
    cdef Py_ssize_t _bytes
    cdef int _readers_waiting, _samples_waiting
    cdef bint _aio_sleeping
    cdef tuple _last
    cdef dict _key_of
    cdef long long _taken
    cdef Py_ssize_t _prune_at
    cdef readonly object _retiring

    def __init__(self, str name, Py_ssize_t size, Py_ssize_t nbytes, block, stats, uint64_t max_frame_size):
        self.name = name
        self.size = size
        self.nbytes = nbytes
        self.block = block
        self.stats = stats
        self.max_frame_size = max_frame_size
        self.seen = {}
        self.pending_skip = {}
        self.bad_frames = 0
        self.duplicates = 0
        self.overflows = 0
        self.closed = False
        self.why = ""   # said after "is closed" (a forked child's copy says so)
        self.waiter = None
        self.lock = threading.Lock()
        self._acquire, self._release = self.lock.acquire, self.lock.release
        self._data = threading.Condition(self.lock)
        self._room = threading.Condition(self.lock)
        self._items = deque()
        self._append, self._popleft = self._items.append, self._items.popleft
        self._bytes = 0
        self._key_of = {}
        # the last sample's encoding, its source and key, as one tuple: callbacks
        # of two links may run at once (the Python twin says more)
        self._last = (None, None, None)
        self._taken = 0
        self._retiring = deque()   # (mark, source), oldest first (the twin says more)
        self._prune_at = KEYS_KEPT

    cdef tuple _item(self, sample):
        cdef object encoding = sample.encoding, source, key
        cdef tuple last = self._last
        if encoding == last[0]:
            source, key = last[1], last[2]
        else:
            source = str(encoding)
            if ENCODING in source:
                key = self._key_of.get(source)
                if key is None:
                    if len(self._key_of) >= KEYS_KEPT:
                        self._key_of.clear()
                    key = self._key_of[source] = str(sample.key_expr)
                self._last = (encoding, source, key)
            else:
                source = key = str(sample.key_expr)
        return (sample.payload.to_bytes(), source, key)

    def on_sample(self, sample):
        cdef tuple item = self._item(sample)
        cdef object old
        cdef Py_ssize_t n = len(<bytes>item[0])
        self._acquire()
        try:
            while len(self._items) and (len(self._items) >= self.size or self._bytes + n > self.nbytes):
                if self.closed:
                    return
                if sample.congestion_control == self.block:
                    self._samples_waiting += 1
                    try:
                        self._room.wait(0.1)
                    finally:
                        self._samples_waiting -= 1
                    continue
                old = self._popleft()
                self._bytes -= len(old[0])
                self._taken += 1
                self.overflows += 1
            if self.closed:
                return
            self._append(item)
            self._bytes += n
            if self._readers_waiting:
                self._data.notify_all()
            if self._aio_sleeping:
                self._aio_sleeping = False
                self.waiter.poke()
        finally:
            self._release()

    cdef int _wait(self, deadline, timeout) except -1:
        while True:
            if len(self._retiring):
                self._forget_retired()
            if len(self._items):
                return 0
            if self.closed:
                raise _closed(self.name, self.why)
            self._nap(deadline, timeout)
        return 0

    cdef int _nap(self, deadline, timeout) except -1:
        cdef object left = None
        if deadline is not None:
            left = deadline - _monotonic()
            if left <= 0:
                raise _timed_out(self.name, timeout)
        self._readers_waiting += 1
        try:
            self._data.wait(left)
        finally:
            self._readers_waiting -= 1
        return 0

    def retire(self, source):
        self._retiring.append((self._taken + len(self._items), source))
        if len(self._retiring) > self._prune_at:
            self._prune_retiring()

    cdef _prune_retiring(self):
        cdef long long taken = self._taken
        cdef dict seen = self.seen, skips = self.pending_skip
        self._retiring = deque([r for r in self._retiring
                                if <long long>r[0] > taken or r[1] in seen or r[1] in skips])
        self._prune_at = max(<Py_ssize_t>KEYS_KEPT, 2 * len(self._retiring))

    cdef int _forget_retired(self) except -1:
        cdef object retiring = self._retiring
        while len(retiring) and <long long>retiring[0][0] <= self._taken:
            self._forget(retiring.popleft()[1])
        return 0

    cdef int _forget(self, source) except -1:
        cdef long long skipped = self.pending_skip.pop(source, 0)
        self.seen.pop(source, None)
        if skipped:
            self.stats.skipped += skipped
        self.stats.forget(source)
        self._key_of.pop(source, None)
        return 0

    def get(self, deadline, timeout):
        return self._get(deadline, timeout)

    cdef tuple _get(self, deadline, timeout):
        cdef tuple item
        self._acquire()
        try:
            if not len(self._items) or len(self._retiring):
                self._wait(deadline, timeout)
            item = self._popleft()
            self._taken += 1
            self._bytes -= len(item[0])
            if self._samples_waiting:
                self._room.notify_all()
        finally:
            self._release()
        return item

    cpdef accept(self, frame, source, key):
        cdef long long skipped = 0
        if self.pending_skip:
            skipped = self.pending_skip.pop(source, 0)
        try:
            msg = take_frame(frame, source, self.seen, self.stats, self.max_frame_size, skipped, key)
        except FrameError:
            self.bad_frames += 1
            msg = None
        else:
            if msg is None:
                self.duplicates += 1
        if msg is None and skipped:
            self.pending_skip[source] = skipped
        return msg

    def recv(self, timeout=None):
        if timeout is not None and timeout != timeout:
            raise ValueError(NAN_TIMEOUT)
        cdef object deadline = None if timeout is None else _monotonic() + timeout
        cdef tuple item
        while True:
            item = self._get(deadline, timeout)
            msg = self.accept(item[0], item[1], item[2])
            if msg is not None:
                return msg

    def get_all(self, deadline, timeout):
        cdef list items
        self._acquire()
        try:
            self._wait(deadline, timeout)
            items = list(self._items)
            self._taken += len(items)
            self._items.clear()
            self._bytes = 0
            if self._samples_waiting:
                self._room.notify_all()
        finally:
            self._release()
        return items

    def arm(self):
        self._acquire()
        try:
            if len(self._items) or self.closed:
                return False
            self._aio_sleeping = True
            return True
        finally:
            self._release()

    def close(self):
        self._acquire()
        try:
            self.closed = True
            self._items.clear()
            self._bytes = 0
            self._data.notify_all()
            self._room.notify_all()
            if self.waiter is not None:
                self.waiter.shutdown()
                self._aio_sleeping = False
        finally:
            self._release()


cdef class ChannelQueue(SampleQueue):
    cdef public object handler
    cdef object _error, _pending, _fetcher, _want
    cdef bint _fetching

    def __init__(self, str name, Py_ssize_t size, Py_ssize_t nbytes, block, stats, uint64_t max_frame_size):
        SampleQueue.__init__(self, name, size, nbytes, block, stats, max_frame_size)
        self.handler = None
        self._error = Exception
        self._pending = deque()
        self._fetching = False
        self._fetcher = None
        self._want = threading.Condition(self.lock)

    def attach(self, handler, error):
        self.handler, self._error = handler, error

    cdef object _take(self):
        try:
            return self.handler.try_recv()
        except self._error:
            raise _closed(self.name, self.why) from None

    def retire(self, source):
        self._retiring.append((self._taken + len(self._pending) + 2 * self.size, source))
        if len(self._retiring) > self._prune_at:
            self._prune_retiring()

    cdef int _forget_channel_retired(self) except -1:
        cdef object sample
        with self.lock:
            if len(self._retiring) and not self._fetching and not len(self._pending):
                sample = self._take()
                if sample is None:
                    while len(self._retiring):
                        self._forget(self._retiring.popleft()[1])
                    return 0
                self._pending.append(sample)
            self._forget_retired()
        return 0

    def get(self, deadline, timeout):
        return self._get(deadline, timeout)

    cdef tuple _get(self, deadline, timeout):
        cdef object sample
        if self.closed:
            raise _closed(self.name, self.why)
        if len(self._retiring):
            self._forget_channel_retired()
        sample = self._next(deadline, timeout)
        self._taken += 1
        return self._item(sample)

    cdef object _next(self, deadline, timeout):
        cdef object sample = None
        if not self._fetching:
            if len(self._pending):
                return self._pending.popleft()
            sample = self._take()
            if sample is not None:
                return sample
        self._acquire()
        try:
            while True:
                if len(self._pending):
                    sample = self._pending.popleft()
                    break
                if self.closed:
                    raise _closed(self.name, self.why)
                if not self._fetching:
                    if deadline is None:
                        break
                    self._fetch()
                self._nap(deadline, timeout)
        finally:
            self._release()
        if sample is None:
            try:
                sample = self.handler.recv()
            except self._error:
                raise _closed(self.name, self.why) from None
        return sample

    cdef _fetch(self):
        self._fetching = True
        if self._fetcher is None:
            self._fetcher = threading.Thread(target=self._fetch_loop, daemon=True,
                                             name=f"datacomms fetch {self.name}")
            self._fetcher.start()
        else:
            self._want.notify()

    def _fetch_loop(self):
        cdef object sample
        while True:
            with self.lock:
                while not self._fetching and not self.closed:
                    self._want.wait()
                if self.closed:
                    return
            try:
                sample = self.handler.recv()
            except self._error:
                if not self.closed:
                    self.close()
                return
            with self.lock:
                self._fetching = False
                if self.closed:
                    return
                self._pending.append(sample)
                if self._readers_waiting:
                    self._data.notify_all()
                if self._aio_sleeping:
                    self._aio_sleeping = False
                    self.waiter.poke()

    def get_all(self, deadline, timeout):
        cdef list items = [self._get(deadline, timeout)]
        cdef object sample
        while len(items) <= self.size and not self._fetching:
            sample = self._pending.popleft() if len(self._pending) else self._take()
            if sample is None:
                break
            items.append(self._item(sample))
        self._taken += len(items) - 1
        return items

    def arm(self):
        cdef object sample
        with self.lock:
            if len(self._pending) or self.closed:
                return False
            if not self._fetching:
                try:
                    sample = self._take()
                except Closed:
                    return False
                if sample is not None:
                    self._pending.append(sample)
                    return False
                self._fetch()
            self._aio_sleeping = True
            return True

    def close(self):
        SampleQueue.close(self)
        with self.lock:
            self._pending.clear()
            self._want.notify_all()

    def drain(self, double seconds=1.0):
        cdef double deadline = _monotonic() + seconds
        while True:
            try:
                if self.handler.try_recv() is None:
                    if _monotonic() >= deadline:
                        return
                    time.sleep(0.001)
            except self._error:
                return
