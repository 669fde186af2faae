"""tcp://HOST:PORT: persistent TCP connections carrying datacomms frames.

The publisher listens and subscribers connect (``bind=`` swaps the roles: a
listening subscriber takes several publishers and keeps their sequences
apart). ``send`` puts the frame on every subscriber's bounded queue and
returns; the backend's send loop writes the queues from a background thread
(sendloop.SendLoop). A subscriber reads in the calling thread, straight into
large buffers, and hands arrays out as views of them.

Every connection starts with a handshake (_net.handshake: hellos with the
publisher's epoch, optional HMAC authentication, optional TLS), then the
publisher's ``start`` frame with its next seq, so a subscriber counts exactly
what it missed while it was away; a restarted publisher is a new epoch.
Idle publishers send heartbeats; a subscriber that hears nothing for
``dead_after`` seconds drops the connection (and reconnects when it made it).
"""

from __future__ import annotations

import os
import select
import ssl as _ssl
import threading
import time
from collections import deque
from typing import Any

from .. import backend as _backend
from .. import url as _url
from ..errors import Closed, DataCommsError, FrameError, Timeout
from ..message import Message
from ..pubsub import Publisher, Subscriber
from ._links import Links
from ._net import HandshakeError, close_quietly, control, log, new_epoch, parse_address, resolve_key

__all__ = ["TcpPublisher", "TcpSubscriber", "HandshakeError"]


def _sendloop_module(be: Any, ssl: _ssl.SSLContext | None) -> Any:
    # the compiled loop writes raw descriptors; TLS records are made by Python's ssl module
    return _backend.get("python").sendloop if ssl is not None else be.sendloop


