"""zenoh://KEY/EXPR: datacomms frames carried by Eclipse Zenoh (docs/zenoh.md).

Each ``send`` is one zenoh ``put`` of one whole datacomms frame, so seq,
timestamp_ns, numpy payloads and loss accounting are those of every other
transport. Each Publisher object has a fresh 16-byte id, named in the zenoh
encoding it declares once (``encoding_of``), which every sample carries: it
keeps the sequences of several publishers on one key (or under one wildcard)
apart, and a restarted publisher is a new id whose seq starts at 0, never a
loss. (A per-put attachment did the same at about 0.5 us more per put.)

Publishers are zenoh advanced publishers with a one-sample cache, subscribers
advanced subscribers asking for that history, so a late joiner gets the newest
value of every live publisher at once. Each subscriber holds a liveliness token
naming its key expression, which is how a publisher counts its subscribers; each
publisher holds one naming its id and key, which is how a subscriber tells a
publisher that went away and was replaced (``stats.restarts``) from two
publishers sharing a key.

The module is named zenohbus so that it never shadows the zenoh package.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections import Counter
from typing import Any

from .. import _aio
from .. import backend as _backend
from .. import pubsub
from ..errors import Closed, check_timeout, DataCommsError, FrameError, Timeout
from ..message import Message
from ..backend.python.zenohq import ENCODING as _ENCODING  # + the publisher id in hex
from . import zenohsession

# Liveliness tokens of subscribers live under a verbatim chunk ('@'), which
# user wildcards such as '**' never match: @datacomms/sub/<id>/<hex of key expr>.
# The key expression is hex-encoded because a token's key may not hold wildcards.
_TOKEN_ROOT = "@datacomms/sub"
_PUB_ROOT = "@datacomms/pub"  # @datacomms/pub/<hex of publisher id>/<hex of key>
# Each subscriber also answers queries at @datacomms/flush/<its id>/<hex of key expr>:
# zenoh hands it a query only after the samples put before it on the same link, so
# the answer says the subscriber has taken in everything the asker put before.
_FLUSH_ROOT = "@datacomms/flush"
_FOREVER = 365 * 86400.0  # seconds: a zenoh query's timeout for "no timeout"
DEFAULT_QUEUE_SIZE = 1024
DEFAULT_QUEUE_BYTES = 256 << 20
_RECHECK = 0.1  # seconds between token queries while waiting for subscribers
SCRATCH_MIN = 1 << 20  # frames at least this big are assembled in the publisher's own buffer
GONE_KEPT = 1024  # publishers gone and not replaced a subscriber remembers (the oldest go first)


def encoding_of(pub_id: bytes) -> str:
    """The zenoh encoding a publisher with this id declares: octet-stream (a datacomms
    frame) whose schema names the publisher, which is how subscribers tell publishers apart."""
    return _ENCODING + pub_id.hex()


def _weakly(method: Any) -> Any:
    """A zenoh callback that calls method while its object lives. zenoh now and then
    keeps a liveliness subscriber's callback long after it is undeclared (past its
    session's close), and with a bound method, the closed Publisher or Subscriber."""
    ref = weakref.WeakMethod(method)

    def call(sample: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(sample)
    return call


def _stats(be: Any) -> Any:
    return be.stats.Stats()


def _key_expr(zenoh: Any, key: str) -> Any:
    try:
        return zenoh.KeyExpr(key)
    except zenoh.ZError as exc:  # zenoh's text ends with where in its sources it was raised
        raise DataCommsError(f"bad zenoh key expression {key!r}: {str(exc).split(' at /')[0]}") from None


def _check_on_full(on_full: str) -> None:
    if on_full not in ("drop", "block"):
        raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")


class ZenohPublisher(pubsub.Publisher):
    """Publishes frames on one key (no wildcards) through a shared zenoh session.

    ``on_full="drop"`` (default) lets zenoh drop a message its queues cannot take
    (the subscriber sees the gap); ``"block"`` makes ``put`` wait for room
    (zenoh's blocking congestion control; zenoh bounds the wait itself, see
    docs/zenoh.md, so ``send``'s timeout is not used). ``history`` is how many of
    the newest messages late subscribers get (0: none). ``close`` first waits up
    to ``linger`` seconds until the subscribers have what was sent (``flush``).
    Session options: ``mode``, ``connect``, ``listen``, ``config`` (see
    zenohsession.parse_url).
    """

    def __init__(self, url: str, backend: Any = None, on_full: str = "drop", history: int = 1,
                 mode: str | None = None, connect: Any = None, listen: Any = None, config: Any = None,
                 express: bool = False, linger: float = 2.0) -> None:
        _check_on_full(on_full)
        zenoh = zenohsession.load()
        from zenoh import ext as zext
        self.url = url
        self.on_full = on_full
        self.backend = _backend.get(backend)
        self._scratch: bytearray | None = None  # large frames are assembled here
        self._scratch_lock = threading.Lock()  # a second thread sending meanwhile joins its own
        opts = zenohsession.parse_url(url, mode, connect, listen, config)
        self.key, ke = opts.key, _key_expr(zenoh, opts.key)
        if "*" in opts.key or "$" in opts.key:
            raise DataCommsError(f"a publisher needs a concrete key, not the wildcard {opts.key!r}")
        self.id = uuid.uuid4().bytes
        self._ke = ke  # before any callback can need it
        self._cond = threading.Condition()
        self._subs: set[str] = set()
        self._querying = 0  # token queries under way
        self._asking = 0  # flush queries under way
        self._halted = False  # by zenohsession, at exit or in a forked child: no query starts
        self._left: set[str] = set()  # tokens gone while a query was under way
        self._put_kind = zenoh.SampleKind.PUT
        self._query_timeout = 1.0
        self._linger = linger
        self._flush_opts = {"target": zenoh.QueryTarget.ALL, "consolidation": zenoh.ConsolidationMode.NONE,
                            "congestion_control": zenoh.CongestionControl.BLOCK,
                            "priority": zenoh.Priority.DATA}  # the puts' own, so it queues behind them
        encoding = zenoh.Encoding(encoding_of(self.id))
        self._session, self._share = zenohsession.acquire(opts)
        self._pid = os.getpid()
        try:
            cc = zenoh.CongestionControl.BLOCK if on_full == "block" else zenoh.CongestionControl.DROP
            if history > 0 and hasattr(zext, "MissDetectionConfig"):
                # Sample miss detection makes the cache order its samples by a sequence
                # number of the publisher's own instead of by the session's timestamps, so
                # sessions need no timestamping, which would stamp every put of the process.
                self._pub = zext.declare_advanced_publisher(
                    self._session, ke, encoding=encoding, congestion_control=cc, express=express,
                    cache=zext.CacheConfig(max_samples=history), publisher_detection=True,
                    sample_miss_detection=zext.MissDetectionConfig())
            else:
                # No cache wanted, or a zenoh-python before advanced pub/sub (docs/zenoh.md):
                # a plain publisher, whose put costs about 1.5 us less.
                self._pub = self._session.declare_publisher(ke, encoding=encoding, congestion_control=cc,
                                                            express=express)
            self._put = self._pub.put
            # seq, time, frame and put per message, compiled in the cython backend
            self._sender = self.backend.zenohq.Sender(url, self._put, self._put_large, SCRATCH_MIN)
            self.send = self._sender.send  # type: ignore[method-assign]
            zenohsession.track_publisher(self)
            self._live = self._session.liveliness().declare_subscriber(
                f"{_TOKEN_ROOT}/**", _weakly(self._on_token), history=True)
            self._token = self._session.liveliness().declare_token(
                f"{_PUB_ROOT}/{self.id.hex()}/{opts.key.encode().hex()}")
        except BaseException:
            zenohsession.release(self._share)
            raise

    def _on_token(self, sample: Any) -> None:
        # Runs on a zenoh callback thread: keeps the set of subscriber tokens whose
        # key expression reaches this publisher's key.
        token = str(sample.key_expr)
        if not self._covers(token):
            return
        with self._cond:
            if sample.kind == self._put_kind:
                self._subs.add(token)
                self._left.discard(token)
            else:
                self._subs.discard(token)
                if self._querying:
                    self._left.add(token)
            self._cond.notify_all()

    def _covers(self, token: str) -> bool:
        """Whether a subscriber token names a key expression that reaches this key."""
        try:
            return self._ke.intersects(bytes.fromhex(token.rsplit("/", 1)[1]).decode())
        except Exception:  # not a token of ours (bad hex, bad key expression)
            return False

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Publishes data as one frame; returns its seq."""
        return self._sender.send(data, timeout)  # bound to the instance in __init__

    def _put_large(self, parts: list[Any], n: int) -> None:
        if self._scratch_lock.acquire(False):
            try:
                self._put(self._fill_scratch(parts, n))
            finally:
                self._scratch_lock.release()
        else:
            self._put(b"".join(parts))

    def _fill_scratch(self, parts: list[Any], n: int) -> bytearray:
        # A large frame is assembled in a buffer this publisher keeps, not in a fresh
        # bytes per message: put copies it into zenoh anyway, and a fresh multi-MiB
        # allocation per message, freed right after, made glibc hand the pages back and
        # fault them in again on every send (docs/zenoh.md, "Large messages").
        buf = self._scratch
        if buf is None or len(buf) != n:
            buf = self._scratch = bytearray(n)
        view = memoryview(buf)
        off = 0
        for part in parts:
            part = memoryview(part).cast("B")
            view[off:off + part.nbytes] = part
            off += part.nbytes
        return buf

    def _send_may_wait(self) -> bool:
        return self.on_full == "block"

    def _query_tokens(self) -> None:
        # Asks the network for the subscriber tokens present now. The liveliness
        # subscriber alone can miss a token that appears while this session is
        # still meeting its peers through a router, so counts rest on a query too.
        # A token that goes while the query is under way may still be in its replies:
        # it must not come back from them, or a subscriber that left counts for ever.
        found = set()
        with self._cond:
            if self._halted:
                return
            self._querying += 1
        try:
            for reply in self._session.liveliness().get(f"{_TOKEN_ROOT}/**", timeout=self._query_timeout):
                sample = reply.ok
                if sample is not None and self._covers(str(sample.key_expr)):
                    found.add(str(sample.key_expr))
        except Exception:  # a closed session or a network error: keep what the events said
            found.clear()
        with self._cond:
            self._querying -= 1
            self._subs |= found - self._left
            if not self._querying:
                self._left.clear()
            self._cond.notify_all()

    @property
    def subscribers(self) -> int:
        """How many datacomms subscribers whose key expression covers this key are attached."""
        if self._sender.closed:
            return 0   # as elsewhere; and a forked child's copy knows nothing it could count
        self._query_tokens()
        with self._cond:
            return len(self._subs)

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        """Blocks until at least n datacomms subscribers are attached; dc.Timeout after timeout s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._query_tokens()
            with self._cond:
                if len(self._subs) >= n:
                    return len(self._subs)
                if self._sender.closed:
                    raise Closed(f"publisher on {self.url} is closed{self._sender.why}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout(f"{len(self._subs)} of {n} subscribers on {self.url} after {timeout} s")
                self._cond.wait(_RECHECK if left is None else min(left, _RECHECK))

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every datacomms subscriber this publisher knows of has taken in
        what it sent before (into its queue; not necessarily read yet); False when one
        has not said so within timeout. A put returns once zenoh has queued it, and
        what zenoh still holds when the session closes is lost."""
        if os.getpid() != self._pid:  # zenoh is the parent's: the query would wait for ever
            raise Closed(f"publisher on {self.url} is closed{self._sender.why}")
        with self._cond:
            want = {token.rsplit("/", 2)[1] for token in self._subs}
        if not want:
            return True
        got: set[str] = set()
        done = threading.Event()

        def ask() -> None:
            with self._cond:
                if self._halted:
                    done.set()
                    return
                self._asking += 1
            try:
                replies = self._session.get(f"{_FLUSH_ROOT}/**", timeout=_FOREVER if timeout is None
                                            else max(timeout, 0.0), **self._flush_opts)
                for reply in replies:
                    sample = reply.ok
                    if sample is not None:
                        got.add(str(sample.key_expr).rsplit("/", 2)[1])
            except Exception:  # a closed session or a network error: nobody confirmed
                pass
            finally:
                with self._cond:
                    self._asking -= 1
                done.set()

        if timeout is None:
            ask()
        else:
            # The query queues behind the puts with blocking congestion control, so
            # sending it waits for room as they do: with a subscriber that stopped
            # reading, up to zenoh's own bound (wait_before_close), not timeout. It is
            # sent from a thread of its own, left to zenoh past timeout (not a daemon:
            # it ends with that bound, or with the session, and never at exit in zenoh).
            threading.Thread(target=ask, name=f"datacomms flush {self.url}").start()
            if not done.wait(max(timeout, 0.0)):
                return False
        return want <= got

    def _halt(self, why: str, locked: bool = True) -> None:
        # zenohsession's, at exit or in a forked child (not locked: a thread of the
        # parent may have held the lock): send, flush and the subscriber count no
        # longer call into zenoh, and a send says why
        if not self._sender.closed:
            self._sender.why = why
            self._sender.closed = True
        if locked:
            with self._cond:
                self._halted = True   # under the lock a query counts itself in by
                self._cond.notify_all()
        else:
            self._halted = True

    def _busy(self) -> bool:
        """Whether a put or a query of this publisher is under way."""
        return bool(self._sender.busy or self._querying or self._asking)

    def close(self) -> None:
        """Waits up to ``linger`` seconds for the subscribers to have what was sent, then
        lets go of zenoh."""
        if self._sender.closed:
            return
        self._sender.closed = True
        with self._cond:
            self._cond.notify_all()
        if os.getpid() != self._pid:
            return  # a forked child's copy: zenoh is its parent's (zenohsession._forked)
        try:
            if self._linger > 0:
                self.flush(self._linger)
            self._token.undeclare()
            self._live.undeclare()
            self._undeclare_pub()
        finally:
            zenohsession.release(self._share)
        self._scratch = None
        # the sender calls back into this object for large frames: without that
        # cycle a closed publisher, and with it its session, goes as soon as it is dropped
        self._sender.large = None

    def _undeclare_pub(self) -> None:
        # A send waiting in a block-mode put on another thread holds zenoh's publisher
        # until the put returns, and undeclaring it meanwhile fails ('Already borrowed').
        # Try again up to linger; past that the publisher goes with the session (or with
        # this object, once the put has returned).
        deadline = time.monotonic() + self._linger
        while True:
            try:
                self._pub.undeclare()
                return
            except RuntimeError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)


class _ZenohWaiter(_aio.PipeWaiter):
    """zenoh delivers on its own threads: the sample callback writes a byte to this
    pipe when the subscriber said it sleeps in an event loop."""

    def __init__(self, queue: Any) -> None:
        super().__init__()
        self.queue = queue

    def arm(self) -> bool:
        return self.queue.arm()


class ZenohSubscriber(pubsub.Subscriber):
    """Receives frames from every publisher whose key matches KEY/EXPR (wildcards allowed).

    Samples are queued by a zenoh callback thread in a queue bounded by
    ``queue_size`` messages and ``queue_bytes`` bytes. When it is full, a sample
    from a dropping publisher pushes out the oldest one (counted in
    ``overflows`` and, through its seq gap, in ``stats.lost``); a sample from a
    blocking publisher waits for room, which holds zenoh back and so the
    publisher. Frames that do not decode are dropped and counted in
    ``bad_frames``; duplicates (a cached value also seen live) in ``duplicates``.
    ``history=False`` turns off the late-joiner query. A publisher that goes
    away and one that appears on the same key afterwards count as one
    ``stats.restarts``; publishers that share a key while alive never do.

    ``fifo=True`` keeps samples in zenoh's own FIFO channel of ``queue_size``
    samples instead, which zenoh fills without the GIL: two to three times the
    throughput for small messages. When it is full, zenoh waits for the reader
    and holds back every publisher behind it (a dropping one drops at its end,
    counted here through seq gaps); there is no byte bound (passing
    ``queue_bytes`` is an error) and nothing is pushed out (docs/zenoh.md,
    "A FIFO subscriber").
    """

    def __init__(self, url: str, backend: Any = None, queue_size: int = DEFAULT_QUEUE_SIZE,
                 queue_bytes: int | None = None, history: bool = True, mode: str | None = None,
                 connect: Any = None, listen: Any = None, config: Any = None,
                 max_frame_size: int | None = None, fifo: bool = False) -> None:
        zenoh = zenohsession.load()
        from zenoh import ext as zext
        if fifo and queue_bytes is not None:
            raise ValueError("queue_bytes does not apply with fifo=True: zenoh's channel is bounded "
                             "by queue_size messages only")
        queue_bytes = DEFAULT_QUEUE_BYTES if queue_bytes is None else queue_bytes
        if queue_size < 1 or queue_bytes < 1:
            raise ValueError("queue_size and queue_bytes must be at least 1")
        self.url = url
        self.backend = _backend.get(backend)
        self._unpack_header = self.backend.framing.unpack_header
        self._max_frame = max_frame_size or self.backend.framing.DEFAULT_MAX_FRAME_SIZE
        self.stats = _stats(self.backend)
        opts = zenohsession.parse_url(url, mode, connect, listen, config)
        self.key, ke = opts.key, _key_expr(zenoh, opts.key)
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.fifo = fifo
        # zenoh's callback threads queue (frame, source id, key) items here, or, with
        # fifo, the reader takes samples out of zenoh's own channel; the reader's side
        # of the accounting (last seq per source, skips, refusals) is the queue's too:
        # a compiled recv runs no Python code per message
        queue_type = self.backend.zenohq.ChannelQueue if fifo else self.backend.zenohq.SampleQueue
        self._queue = queue_type(url, queue_size, queue_bytes, zenoh.CongestionControl.BLOCK, self.stats,
                                 self._max_frame)
        self.recv = self._queue.recv  # type: ignore[method-assign]
        self._lock = self._queue.lock
        # (key, id hex) of each publisher gone and not yet replaced, oldest first (a dict
        # for its order), at most GONE_KEPT
        self._gone: dict[tuple[str, str], None] = {}
        self._session, self._share = zenohsession.acquire(opts)
        self._pid = os.getpid()
        try:
            handler = (zenoh.handlers.FifoChannel(queue_size) if fifo
                       else zenoh.handlers.Callback(self._queue.on_sample))
            if history and hasattr(zext, "declare_advanced_subscriber"):
                hist = zext.HistoryConfig(detect_late_publishers=True, max_samples=1)
                self._sub = zext.declare_advanced_subscriber(self._session, ke, handler, history=hist)
            else:
                # No late-joiner query wanted, or a zenoh-python before advanced pub/sub
                # (docs/zenoh.md): a plain subscriber, which receives from both kinds of publisher.
                self._sub = self._session.declare_subscriber(ke, handler)
            if fifo:
                # the channel's own handle: blocking in it does not hold the subscriber,
                # so close() can undeclare it, which wakes a reader waiting there
                self._queue.attach(self._sub.handler, zenoh.ZError)
            sub_id, key_hex = uuid.uuid4().hex, opts.key.encode().hex()
            self._token = self._session.liveliness().declare_token(f"{_TOKEN_ROOT}/{sub_id}/{key_hex}")
            flush_key = zenoh.KeyExpr(f"{_FLUSH_ROOT}/{sub_id}/{key_hex}")
            self._flushes = self._session.declare_queryable(
                flush_key, lambda query: query.reply(flush_key, b""))  # after every sample before it
            self._put_kind, self._zerror, self._ke = zenoh.SampleKind.PUT, zenoh.ZError, ke
            self._pubs = self._session.liveliness().declare_subscriber(
                f"{_PUB_ROOT}/**", _weakly(self._on_publisher), history=True)
            zenohsession.track_subscriber(self)
        except BaseException:
            zenohsession.release(self._share)
            raise

    def _on_publisher(self, sample: Any) -> None:
        # A zenoh callback thread: a publisher's token appeared or went. A new publisher's
        # token that appears after one on the same key went is that publisher restarted;
        # the same publisher's token coming back is its link coming back (a router
        # restarted, say), not a restart. A publisher replaced, or gone longer than
        # GONE_KEPT others, is forgotten (the queue's retire): the same id coming back
        # after that would count as a new publisher.
        try:
            _, pub_id, key_hex = str(sample.key_expr).rsplit("/", 2)
            key = bytes.fromhex(key_hex).decode()
            if not self._ke.intersects(key):
                return
        except (ValueError, self._zerror):
            return  # not a token of ours
        gone = self._gone
        with self._lock:
            if sample.kind != self._put_kind:
                gone[(key, pub_id)] = None
                if len(gone) > GONE_KEPT:
                    oldest = next(iter(gone))
                    del gone[oldest]
                    self._queue.retire(_ENCODING + oldest[1])
            elif (key, pub_id) in gone:
                del gone[(key, pub_id)]
            else:
                replaced = next((g for g in gone if g[0] == key), None)
                if replaced is not None:
                    del gone[replaced]
                    self._queue.retire(_ENCODING + replaced[1])
                    self.stats.restarts += 1

    def recv(self, timeout: float | None = None) -> Message:
        """The next message in arrival order (each publisher's in its seq order)."""
        return self._queue.recv(timeout)  # bound to the instance in __init__

    def latest(self, timeout: float | None = None) -> Message:
        """The newest queued message; the ones passed over count as skipped."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            items = self._queue.get_all(deadline, timeout)
            # Only headers are read to pick: the newest fresh frame that decodes is the
            # answer, and the fresh frames before it count as skipped, per publisher
            # (on its next message), so no gap reads as loss.
            fresh = []
            oldest: dict[Any, int] = {}
            for item in items:
                seq = self._news_seq(item[0], item[1])
                if seq is not None:
                    fresh.append(item)
                    oldest.setdefault(item[1], seq)
            # a publisher nothing was taken from yet: its count starts at its oldest frame
            # here, so what was dropped among those passed over and the one returned is lost
            seen = self._queue.seen
            for src, seq in oldest.items():
                if src not in seen:
                    self.stats.lost_through(src, seq - 1, 0, seq)
            pending = self._queue.pending_skip
            while fresh:
                payload, source, key = fresh.pop()
                older = Counter(item[1] for item in fresh)
                for src, k in older.items():
                    pending[src] = pending.get(src, 0) + k
                msg = self._queue.accept(payload, source, key)
                if msg is not None:
                    return msg
                for src, k in older.items():  # that one was bad after all: try the one before
                    pending[src] -= k

    def _news_seq(self, payload: bytes, source: Any) -> int | None:
        """The seq of a frame with a valid header and a seq its source has not handed
        out; None for any other."""
        try:
            seq = self._unpack_header(payload, 0, self._max_frame)[2]
        except FrameError:
            self._queue.bad_frames += 1
            return None
        last = self._queue.seen.get(source)
        if last is not None and seq <= last:
            self._queue.duplicates += 1
            return None
        return seq

    @property
    def overflows(self) -> int:
        """Samples pushed out of a full queue."""
        return self._queue.overflows

    @property
    def bad_frames(self) -> int:
        """Samples that were not datacomms frames."""
        return self._queue.bad_frames

    @property
    def duplicates(self) -> int:
        """Samples seen before (a cached value replayed to a late joiner that also came live)."""
        return self._queue.duplicates

    def _aio_waiter(self) -> _aio.Waiter:
        with self._lock:
            if self._queue.waiter is None:
                self._queue.waiter = _ZenohWaiter(self._queue)
            return self._queue.waiter

    def _halt(self, why: str) -> None:
        """zenohsession's, in a forked child: this copy is closed, and says why
        (its zenoh is the parent's: nothing would ever arrive). Not through
        close(): a thread of the parent may have held the queue's lock."""
        self._queue.why = why
        self._queue.closed = True

    def close(self) -> None:
        if self._queue.closed:
            return
        self._queue.close()
        if os.getpid() != self._pid:
            return  # a forked child's copy: zenoh is its parent's (zenohsession._forked)
        try:
            self._pubs.undeclare()
            self._token.undeclare()
            self._flushes.undeclare()
            self._sub.undeclare()
            if self.fifo:
                self._queue.drain()   # a zenoh thread may still wait for room in it
        finally:
            zenohsession.release(self._share)
