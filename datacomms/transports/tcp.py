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
import ssl as _ssl
import threading
import time
from typing import Any

from .. import _aio
from .. import backend as _backend
from .. import url as _url
from ..errors import Closed, check_timeout
from ..pubsub import Publisher
from ._links import Links
from ._net import (
    wait_for_count, HandshakeError, abort, check_periods, close_quietly, control, log, new_epoch, parse_address,
    peer_silence, resolve_key, url_of,
)
from ._tcp_sub import TcpSubscriber

__all__ = ["TcpPublisher", "TcpSubscriber", "HandshakeError"]


def _sendloop_module(be: Any, ssl: _ssl.SSLContext | None) -> Any:
    # the compiled loop writes raw descriptors; TLS records are made by Python's ssl module
    return _backend.get("python").sendloop if ssl is not None else be.sendloop


class TcpPublisher(Publisher):
    """Publisher over TCP. ``on_full``: "drop" (a full subscriber queue drops the
    message; that subscriber sees the gap) or "block" (``send`` waits up to its
    timeout). Queues hold up to ``queue_messages`` frames and ``queue_bytes``.
    A subscriber whose host acknowledges nothing for ``peer_timeout`` seconds
    while data waits for it is dropped; one that only stopped reading is not."""

    def __init__(self, url: str, *, bind: bool = True, on_full: str = "drop", queue_messages: int = 4096,
                 queue_bytes: int = 256 << 20, key: bytes | str | None = None,
                 ssl: _ssl.SSLContext | None = None, heartbeat: float = 0.25, linger: float = 2.0,
                 handshake_timeout: float = 2.0, backoff_max: float = 1.0, peer_timeout: float = 30.0,
                 backend: Any = None) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        check_periods(heartbeat)
        if not peer_timeout > 0:
            raise ValueError(f"peer_timeout must be a positive number of seconds, not {peer_timeout!r}")
        if not (queue_messages >= 1 and queue_bytes >= 1):   # 0 was taken as 1, and dropped
            raise ValueError(f"queue_messages and queue_bytes must be at least 1, not {queue_messages!r} and "
                             f"{queue_bytes!r}")
        host, port = parse_address(_url.parse(url).rest, url)
        self._be = _backend.get(backend)
        self._framing = self._be.framing
        self._block = on_full == "block"
        self._qm, self._qb = queue_messages, queue_bytes
        self._heartbeat, self._linger, self._peer_timeout = heartbeat, linger, peer_timeout
        self.epoch = new_epoch()
        self._lock = threading.Lock()        # reaping dead connections
        self._subs = threading.Condition()   # subscriber count changes
        self._conns: dict[int, tuple[Any, str]] = {}
        self._cut: dict[int, str] = {}       # connections aborted here, and why
        self._probed = 0.0                   # when the subscribers' hosts were last checked
        self._last_send = 0.0                # when seq last moved or a heartbeat went out
        self._hb_seq = 0
        self._closed = False
        self._aio_w: _aio.FdWaiter | None = None   # what a block-mode asend sleeps on
        self._loop = _sendloop_module(self._be, ssl).SendLoop()
        # the loop numbers and queues each message in one call (it keeps seq order
        # and puts each start frame before the data it counts)
        self.send = self._loop.publish  # type: ignore[method-assign]
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
        self.url = url_of("tcp", host, self._links.port)

    def _attach(self, sock: Any, peer: dict, reader: Any, where: str) -> None:
        with self._lock:
            if self._closed:
                close_quietly(sock)
                return
            # first on this queue, before any data: the subscriber's loss count starts here
            cid = self._loop.add(sock, self._qm, self._qb, self._block, lambda nxt: control(
                self._framing, {"dc": "start", "next_seq": nxt, "epoch": self.epoch}))
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
                why = self._cut.pop(cid, None) or (
                    os.strerror(info[5]) if info and info[5] else "peer closed the connection")
                log.info("datacomms tcp: subscriber %s gone: %s", entry[1], why)
        if not self._links.bind:
            self._links.kick()
        with self._subs:
            self._subs.notify_all()

    def _tick(self) -> None:
        # never wait for the lock here: an attach waiting for the loop behind a send
        # blocked on one full queue holds it, and the others still need heartbeats
        if self._lock.acquire(blocking=False):
            try:
                self._reap()
            finally:
                self._lock.release()
        now, seq = time.monotonic(), self._loop.next_seq
        if now - self._probed >= 1.0:
            self._probed = now
            self._check_peers()
        # data counts as a heartbeat: send one only when seq stood still for a heartbeat period
        if seq != self._hb_seq:
            self._hb_seq, self._last_send = seq, now
        elif self._conns and now - self._last_send >= self._heartbeat:
            self._last_send = now
            # with the next seq: a subscriber counts what was dropped for it at once
            self._loop.send(control(self._framing, {"dc": "hb", "next_seq": seq}), -1, 0)

    def _check_peers(self) -> None:
        """Aborts the connection of a subscriber whose host stopped acknowledging
        (the send loop then reports it dead). Not the kernel's TCP_USER_TIMEOUT:
        that also cut off a subscriber that had only paused for that long."""
        for cid, (sock, where) in list(self._conns.items()):
            if cid in self._cut:
                continue
            silent = peer_silence(sock, self._peer_timeout)
            if silent is not None:
                self._cut[cid] = f"its host acknowledged nothing for {silent:.1f} s"
                log.warning("datacomms tcp: dropping subscriber %s: %s", where, self._cut[cid])
                abort(sock)

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Queues data for every attached subscriber and returns its seq. In block
        mode waits up to timeout for room (then dc.Timeout; the seq is used).
        (__init__ binds send to the send loop's publish, which does exactly this.)"""
        check_timeout(timeout)
        return self._loop.publish(data, timeout)

    def _send_may_wait(self) -> bool:
        return self._block

    def _send_nowait(self, data: Any) -> int | None:
        return self._loop.publish_nowait(data)

    def _aio_send_waiter(self) -> _aio.Waiter:
        # the send loop makes its room descriptor readable once a queue that was
        # full may have room (or a connection went, or the publisher closed)
        if self._closed:
            raise Closed("publisher is closed")
        if self._aio_w is None:
            self._aio_w = _aio.FdWaiter(self._loop.room_fd)
        return self._aio_w

    @property
    def subscribers(self) -> int:
        if self._lock.acquire(blocking=False):
            try:
                self._reap()
            finally:
                self._lock.release()
        # the connections attached here and not dead in the loop (the loop can hold one
        # an attach in progress has not entered here yet, and it may already be dead)
        dead = set(self._loop.dead())
        return sum(1 for cid in list(self._conns) if cid not in dead)

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        def pause(seconds: float) -> None:
            with self._subs:
                self._subs.wait(seconds)

        return wait_for_count(lambda: self.subscribers, n, timeout, lambda: self._closed, pause, "attached")

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued frame is written to the kernel; False on timeout."""
        return self._loop.flush(-1, timeout)

    def close(self) -> None:
        """Stops accepting, writes what is queued (up to ``linger`` seconds), says bye, closes."""
        # not under self._lock: a send blocked on a full queue holds it, and
        # closing the loop is what releases that send
        if self._closed:
            return
        self._closed = True
        self._loop.seal()
        if self._aio_w is not None:
            self._aio_w.shutdown()
        self._links.close()
        try:
            self._loop.send(control(self._framing, {"dc": "bye", "next_seq": self._loop.next_seq}), -1, 0)
        except Closed:
            pass
        self._loop.flush(-1, self._linger)
        self._loop.close()
        with self._lock:
            pass   # a send released by the closed loop has left
        for sock, _ in self._conns.values():
            close_quietly(sock)
        self._conns.clear()
        with self._subs:
            self._subs.notify_all()
