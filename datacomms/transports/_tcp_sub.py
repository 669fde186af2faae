"""The receive side of tcp:// (see transports/tcp.py for the protocol):
TcpSubscriber reads in the caller's thread, straight into large buffers
(the backend's streamreader.FrameReader, which also does the per-message
accounting per publisher epoch), and never runs a receive thread.
"""

from __future__ import annotations

import os
import select
import socket
import ssl as _ssl
import threading
import time
from collections import deque
from typing import Any

from .. import _aio
from .. import backend as _backend
from .. import url as _url
from ..errors import Closed, check_timeout, FrameError, Timeout
from ..message import Message
from ..pubsub import Subscriber
from ._links import Links
from ._net import check_periods, close_quietly, log, parse_address, resolve_key, url_of


# Publisher epochs whose seq state a subscriber keeps (publishers that come and
# go, each a new epoch; more: the oldest with no connection are forgotten).
_MAX_EPOCHS = 4096


class _In:
    """One connection a subscriber reads from. ``take``/``on_control``: its
    reader's take and the subscriber's handler of its control frames."""

    __slots__ = ("sock", "fd", "reader", "epoch", "where", "tls", "take", "on_control", "direct", "hung_up")

    def __init__(self, sock: Any, reader: Any, epoch: str, where: str, on_control: Any) -> None:
        self.sock, self.reader, self.epoch, self.where = sock, reader, epoch, where
        self.fd = sock.fileno()
        self.tls = isinstance(sock, _ssl.SSLSocket)
        self.take = reader.take
        self.on_control = on_control
        # a streamreader.DirectRecv: recv while c is the only connection; its
        # last_rx says when c last gave bytes
        self.direct: Any = None
        self.hung_up = False   # the Links thread saw the peer hang up (connect mode)


