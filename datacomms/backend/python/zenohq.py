"""The per-message work of zenoh:// publishers and subscribers: ``Sender`` (a
publisher's send), ``SampleQueue``, the queue between zenoh's callback
threads and a subscriber's reader, and ``ChannelQueue``, the reader's side of
a subscriber whose samples wait in zenoh's own FIFO channel (``fifo=True``).

zenoh delivers each sample on a thread of its own, with the GIL taken for the
callback; the reader takes frames out under the same lock. Everything done per
sample with the GIL held holds back both zenoh and the reader, so the compiled
backend has a twin of this class doing exactly the same with less interpreter
work (docs/zenoh.md, "Cost per message").

An item is ``(frame, source, key)``: the frame's bytes, the publisher it came
from (the text of the encoding a datacomms publisher declares, which names its
id; for a publisher that is not datacomms', the key) and the key it was put on.

The reader's side turns items into messages here as well (``recv``,
``accept``): what each publisher handed out last, the messages ``latest()``
passed over, and the counts of bad and duplicate frames live with the queue,
so a compiled ``recv`` takes a message out without a Python call in between.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ...errors import Closed, check_timeout, FrameError, Timeout
from ...message import Message
from .framing import encode
from .streamreader import take_frame

ENCODING = "application/octet-stream;datacomms/pub/"  # + the publisher id in hex
KEYS_KEPT = 4096  # publishers whose key a queue remembers (then it starts afresh)


def _closed(name: str, why: str = "") -> Closed:
    return Closed(f"subscriber on {name} is closed{why}")


def _timed_out(name: str, timeout: float | None) -> Timeout:
    return Timeout(f"nothing new on {name}" + (f" after {timeout} s" if timeout else ""))


class Sender:
    """A publisher's send: frames data with the next seq and the time now and puts
    it with ``put``; a frame of ``large_min`` bytes or more goes to ``large(parts,
    nbytes)`` instead, which assembles and puts it. ``seq`` is the next seq;
    ``closed`` makes send raise Closed naming ``name``, followed by ``why``.
    ``busy`` counts the sends inside put: once ``closed`` is set, no send
    starts a put, so the caller can wait for ``busy`` to reach 0 before it
    closes the session (zenohsession does at exit)."""

    def __init__(self, name: str, put: Any, large: Any, large_min: int) -> None:
        self.name = name
        self.put = put
        self.large = large
        self.large_min = large_min
        self.seq = 0
        self.closed = False
        self.why = ""
        # one entry per send inside put: list.append and pop are each one step
        # under the GIL, where busy += 1 from two threads could lose a count
        self._inside: list[None] = []

    @property
    def busy(self) -> int:
        return len(self._inside)

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Publishes data as one frame; returns its seq (timeout: unused, zenoh decides)."""
        check_timeout(timeout)
        if self.closed:
            raise Closed(f"publisher on {self.name} is closed{self.why}")
        seq = self.seq
        parts, n = encode(data, seq, time.time_ns())
        inside = self._inside
        inside.append(None)   # counted in before closed is looked at again
        try:
            if self.closed:
                raise Closed(f"publisher on {self.name} is closed{self.why}")
            if n >= self.large_min:
                self.large(parts, n)
            else:
                self.put(parts[0] if len(parts) == 1 else b"".join(parts))
        finally:
            inside.pop()
        self.seq = seq + 1
        return seq