class TcpPublisher(Publisher):
    """Publisher over TCP. ``on_full``: "drop" (a full subscriber queue drops the
    message; that subscriber sees the gap) or "block" (``send`` waits up to its
    timeout). Queues hold up to ``queue_messages`` frames and ``queue_bytes``."""

    def __init__(self, url: str, *, bind: bool = True, on_full: str = "drop", queue_messages: int = 4096,
                 queue_bytes: int = 256 << 20, key: bytes | str | None = None,
                 ssl: _ssl.SSLContext | None = None, heartbeat: float = 0.25, linger: float = 2.0,
                 handshake_timeout: float = 2.0, backoff_max: float = 1.0, backend: Any = None) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        host, port = parse_address(_url.parse(url).rest, url)
        self._be = _backend.get(backend)
        self._framing = self._be.framing
        self._block = on_full == "block"
        self._qm, self._qb = queue_messages, queue_bytes
        self._heartbeat, self._linger = heartbeat, linger
        self.epoch = new_epoch()
        self._seq = 0
        self._lock = threading.Lock()        # seq order, and start frames before data
        self._subs = threading.Condition()   # subscriber count changes
        self._conns: dict[int, tuple[Any, str]] = {}
        self._last_send = 0.0
        self._closed = False
        self._loop = _sendloop_module(self._be, ssl).SendLoop()
        try:
            self._links = Links(host, port, bind=bind, role="pub", framing=self._framing, epoch=self.epoch,
                                key=resolve_key(key), ssl=ssl, heartbeat=heartbeat,
                                handshake_timeout=handshake_timeout, backoff_max=backoff_max,
                                on_ready=self._attach, on_error=lambda exc: None, on_tick=self._tick,
                                tick=heartbeat / 2)
        except BaseException:
            self._loop.close()
            raise
        self.address = (host, self._links.port)
        self.url = f"tcp://{host}:{self._links.port}" if ":" not in host else f"tcp://[{host}]:{self._links.port}"

    def _attach(self, sock: Any, peer: dict, reader: Any, where: str) -> None:
        with self._lock:
            if self._closed:
                close_quietly(sock)
                return
            cid = self._loop.add(sock, self._qm, self._qb, self._block)
            # first on this queue, before any data: the subscriber's loss count starts here
            self._loop.send(control(self._framing, {"dc": "start", "next_seq": self._seq, "epoch": self.epoch}),
                            cid, 0)
            self._conns[cid] = (sock, where)
        log.info("datacomms tcp: subscriber %s attached", where)
        with self._subs:
            self._subs.notify_all()

    def _reap(self) -> None:
        dead = self._loop.dead()
        if not dead:
            return
        for cid in dead:
            info = self._loop.info(cid)
            self._loop.remove(cid)
            entry = self._conns.pop(cid, None)
            if entry is not None:
                close_quietly(entry[0])
                why = os.strerror(info[5]) if info and info[5] else "peer closed the connection"
                log.info("datacomms tcp: subscriber %s gone: %s", entry[1], why)
        if not self._links.bind:
            self._links.kick()
        with self._subs:
            self._subs.notify_all()

    def _tick(self) -> None:
        # never wait for the lock here: a send blocked on one full queue holds it,
        # and the other subscribers still need their heartbeats meanwhile
        if self._lock.acquire(blocking=False):
            try:
                self._reap()
            finally:
                self._lock.release()
        if self._conns and time.monotonic() - self._last_send >= self._heartbeat:
            self._last_send = time.monotonic()
            self._loop.send(control(self._framing, {"dc": "hb"}), -1, 0)

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Queues data for every attached subscriber and returns its seq. In block
        mode waits up to timeout for room (then dc.Timeout; the seq is used)."""
        with self._lock:
            if self._closed:
                raise Closed("publisher is closed")
            seq = self._seq
            parts, _ = self._framing.encode(data, seq, time.time_ns())
            self._seq = seq + 1
            self._loop.send(parts, -1, timeout)
        self._last_send = time.monotonic()
        return seq

    @property
    def subscribers(self) -> int:
        if self._lock.acquire(blocking=False):
            try:
                self._reap()
            finally:
                self._lock.release()
        return len(self._conns) - len(self._loop.dead())

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            have = self.subscribers
            if have >= n:
                return have
            if self._closed:
                raise Closed("publisher is closed")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(f"{have} of {n} subscribers attached after {timeout} s")
            with self._subs:
                self._subs.wait(0.05 if left is None else min(left, 0.05))

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued frame is written to the kernel; False on timeout."""
        return self._loop.flush(-1, timeout)

    def close(self) -> None:
        """Stops accepting, writes what is queued (up to ``linger`` seconds), says bye, closes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._links.close()
        try:
            self._loop.send(control(self._framing, {"dc": "bye"}), -1, 0)
        except Closed:
            pass
        self._loop.flush(-1, self._linger)
        self._loop.close()
        for sock, _ in self._conns.values():
            close_quietly(sock)
        self._conns.clear()
        with self._subs:
            self._subs.notify_all()


class _In:
    """One connection a subscriber reads from."""

    __slots__ = ("sock", "reader", "epoch", "where", "last_rx", "expect", "tls")

    def __init__(self, sock: Any, reader: Any, epoch: str, where: str) -> None:
        self.sock, self.reader, self.epoch, self.where = sock, reader, epoch, where
        self.last_rx = time.monotonic()
        self.expect: int | None = None
        self.tls = isinstance(sock, _ssl.SSLSocket)


class TcpSubscriber(Subscriber):
    """Subscriber over TCP. Connects (or listens with ``bind=True``), reconnects
    by itself with capped backoff unless ``reconnect=False`` (then a lost
    publisher raises dc.Closed). A publisher silent for ``dead_after`` seconds
    (default 4 heartbeats, at least 1 s) counts as gone. ``spin_us`` > 0 makes
    a waiting recv busy-poll that long before it sleeps: lower latency for a
    core's worth of CPU while waiting."""

    def __init__(self, url: str, *, bind: bool = False, key: bytes | str | None = None,
                 ssl: _ssl.SSLContext | None = None, heartbeat: float = 0.25, dead_after: float | None = None,
                 reconnect: bool = True, backoff_max: float = 1.0, handshake_timeout: float = 2.0,
                 max_frame_size: int | None = None, recv_buffer: int = 1 << 20, spin_us: float = 0.0,
                 backend: Any = None) -> None:
        host, port = parse_address(_url.parse(url).rest, url)
        self._be = _backend.get(backend)
        self._framing = self._be.framing
        self.stats = self._be.stats.Stats()
        self._max_frame = max_frame_size or self._framing.DEFAULT_MAX_FRAME_SIZE
        self._chunk = recv_buffer
        self._spin_ns = int(spin_us * 1000)
        self._dead_after = dead_after if dead_after is not None else max(1.0, 4 * heartbeat)
        self._reconnect = reconnect
        self._bind = bind
        self._conns: list[_In] = []
        self._ready: deque[_In] = deque()
        self._last_seen: dict[str, int] = {}
        self._epochs: set[str] = set()
        self._skip_pending: dict[str, int] = {}
        self._error: Exception | None = None
        self._gone: str | None = None
        self._closed = False
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._links = Links(host, port, bind=bind, role="sub", framing=self._framing, epoch=None,
                                key=resolve_key(key), ssl=ssl, heartbeat=heartbeat,
                                handshake_timeout=handshake_timeout, backoff_max=backoff_max,
                                on_ready=self._attach, on_error=self._failed)
        except BaseException:
            os.close(self._rfd)
            os.close(self._wfd)
            raise
        self.address = (host, self._links.port)
        self.url = f"tcp://{host}:{self._links.port}" if ":" not in host else f"tcp://[{host}]:{self._links.port}"

    # -- called from the Links thread ----------------------------------------

    def _attach(self, sock: Any, peer: dict, reader: Any, where: str) -> None:
        epoch = peer.get("epoch")
        if not isinstance(epoch, str):
            log.warning("datacomms tcp: dropping publisher %s: its hello has no epoch", where)
            close_quietly(sock)
            return
        reader.max_frame_size = self._max_frame
        reader.chunk = self._chunk
        sock.setblocking(False)
        self._ready.append(_In(sock, reader, epoch, where))
        self._error = None
        try:
            os.write(self._wfd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def _failed(self, exc: Exception) -> None:
        if not self._bind:
            self._error = exc

    # -- the receive side (the caller's thread) -------------------------------

    @property
    def connected(self) -> int:
        """How many publishers this subscriber is reading from now."""
        return len(self._conns) + len(self._ready)

    def _lose(self, c: _In, why: str, level: int = 20) -> None:
        log.log(level, "datacomms tcp: publisher %s lost: %s", c.where, why)
        close_quietly(c.sock)
        self._conns.remove(c)
        if not self._bind:
            if self._reconnect:
                self._links.kick()
            else:
                self._gone = f"publisher {c.where} is gone: {why}"

    def _control(self, c: _In, msg: Any) -> None:
        kind = msg.get("dc") if isinstance(msg, dict) else None
        if kind == "start":
            nxt = msg.get("next_seq")
            if not isinstance(nxt, int) or nxt < 0:
                raise FrameError(f"bad start frame {str(msg)[:80]}")
            if c.epoch not in self._epochs:
                # a new publisher epoch; in connect mode the one we follow was replaced
                # (restarted), and everything it sent before we got here was missed
                if self._epochs and not self._bind:
                    self.stats.add_lost(nxt)
                    self.stats.restarts += 1
                self._epochs.add(c.epoch)
            c.expect = nxt
        elif kind == "bye":
            raise Closed("publisher closed")
        elif kind == "error":
            raise FrameError(f"peer reported an error: {msg.get('reason')}")
        # "hb" and anything unknown (a newer peer) only prove the peer is alive

    def _take(self, c: _In) -> tuple[Any, int, int] | None:
        """The next data frame buffered on c (control frames handled), or None."""
        while True:
            f = c.reader.next()
            if f is None:
                return None
            data, seq, ts, flags = f
            if flags & 1:
                self._control(c, data)
                continue
            last = self._last_seen.get(c.epoch)
            if last is not None and seq <= last:
                continue   # already delivered on an earlier connection of this epoch
            if c.expect is not None:
                if last is None and seq > c.expect:
                    self.stats.add_lost(seq - c.expect)
                c.expect = None
            self._last_seen[c.epoch] = seq
            return data, seq, ts

    def _read(self, c: _In) -> int:
        """Reads what is there from c: the byte count (0: nothing yet), -1 when c was lost."""
        got = 0
        try:
            while True:
                n = c.reader.fill(c.sock)
                if n == 0:
                    self._lose(c, "connection closed by peer")
                    return -1
                got += n
                c.last_rx = time.monotonic()
                if not (c.tls and c.sock.pending()):
                    return got
        except (BlockingIOError, InterruptedError, _ssl.SSLWantReadError, _ssl.SSLWantWriteError):
            return got
        except OSError as exc:
            self._lose(c, f"read failed: {exc}")
            return -1

    def _spin(self) -> bool:
        """Busy-polls every connection for up to spin_us (no sleep, so no
        wake-up latency); True when something arrived or a connection changed."""
        end = time.perf_counter_ns() + self._spin_ns
        while time.perf_counter_ns() < end:
            if self._ready:
                return True
            for c in self._conns:
                if self._read(c):
                    return True
        return False

    def _next(self, timeout: float | None, newest: bool) -> Message:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._closed:
                raise Closed("subscriber is closed")
            if self._gone is not None:
                raise Closed(self._gone)
            while self._ready:
                self._conns.append(self._ready.popleft())
            if newest:
                for c in list(self._conns):
                    self._read(c)
            best: tuple[_In, tuple[Any, int, int]] | None = None
            passed: dict[str, int] = {}
            for c in list(self._conns):
                try:
                    while True:
                        got = self._take(c)
                        if got is None:
                            break
                        if best is not None:
                            passed[best[0].epoch] = passed.get(best[0].epoch, 0) + 1
                        best = (c, got)
                        if not newest:
                            break
                except (FrameError, Closed) as exc:
                    self._lose(c, str(exc), 20 if isinstance(exc, Closed) else 30)
                if best is not None and not newest:
                    break
            if best is not None:
                c, (data, seq, ts) = best
                for ep, k in passed.items():
                    if ep != c.epoch:
                        self._skip_pending[ep] = self._skip_pending.get(ep, 0) + k
                skipped = passed.get(c.epoch, 0) + self._skip_pending.pop(c.epoch, 0)
                self.stats.record(seq, ts, time.time_ns(), skipped, c.epoch)
                return Message(data, seq, ts)
            if self._gone is not None:
                continue
            if self._error is not None and not self._conns:
                err, self._error = self._error, None
                raise err
            now = time.monotonic()
            wait = self._dead_after
            for c in list(self._conns):
                idle = now - c.last_rx
                if idle > self._dead_after and self._read(c) > 0:
                    continue   # silent only because nobody was reading: it has sent since
                if c not in self._conns:
                    continue
                if idle > self._dead_after:
                    self._lose(c, f"nothing heard for {idle:.2f} s (no data, no heartbeat)", 30)
                else:
                    wait = min(wait, self._dead_after - idle)
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    raise Timeout(f"no message within {timeout} s")
                wait = min(wait, left)
            if self._spin_ns and self._conns and self._spin():
                continue
            self._wait(wait)

    def _wait(self, seconds: float) -> None:
        """Waits (GIL released) until a connection is readable, a new one is ready, or seconds pass."""
        p = select.poll()
        p.register(self._rfd, select.POLLIN)
        fds = {}
        for c in self._conns:
            if c.tls and c.sock.pending():
                self._read(c)
                return
            fds[c.sock.fileno()] = c
            p.register(c.sock.fileno(), select.POLLIN)
        for fd, _ in p.poll(max(0.0, seconds) * 1000 + 0.5):
            if fd == self._rfd:
                try:
                    os.read(self._rfd, 4096)
                except BlockingIOError:
                    pass
            elif fds[fd] in self._conns:
                self._read(fds[fd])

    def recv(self, timeout: float | None = None) -> Message:
        # fast path: one publisher and a frame already buffered
        if len(self._conns) == 1 and not self._ready and self._gone is None:
            c = self._conns[0]
            try:
                got = self._take(c)
            except (FrameError, Closed) as exc:
                self._lose(c, str(exc), 20 if isinstance(exc, Closed) else 30)
                got = None
            if got is not None:
                data, seq, ts = got
                skipped = self._skip_pending.pop(c.epoch, 0) if self._skip_pending else 0
                self.stats.record(seq, ts, time.time_ns(), skipped, c.epoch)
                return Message(data, seq, ts)
        return self._next(timeout, newest=False)

    def latest(self, timeout: float | None = None) -> Message:
        return self._next(timeout, newest=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._links.close()
        for c in self._conns + list(self._ready):
            close_quietly(c.sock)
        self._conns.clear()
        self._ready.clear()
        os.close(self._rfd)
        os.close(self._wfd)