class _TcpWaiter(_aio.Waiter):
    """The event loop waits on the subscriber's own sockets and its new-connection
    pipe; recv(0) then reads them. It looks again at least every dead_after
    seconds, when a silent publisher counts as gone."""

    def __init__(self, sub: "TcpSubscriber") -> None:
        self.sub = sub
        self.slice = sub._dead_after

    def fds(self) -> tuple[int, ...]:
        return (self.sub._rfd, *(c.sock.fileno() for c in self.sub._conns))

    def arm(self) -> bool:
        # a TLS socket can hold decrypted bytes its descriptor does not show
        return not self.sub._ready and not any(c.tls and c.sock.pending() for c in self.sub._conns)

    closed = False

    def close(self) -> None:
        # after the subscriber's close(), once no event loop watches its descriptors any more
        # (at once when no coroutine sleeps, else when the sleeper has let go of them)
        self.closed = True
        self.sub._release_if_free()


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
        check_periods(heartbeat, dead_after)
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
        self._one: _In | None = None   # the connection when there is exactly one (recv's fast path)
        self._ready: deque[_In] = deque()
        self._last_seen: dict[str, int] = {}
        self._epochs: dict[str, None] = {}   # the epochs that sent a start frame, oldest first
        self._skip_pending: dict[str, int] = {}
        # (connection, seq) of heartbeats read while latest() took messages it records after
        self._newest: list[tuple[_In, int]] | None = None
        self._error: Exception | None = None
        self._gone: str | None = None
        self._gate = self._be.streamreader.Gate()   # closed, and how many threads are inside recv
        self._state = threading.Lock()
        self._released = False
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._links = Links(host, port, bind=bind, role="sub", framing=self._framing, epoch=None,
                                key=resolve_key(key), ssl=ssl, heartbeat=heartbeat,
                                handshake_timeout=handshake_timeout, backoff_max=backoff_max,
                                on_ready=self._attach, on_error=self._failed,
                                on_tick=self._watch if reconnect and not bind else None,
                                reader_type=self._be.streamreader.FrameReader)
        except BaseException:
            os.close(self._rfd)
            os.close(self._wfd)
            raise
        self.address = (host, self._links.port)
        self.url = url_of("tcp", host, self._links.port)

    # -- called from the Links thread ----------------------------------------

    def _attach(self, sock: Any, peer: dict, reader: Any, where: str) -> None:
        epoch = peer.get("epoch")
        if not isinstance(epoch, str):
            log.warning("datacomms tcp: dropping publisher %s: its hello has no epoch", where)
            close_quietly(sock)
            return
        reader.max_frame_size = self._max_frame
        reader.chunk = self._chunk
        reader.epoch = epoch
        reader.seen = self._last_seen
        reader.source = where   # every message of this connection carries this one string
        sock.setblocking(False)
        def on_control(msg: Any) -> None:
            self._control(c, msg)

        c = _In(sock, reader, epoch, where, on_control)
        # a TLS socket can hold decrypted bytes its descriptor does not show: no waiting on the fd there
        c.direct = self._be.streamreader.DirectRecv(
            reader, on_control, self.stats, self._recv_slow, fd=-1 if c.tls else c.fd, wake_fd=self._rfd,
            gate=self._gate, spin_ns=self._spin_ns, dead_after=self._dead_after,
            # a bound subscriber also waits for new publishers (the wake pipe)
            block=not self._bind)
        self._ready.append(c)
        self._error = None
        try:
            os.write(self._wfd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def _failed(self, exc: Exception) -> None:
        if not self._bind:
            self._error = exc
            # a recv already waiting raises it now, not after its timeout or dead_after
            try:
                os.write(self._wfd, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _watch(self) -> None:
        """Connect mode, on the Links thread every tick: the publisher followed
        hung up (closed, killed, or its host dropped by keepalive) while nobody
        was in recv/latest to read the EOF. A new connection is made now, so
        a restarted publisher's wait_for_subscribers sees this subscriber; the
        old one stays until recv has read what it still holds."""
        live = [c for c in (*self._conns, *self._ready) if not c.hung_up]
        if len(live) != 1 or self._closed or "_links" not in vars(self):
            # none: _lose asked for a new one; two: the new one is here; no
            # _links: the first connection came before Links() returned
            return
        c = live[0]
        fd = c.sock.fileno()
        if fd < 0:
            return
        p = select.poll()
        p.register(fd, select.POLLRDHUP)
        if p.poll(0):   # POLLRDHUP, or POLLHUP/POLLERR, which poll always reports
            c.hung_up = True
            self._links.kick()

    # -- the receive side (the caller's thread) -------------------------------

    @property
    def _closed(self) -> bool:
        return bool(self._gate.closed)

    @property
    def connected(self) -> int:
        """How many publishers this subscriber is reading from now."""
        return sum(not c.hung_up for c in (*self._conns, *self._ready))

    def _conns_changed(self) -> None:
        """Keeps _one, and recv bound to its DirectRecv while it is the one
        connection (not while messages of its epoch that latest() skipped are
        still to account; another epoch's wait for that epoch's next connection)."""
        one = self._conns[0] if len(self._conns) == 1 and not self._closed else None
        if one is not None and one.epoch in self._skip_pending:
            one = None
        old = self._one
        if old is not None and old is not one:
            # a recv kept from while old was the one (r = sub.recv) took its reader
            # and fd: out-of-order messages, another connection's bytes on a reused fd
            old.direct.retired = True
        if one is not None:
            one.direct.retired = False
        self._one = one
        if one is not None:
            self.recv = one.direct.recv  # type: ignore[method-assign]
        else:
            vars(self).pop("recv", None)

    def _lose(self, c: _In, why: str, level: int = 20) -> None:
        if c not in self._conns:
            return
        self._conns.remove(c)
        self._conns_changed()
        close_quietly(c.sock)
        if self._closed:
            return
        log.log(level, "datacomms tcp: publisher %s lost: %s", c.where, why)
        if not self._bind:
            if self._reconnect:
                if not self._conns and not self._ready:   # else _watch made a new one already
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
                self._epochs[c.epoch] = None
            c.reader.expect = nxt
        elif kind in ("hb", "bye"):
            nxt = msg.get("next_seq")
            if type(nxt) is int and 0 < nxt < 1 << 63:
                self._sent_through(c, nxt - 1)
            if kind == "bye":
                raise Closed("publisher closed")
        elif kind == "error":
            raise FrameError(f"peer reported an error: {msg.get('reason')}")
        # anything unknown (a newer peer) only proves the peer is alive

    def _sent_through(self, c: _In, seq: int) -> None:
        """c's publisher had numbered every seq up to seq before the heartbeat (or
        bye) that says so, and queued for c ahead of it all it did not drop for c:
        what of them never came is lost (drop mode dropped it for this subscriber,
        or a block-mode send timed out on it), counted now, not at the next message.
        While latest() still has to record what it took, this waits for that."""
        if self._newest is not None:
            self._newest.append((c, seq))
            return
        taken = self._last_seen.get(c.epoch)   # delivered, or passed over by latest()
        if taken is None and c.reader.expect is None or taken is not None and seq <= taken:
            return
        # another publisher's messages latest() passed over are counted skipped already
        pending = self._skip_pending.pop(c.epoch, 0)
        # nothing taken yet: counted from where this connection started
        self.stats.lost_through(c.epoch, seq, pending, c.reader.expect)
        self._last_seen[c.epoch] = seq
        c.reader.expect = None
        if pending:
            self._conns_changed()

    def _forget_old_epochs(self) -> None:
        """Bounds what is kept per publisher epoch: a listening subscriber whose
        publishers came and went (each instance a new epoch) kept every epoch's
        last seq for ever. Past _MAX_EPOCHS the oldest half that no connection
        uses is forgotten, as if never seen (one may still come back: it is
        then a new publisher)."""
        if len(self._epochs) < _MAX_EPOCHS and len(self._last_seen) < _MAX_EPOCHS:
            return
        live = {c.epoch for c in self._conns} | {c.epoch for c in tuple(self._ready)}
        old = [e for e in dict.fromkeys([*self._epochs, *self._last_seen]) if e not in live]
        for epoch in old[:max(0, len(old) - _MAX_EPOCHS // 2)]:
            self._epochs.pop(epoch, None)
            self._last_seen.pop(epoch, None)
            self._skip_pending.pop(epoch, None)
            self.stats.forget(epoch)

    def _read(self, c: _In) -> int:
        """Reads what is there from c: the byte count (0: nothing yet), -1 when c was lost."""
        got = 0
        try:
            while True:
                n = c.reader.fill(c.sock) if c.tls else c.reader.fill_fd(c.fd)
                if n < 0:
                    return got
                if n == 0:
                    self._lose(c, "connection closed by peer")
                    return -1
                got += n
                c.direct.last_rx = time.monotonic()
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
            # on a machine with more runnable threads than cores, the peer we
            # wait for may need this core: let it run
            os.sched_yield()
        return False

    def _next(self, timeout: float | None, newest: bool, said: float | None = None) -> Message:
        """The next (newest: the newest) message within timeout; said: the
        timeout the caller gave, for the error message."""
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        looked = False  # timeout=0 still reads what the sockets hold before giving up
        while True:
            if self._closed:
                raise Closed("subscriber is closed")
            if self._gone is not None:
                raise Closed(self._gone)
            if self._ready:
                while self._ready:
                    self._conns.append(self._ready.popleft())
                self._forget_old_epochs()
                self._conns_changed()
            if newest:
                for c in list(self._conns):
                    self._read(c)
                self._newest = []
            try:
                got = self._take(newest)
            finally:
                tails, self._newest = self._newest, None
            for c, seq in tails or ():
                self._sent_through(c, seq)
            if got is not None:
                return got
            if self._gone is not None:
                continue
            if self._error is not None and not self._conns:
                err, self._error = self._error, None
                raise err
            now = time.monotonic()
            wait = self._dead_after
            fresh = False
            for c in list(self._conns):
                idle = now - c.direct.last_rx
                if idle > self._dead_after and self._read(c) > 0:
                    fresh = True   # silent only because nobody was reading: it has sent since
                    continue
                if c not in self._conns:
                    continue
                if idle > self._dead_after:
                    self._lose(c, f"nothing heard for {idle:.2f} s (no data, no heartbeat)", 30)
                else:
                    wait = min(wait, self._dead_after - idle)
            if fresh:
                continue   # what was just read may hold a message: take it before waiting
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    if looked:
                        why = self._links.failure if not self._conns and not self._ready else None
                        # a subscriber that cannot connect says so, not only "no message"
                        raise Timeout(f"no message within {timeout if said is None else said} s"
                                      + (f" (not connected: {why})" if why else ""))
                    left = 0.0
                wait = min(wait, left)
            looked = True
            if self._spin_ns and self._conns and self._spin():
                continue
            self._wait(wait)

    def _take(self, newest: bool) -> Message | None:
        """The next message buffered on the connections (newest: the newest of
        all, the others counted skipped), recorded in stats; None when none is."""
        best: tuple[_In, Message] | None = None
        passed: dict[str, int] = {}
        for c in list(self._conns):
            try:
                while True:
                    got = c.take(c.on_control, self.stats, False)
                    if got is None:
                        # a replaced publisher's connection: all it still holds is in
                        # its socket, and comes before the next one's messages
                        if c.hung_up and not newest and self._read(c) > 0:
                            continue
                        break
                    if best is None:
                        best = (c, got)
                    elif best[0] is c or got.timestamp_ns >= best[1].timestamp_ns:
                        # newest: a connection's later message, or another publisher's sent
                        # later (by the publishers' clocks), not merely read later
                        passed[best[0].epoch] = passed.get(best[0].epoch, 0) + 1
                        best = (c, got)
                    else:
                        passed[c.epoch] = passed.get(c.epoch, 0) + 1
                    if not newest:
                        break
            except (FrameError, Closed) as exc:
                self._lose(c, str(exc), 20 if isinstance(exc, Closed) else 30)
            if best is not None and not newest:
                break
        if best is not None:
            c, msg = best
            for ep, k in passed.items():
                if ep != c.epoch:
                    # another publisher's messages passed over count as skipped now (it
                    # may never send again); its next message, if any, must not count
                    # them lost, which is what _skip_pending remembers
                    self._skip_pending[ep] = self._skip_pending.get(ep, 0) + k
                    self.stats.skipped += k
            pending = self._skip_pending.pop(c.epoch, 0)
            self.stats.skipped -= pending   # counted when passed over; record() adds them again
            self.stats.record(msg.seq, msg.timestamp_ns, time.time_ns(), passed.get(c.epoch, 0) + pending,
                              c.epoch)
            if newest:
                self._conns_changed()   # _skip_pending may have changed
            return msg
        return None

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
        for fd, _ in p.poll(seconds * 1000 + 0.5 if seconds > 0 else 0):
            if fd == self._rfd:
                self._drain_wake()
            elif fds[fd] in self._conns:
                self._read(fds[fd])

    def _aio_waiter(self) -> _aio.Waiter:
        w = self.__dict__.get("_aio_w")
        if w is None:
            w = self._aio_w = _TcpWaiter(self)
        return w

    # close() may come from another thread while recv waits: it only marks the
    # subscriber closed and wakes the waiter, and the last one out of the gate
    # releases everything
    def _enter(self) -> None:
        if not self._gate.enter():
            if not self._gate.busy:
                self._release_if_free()   # a DirectRecv waiting on the fd was the last one in
            raise Closed("subscriber is closed")

    def _leave(self) -> None:
        if self._gate.leave():
            self._release_if_free()

    def recv(self, timeout: float | None = None) -> Message:
        # While one connection is followed, the instance's recv is that
        # connection's DirectRecv.recv (see _conns_changed), which takes a
        # buffered message, or waits on the socket and takes one, in one
        # call; this is only reached otherwise.
        c = self._one
        if c is not None:
            return c.direct.recv(timeout)
        return self._recv_slow(timeout, None)

    def _recv_slow(self, timeout: float | None, error: Exception | None, deadline: float | None = None) -> Message:
        """recv when DirectRecv cannot go on by itself: error is what the
        reader raised on the one connection, if anything; deadline
        (time.monotonic()) when part of timeout is already spent."""
        c = self._one
        if error is not None and c is not None:
            self._lose(c, str(error), 20 if isinstance(error, Closed) else 30)
        self._enter()
        try:
            left = timeout if deadline is None else max(0.0, deadline - time.monotonic())
            return self._next(left, newest=False, said=timeout)
        finally:
            self._leave()

    def _drain_wake(self) -> None:
        try:
            os.read(self._rfd, 4096)
        except (BlockingIOError, OSError):
            pass

    def latest(self, timeout: float | None = None) -> Message:
        self._enter()
        try:
            return self._next(timeout, newest=True)
        finally:
            self._leave()

    def close(self) -> None:
        waiting = self._gate.close()
        if waiting is None:
            return
        self._one = None
        vars(self).pop("recv", None)
        w = self.__dict__.get("_aio_w")
        if w is not None:
            # a coroutine waiting in arecv looks again and gets dc.Closed; while its event loop
            # watches the descriptors, they stay open (closed, their numbers could go to new
            # descriptors that loop would then stop watching): _TcpWaiter.close releases them
            w.shutdown()
        self._links.close()      # joins its thread: nothing is attached after this
        self._links_closed = True
        if not waiting:
            self._release_if_free()
            return
        # Wake the waiters, unless the last of them has left and released
        # everything meanwhile (then these descriptors may belong to someone else).
        with self._state:
            if self._released:
                return
            os.write(self._wfd, b"\0")
            for c in list(self._conns):
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._release_if_free()   # when they all left meanwhile

    _links_closed = False

    def _release_if_free(self) -> None:
        """Releases the descriptors once closed and nobody uses them: no thread inside recv,
        the connecting thread joined, and no event loop watching them (_TcpWaiter.close)."""
        w = self.__dict__.get("_aio_w")
        if self._gate.busy or not self._links_closed or (w is not None and not w.closed):
            return   # the last of them to let go calls this again
        self._release()

    def _release(self) -> None:
        with self._state:
            if self._released:
                return
            self._released = True
        for c in self._conns + list(self._ready):
            close_quietly(c.sock)
        self._conns.clear()
        self._one = None
        self._ready.clear()
        os.close(self._rfd)
        os.close(self._wfd)