class SampleQueue:
    """Samples queued by zenoh's callback (``on_sample``), bounded by ``size``
    items and ``nbytes`` bytes. When it is full, a sample a publisher sent
    with blocking congestion control (``block``) waits for room, which holds
    zenoh back and so the publisher; any other pushes out the oldest item
    (counted in ``overflows``). ``get`` and ``get_all`` wait for items and
    raise Closed or Timeout. ``lock`` guards the queue; ``waiter`` (an
    ``_aio.PipeWaiter``, set under ``lock``) is poked once per ``arm``.

    The reader's side (one reader thread; not under ``lock``): ``accept``
    makes a message of an item, recorded in ``stats`` (frames checked against
    ``max_frame_size``); ``seen`` holds each source's last seq handed out,
    ``pending_skip`` the messages per source ``latest()`` passed over (counted
    as skipped with that source's next message); ``bad_frames`` and
    ``duplicates`` count the frames refused.

    ``retire`` (a zenoh thread, holding ``lock``) names a publisher gone for
    good; the reader forgets what it keeps of it (``seen``, ``pending_skip``,
    its seqs in ``stats``, its key) once it has taken out every item queued
    before, so nothing kept grows with publishers that come and go."""

    def __init__(self, name: str, size: int, nbytes: int, block: Any, stats: Any,
                 max_frame_size: int) -> None:
        self.name = name
        self.size = size
        self.nbytes = nbytes
        self.block = block
        self.stats = stats
        self.max_frame_size = max_frame_size
        self.seen: dict[Any, int] = {}
        self.pending_skip: dict[Any, int] = {}
        self.bad_frames = 0   # samples that were not datacomms frames
        self.duplicates = 0   # samples seen before (history replay overlapping live data)
        self.overflows = 0
        self.closed = False
        self.why = ""   # said after "is closed" (a forked child's copy says so)
        self.waiter: Any = None
        self.lock = threading.Lock()
        # One lock, two conditions: readers wait for data, blocking samples for room.
        # Each side notifies only when the other waits (the common case is no one).
        self._data = threading.Condition(self.lock)
        self._room = threading.Condition(self.lock)
        self._readers_waiting = 0
        self._samples_waiting = 0
        self._aio_sleeping = False
        self._items: deque[tuple[bytes, Any, str]] = deque()
        self._bytes = 0
        # The last sample's encoding, the source it names and the key that publisher
        # puts on (it never changes), as one tuple (callbacks of two links may run at
        # once): one comparison instead of two strings per sample.
        self._last_encoding: tuple[Any, Any, Any] = (None, None, None)
        self._key_of: dict[str, str] = {}   # publisher source id -> its key
        self._taken = 0   # items ever taken out of _items (read, or pushed out)
        # (mark, source) of each source retired and not yet forgotten, oldest first:
        # forgotten once _taken reaches mark, the items queued up to its retirement
        self._retiring: deque[tuple[int, Any]] = deque()
        self._prune_at = KEYS_KEPT

    def _item(self, sample: Any) -> tuple[bytes, Any, str]:
        """A sample as an item: its frame copied out of zenoh, its source and key."""
        encoding = sample.encoding
        last = self._last_encoding
        if encoding == last[0]:
            _, source, key = last
        else:
            source = str(encoding)
            if ENCODING in source:
                # publishers interleaving under a wildcard miss the one-entry cache: the key
                # a publisher id puts on is kept by id, so a miss makes one string, not two
                key = self._key_of.get(source)
                if key is None:
                    if len(self._key_of) >= KEYS_KEPT:
                        self._key_of.clear()
                    key = self._key_of[source] = str(sample.key_expr)
                self._last_encoding = (encoding, source, key)
            else:  # not a datacomms publisher: one source per key (never cached: keys differ)
                source = key = str(sample.key_expr)
        return sample.payload.to_bytes(), source, key

    def on_sample(self, sample: Any) -> None:
        """zenoh's callback: copies the frame out of zenoh and queues it."""
        item = self._item(sample)
        n = len(item[0])
        with self.lock:
            items = self._items
            while items and (len(items) >= self.size or self._bytes + n > self.nbytes):
                if self.closed:
                    return
                if sample.congestion_control == self.block:
                    self._samples_waiting += 1
                    try:
                        self._room.wait(0.1)
                    finally:
                        self._samples_waiting -= 1
                    continue
                self._bytes -= len(items.popleft()[0])
                self._taken += 1
                self.overflows += 1
            if self.closed:
                return
            items.append(item)
            self._bytes += n
            if self._readers_waiting:
                self._data.notify_all()
            if self._aio_sleeping:
                self._aio_sleeping = False
                self.waiter.poke()

    def _wait(self, deadline: float | None, timeout: float | None) -> None:
        # holding self.lock: until an item is queued; Closed or Timeout otherwise.
        # The reader's way in, before it takes anything: the sources retired whose
        # items are all out go here (every item taken before has been accepted).
        while True:
            if self._retiring:
                self._forget_retired()
            if self._items:
                return
            if self.closed:
                raise _closed(self.name, self.why)
            self._nap(deadline, timeout)

    def _nap(self, deadline: float | None, timeout: float | None) -> None:
        # holding self.lock: one wait for a notify of _data, up to deadline
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise _timed_out(self.name, timeout)
        self._readers_waiting += 1
        try:
            self._data.wait(left)
        finally:
            self._readers_waiting -= 1

    def retire(self, source: Any) -> None:
        """Holding ``lock``: source (a publisher) is gone for good. What the reader
        keeps of it goes once the items queued until now are taken out, so its last
        messages are still accounted as the ones before."""
        self._retiring.append((self._taken + len(self._items), source))
        if len(self._retiring) > self._prune_at:
            self._prune_retiring()

    def _prune_retiring(self) -> None:
        # holding self.lock: a reader that took nothing while many publishers went.
        # It keeps nothing of those it never read (nor will: their items are out), so
        # what is left is bounded by what it keeps and what is queued. The reader's
        # dicts are only looked into here.
        taken, seen, skips = self._taken, self.seen, self.pending_skip
        self._retiring = deque(r for r in self._retiring if r[0] > taken or r[1] in seen or r[1] in skips)
        self._prune_at = max(KEYS_KEPT, 2 * len(self._retiring))

    def _forget_retired(self) -> None:
        # holding self.lock, the reader (see _wait)
        retiring, taken = self._retiring, self._taken
        while retiring and retiring[0][0] <= taken:
            self._forget(retiring.popleft()[1])

    def _forget(self, source: Any) -> None:
        self.seen.pop(source, None)
        skipped = self.pending_skip.pop(source, 0)
        if skipped:  # passed over by latest(); no next message of theirs will count them
            self.stats.skipped += skipped
        self.stats.forget(source)
        self._key_of.pop(source, None)

    def get(self, deadline: float | None, timeout: float | None) -> tuple[bytes, Any, str]:
        """The oldest item, waiting until deadline (time.monotonic(); None: no limit)
        for one; timeout is what the Timeout's message names."""
        with self.lock:
            if not self._items or self._retiring:
                self._wait(deadline, timeout)
            item = self._items.popleft()
            self._taken += 1
            self._bytes -= len(item[0])
            if self._samples_waiting:
                self._room.notify_all()
        return item

    def accept(self, frame: bytes, source: Any, key: str) -> Message | None:
        """The message an item holds, or None for a frame that is not valid (counted
        in bad_frames) or whose seq its source already handed out (duplicates)."""
        skipped = self.pending_skip.pop(source, 0) if self.pending_skip else 0
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

    def recv(self, timeout: float | None = None) -> Message:
        """The next message in arrival order, waiting up to timeout (None: no limit)."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.accept(*self.get(deadline, timeout))
            if msg is not None:
                return msg

    def get_all(self, deadline: float | None, timeout: float | None) -> list[tuple[bytes, Any, str]]:
        """Every item, oldest first, waiting as get does for the first."""
        with self.lock:
            self._wait(deadline, timeout)
            items = list(self._items)
            self._taken += len(items)
            self._items.clear()
            self._bytes = 0
            if self._samples_waiting:
                self._room.notify_all()
        return items

    def arm(self) -> bool:
        """For an event loop about to sleep: False when there is something to read
        (or the queue is closed), else True, and the next sample pokes ``waiter``."""
        with self.lock:
            if self._items or self.closed:
                return False
            self._aio_sleeping = True
            return True

    def close(self) -> None:
        """Drops what is queued and wakes every waiter, which then sees Closed."""
        with self.lock:
            self.closed = True
            self._items.clear()
            self._bytes = 0
            self._data.notify_all()
            self._room.notify_all()
            if self.waiter is not None:
                self.waiter.shutdown()
                self._aio_sleeping = False


class ChannelQueue(SampleQueue):
    """The queue of a subscriber with ``fifo=True``: samples wait in zenoh's own
    FIFO channel (``attach``), which zenoh's threads fill without taking the GIL,
    and the reader takes them out itself, so no sample costs a hand-over of the
    GIL (docs/zenoh.md, "A FIFO subscriber"). ``size`` is the channel's
    capacity. When it is full, zenoh's receiving thread waits, which holds back
    the publishers behind it: blocking ones wait, dropping ones drop at their
    end (seen here as seq gaps). Nothing is pushed out here, so ``nbytes`` and
    ``overflows`` do not apply.

    A reader with no timeout waits in the channel itself. A wait with a
    timeout, or an event loop's (``arm``), is handed to a fetching thread
    (started the first time one is needed): it waits in the channel for the
    next sample and leaves it in ``_pending``. While it fetches, nobody else
    takes from the channel, so samples keep their order. Once closed, what the
    channel still holds is never handed out."""

    def __init__(self, name: str, size: int, nbytes: int, block: Any, stats: Any,
                 max_frame_size: int) -> None:
        super().__init__(name, size, nbytes, block, stats, max_frame_size)
        self.handler: Any = None
        self._error: Any = Exception
        self._pending: deque[Any] = deque()   # samples taken out of the channel, oldest first
        self._fetching = False
        self._fetcher: threading.Thread | None = None
        self._want = threading.Condition(self.lock)

    def attach(self, handler: Any, error: Any) -> None:
        """handler: the channel (a zenoh subscriber's ``handler``); error: what its
        ``recv`` and ``try_recv`` raise once it is closed (the subscriber undeclared)."""
        self.handler, self._error = handler, error

    def _take(self) -> Any:
        # a sample from the channel without waiting, or None; Closed once it is closed
        try:
            return self.handler.try_recv()
        except self._error:
            raise _closed(self.name, self.why) from None

    def retire(self, source: Any) -> None:
        # zenoh's channel cannot be looked into: its samples from before now are out
        # once as many were taken as it holds (each zenoh thread waiting for room holds
        # one more: twice its size is ample), or as soon as it is found empty
        self._retiring.append((self._taken + len(self._pending) + 2 * self.size, source))
        if len(self._retiring) > self._prune_at:
            self._prune_retiring()

    def _forget_channel_retired(self) -> None:
        # the reader, before it takes a sample (not holding the lock)
        with self.lock:
            if self._retiring and not self._fetching and not self._pending:
                sample = self._take()
                if sample is None:  # empty: what came before each retirement is out
                    while self._retiring:
                        self._forget(self._retiring.popleft()[1])
                    return
                self._pending.append(sample)
            self._forget_retired()

    def get(self, deadline: float | None, timeout: float | None) -> tuple[bytes, Any, str]:
        if self.closed:
            raise _closed(self.name, self.why)
        if self._retiring:
            self._forget_channel_retired()
        sample = self._next(deadline, timeout)
        self._taken += 1
        return self._item(sample)

    def _next(self, deadline: float | None, timeout: float | None) -> Any:
        # the next sample, waiting as get says
        if not self._fetching:
            if self._pending:
                try:
                    return self._pending.popleft()
                except IndexError:  # another reader took it meanwhile
                    pass
            sample = self._take()
            if sample is not None:
                return sample
        sample = None
        with self.lock:
            while True:
                if self._pending:
                    sample = self._pending.popleft()
                    break
                if self.closed:
                    raise _closed(self.name, self.why)
                if not self._fetching:
                    if deadline is None:
                        break
                    self._fetch()
                self._nap(deadline, timeout)
        if sample is None:  # no time limit and nobody fetching: wait in the channel
            try:
                sample = self.handler.recv()
            except self._error:
                raise _closed(self.name, self.why) from None
        return sample

    def _fetch(self) -> None:
        # holding self.lock: the fetching thread takes the next sample
        self._fetching = True
        if self._fetcher is None:
            self._fetcher = threading.Thread(target=self._fetch_loop, daemon=True,
                                             name=f"datacomms fetch {self.name}")
            self._fetcher.start()
        else:
            self._want.notify()

    def _fetch_loop(self) -> None:
        while True:
            with self.lock:
                while not self._fetching and not self.closed:
                    self._want.wait()
                if self.closed:
                    return
            try:
                sample = self.handler.recv()
            except self._error:  # the channel closed: nothing more will come
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

    def get_all(self, deadline: float | None, timeout: float | None) -> list[tuple[bytes, Any, str]]:
        """Every item waiting (at most one channel's worth more than the first), oldest
        first, waiting as get does for the first."""
        items = [self.get(deadline, timeout)]
        while len(items) <= self.size and not self._fetching:
            sample = self._pending.popleft() if self._pending else self._take()
            if sample is None:
                break
            items.append(self._item(sample))
        self._taken += len(items) - 1
        return items

    def arm(self) -> bool:
        with self.lock:
            if self._pending or self.closed:
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

    def close(self) -> None:
        super().close()
        with self.lock:
            self._pending.clear()
            self._want.notify_all()

    def drain(self, seconds: float = 1.0) -> None:
        """Once the zenoh subscriber is undeclared: empties the channel until zenoh
        has let go of it (its ``try_recv`` raises), or for ``seconds`` at most. A
        zenoh thread that was waiting for room in the full channel when it was
        undeclared still holds it, and would wait for ever, holding back the
        whole session."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self.handler.try_recv() is None:
                    if time.monotonic() >= deadline:
                        return
                    time.sleep(0.001)
            except self._error:
                return
