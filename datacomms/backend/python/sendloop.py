"""The send loop in pure Python: the readable reference of
backend/cython/sendloop.pyx (csrc/dc_sendloop.h) and the loop TLS sockets use.

One thread drains per-connection bounded queues (a deque each) with
``socket.sendmsg`` on nonblocking sockets, many frames per call, and polls
for writability when a socket is full. Queued frames keep references to the
caller's parts (numpy buffers included) until written: nothing is copied.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable

from ...errors import Closed, check_timeout, Timeout
from . import framing as _framing

IOV_MAX = 512
# Frames up to this size sent while their connection's queue is empty are
# written by the caller at once: cheaper than waking the loop thread.
INLINE_MAX = 65536
# ...unless the previous frame to that connection went out less than this long
# ago: a burst is queued, so the loop coalesces it into few sendmsg calls.
BURST_NS = 15000
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
# TLS writes go one record batch at a time; the same slice is retried after a want-write.
_TLS_CHUNK = 1 << 20
# what publish() waits when told not to wait: nothing, but a full block-mode queue is a Timeout
_JUST_LOOK = 1e-9


class _Conn:
    __slots__ = ("id", "sock", "tls", "block", "max_msgs", "max_bytes", "q", "qbytes", "head_off",
                 "want_out", "busy", "dead", "err", "closing", "dropped", "sent", "last_push")

    def __init__(self, cid: int, sock: Any, max_msgs: int, max_bytes: int, block: bool) -> None:
        self.id = cid
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.block = block
        self.max_msgs = max(1, max_msgs)
        self.max_bytes = max_bytes
        self.q: deque[tuple[list[memoryview], int]] = deque()
        self.qbytes = 0
        self.head_off = 0
        self.want_out = False
        self.busy = False
        self.dead = False
        self.err = 0
        self.closing = False
        self.dropped = 0
        self.sent = 0
        self.last_push = 0

    def full(self, n: int) -> bool:
        return len(self.q) >= self.max_msgs or (bool(self.q) and self.qbytes + n > self.max_bytes)


class SendLoop:
    """Per-connection bounded queues drained by one background thread.

    ``add(sock, max_msgs, max_bytes, block)`` registers a connected socket;
    ``send(parts, cid=-1, timeout=None)`` queues one frame on one connection or
    all of them and returns how many connections dropped it.
    """

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._changed = threading.Condition(self._mu)
        self._conns: dict[int, _Conn] = {}
        self._next_id = 1
        self._stop = False
        self._sleeping = False
        self._wake_pending = False
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # room_fd: readable once room may have appeared after publish_nowait found none
        self._room_rfd, self._room_wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._room_armed = False
        self.closed = False
        self._publishing = threading.Lock()   # seq order on the wire, start frames before data
        self.next_seq = 0
        self.sealed = False
        self._thread = threading.Thread(target=self._run, name="datacomms-sendloop", daemon=True)
        self._thread.start()

    def _changed_room(self) -> None:
        """(mu held) Room may have appeared: wakes the waiting pushers, and the
        room_fd sleeper if one armed it."""
        self._changed.notify_all()
        self._poke_room()

    def _poke_room(self) -> None:
        if self._room_armed:
            self._room_armed = False
            try:
                os.write(self._room_wfd, b"\0")
            except OSError:
                pass   # full: a wake-up is pending already

    def _publisher_free(self) -> None:
        """After _publishing is released: wakes an asend that found it held."""
        if self._room_armed:
            with self._mu:
                self._poke_room()

    def _wake(self) -> None:
        if self._sleeping and not self._wake_pending:
            self._wake_pending = True
            os.write(self._wfd, b"\0")

    def add(self, sock: Any, max_msgs: int = 1024, max_bytes: int = 64 << 20, block: bool = False,
            start: Callable[[int], list[Any]] | None = None) -> int:
        """Registers a connected stream socket (set nonblocking); returns its
        connection id. With start, start(next_seq) gives a frame queued first on
        the new connection, before any frame publish() numbers next_seq or later."""
        if self.closed:
            raise Closed("send loop is closed")
        sock.setblocking(False)
        try:
            with self._publishing:
                with self._mu:
                    cid = self._next_id
                    self._next_id += 1
                    self._conns[cid] = _Conn(cid, sock, max_msgs, max_bytes, block)
                    self._wake()
                if start is not None:
                    self.send(start(self.next_seq), cid, 0)
        finally:
            self._publisher_free()
        return cid

    @property
    def room_fd(self) -> int:
        """A descriptor that becomes readable when room may have appeared after
        publish_nowait found none."""
        if self.closed:
            raise Closed("send loop is closed")
        return self._room_rfd

    def publish_nowait(self, data: Any) -> int | None:
        """publish without waiting, all or nothing: its seq when every block-mode
        queue had room, else None with nothing queued and no seq used, and
        room_fd armed to become readable once there may be room (or once the
        publisher another thread held is free)."""
        if not self._publishing.acquire(blocking=False):
            with self._mu:
                self._room_armed = True
            if not self._publishing.acquire(blocking=False):
                return None
        refused = False
        try:
            if self.sealed:
                raise Closed("publisher is closed")
            seq = self.next_seq
            if self.send(_framing.encode(data, seq, time.time_ns())[0], -1, 0, if_room=True) < 0:
                refused = True
                return None
            self.next_seq = seq + 1
        finally:
            self._publishing.release()
            if not refused:   # room_fd is armed for this caller: a poke now would wake it at once
                self._publisher_free()
        return seq

    def publish(self, data: Any, timeout: float | None = None) -> int:
        """Numbers data with next_seq, queues it on every connection (send_data)
        and returns its seq. A Timeout still uses the seq (the other
        connections have the frame); an encoding error does not."""
        check_timeout(timeout)
        try:
            with self._publishing:
                if self.sealed:
                    raise Closed("publisher is closed")
                seq = self.next_seq
                # timeout 0 waits for nothing, and a full block-mode queue is still a
                # Timeout (send()'s 0 drops quietly: that is for control frames)
                wait = _JUST_LOOK if timeout is not None and timeout <= 0 else timeout
                try:
                    self.send_data(data, seq, wait)
                except Timeout:
                    self.next_seq = seq + 1
                    if self.sealed:
                        raise Closed("publisher is closed") from None   # seal() ended the wait
                    if wait is not timeout:
                        raise Timeout(f"send: a subscriber's queue was full (timeout={timeout}: no waiting)") \
                            from None
                    raise
                self.next_seq = seq + 1
        finally:
            self._publisher_free()
        return seq

    def seal(self) -> None:
        """publish() raises Closed from now on, a publish waiting for room
        included (send and send_data still work, without waiting for room:
        a waiting publish may hold what a connection being added needs)."""
        with self._mu:
            self.sealed = True
            self._changed_room()

    def remove(self, cid: int) -> None:
        """Forgets connection cid: its queue is dropped; once this returns the loop
        no longer touches the socket, so the caller may close it."""
        with self._mu:
            c = self._conns.get(cid)
            if c is None:
                return
            c.closing = True
            while c.busy:
                self._changed.wait()
            del self._conns[cid]
            c.q.clear()
            self._changed_room()

    def send(self, parts: list[Any], cid: int = -1, timeout: float | None = None, if_room: bool = False) -> int:
        """Queues one frame on connection cid (-1: every connection); returns how
        many dropped it; raises Timeout when a block-mode queue stayed full.
        if_room: all or nothing, without waiting: -1 and nothing queued (room_fd
        armed) when a block-mode queue has no room."""
        if self.closed:
            raise Closed("send loop is closed")
        views = [p if type(p) is memoryview else memoryview(p) for p in parts]
        n = sum(v.nbytes for v in views)
        item = (views, n)
        dropped = 0
        timed_out = False
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._mu:
            if self._stop:
                raise Closed("send loop is closed")
            targets = list(self._conns.values()) if cid < 0 else [c for c in (self._conns.get(cid),) if c]
            if if_room and any(c.block and c.full(n) and not (c.dead or c.closing) for c in targets):
                self._room_armed = True
                return -1
            took = False
            for c in targets:
                while c.full(n) and c.block and timeout != 0 and not (c.dead or c.closing or self._stop or self.sealed):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._changed.wait(left)
                if c.dead or c.closing or self._stop:
                    continue
                if c.full(n):
                    c.dropped += 1
                    dropped += 1
                    timed_out = timed_out or (c.block and timeout != 0)
                    continue
                done = 0
                now = time.monotonic_ns()
                burst = now - c.last_push < BURST_NS
                c.last_push = now
                if not c.q and not c.busy and not c.want_out and not c.tls and n <= INLINE_MAX and not burst:
                    # written at once under the lock, so nothing overtakes it (see INLINE_MAX)
                    try:
                        done = c.sock.sendmsg(views, (), _SEND_FLAGS)
                    except (BlockingIOError, InterruptedError):
                        c.want_out = True
                    except OSError:
                        pass   # the loop's own write reports the failure
                    if done == n:
                        c.sent += 1
                        continue
                c.q.append(item)
                c.qbytes += n
                if done:
                    c.head_off = done   # only an empty queue gets an inline write
                took = True
            if took:
                self._wake()
        if timed_out:
            raise Timeout(f"send: a subscriber's queue stayed full for {timeout} s")
        return dropped

    def send_data(self, data: Any, seq: int, timeout: float | None = None) -> int:
        """Encodes data as data frame seq, stamped now, and queues it on every
        connection (as send)."""
        return self.send(_framing.encode(data, seq, time.time_ns())[0], -1, timeout)

    def flush(self, cid: int = -1, timeout: float | None = None) -> bool:
        """Waits until the queues (or cid's) are written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._mu:
            while not self._stop:
                if not any(c.q and not c.dead and (cid < 0 or c.id == cid) for c in self._conns.values()):
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def info(self, cid: int) -> tuple[int, int, int, int, bool, int] | None:
        """(queued messages, queued bytes, dropped, sent, dead, errno) of cid, or None."""
        with self._mu:
            c = self._conns.get(cid)
            return None if c is None else (len(c.q), c.qbytes, c.dropped, c.sent, c.dead, c.err)

    def dead(self) -> list[int]:
        """Ids of connections whose peer hung up or whose write failed (not yet removed)."""
        with self._mu:
            return [c.id for c in self._conns.values() if c.dead]

    @property
    def connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Stops the thread; queued frames are dropped. The caller closes its sockets."""
        if self.closed:
            return
        self.closed = True
        with self._mu:
            self._stop = True
            self._sleeping = True
            self._wake_pending = False
            self._wake()
            self._changed_room()
        self._thread.join()
        with self._mu:
            self._conns.clear()
        for fd in (self._rfd, self._wfd, self._room_rfd, self._room_wfd):
            os.close(fd)

    # -- the loop thread --------------------------------------------------

    def _kill(self, c: _Conn, err: int) -> None:
        c.dead = True
        c.err = err
        c.q.clear()
        c.qbytes = 0
        c.head_off = 0
        self._changed_room()

    def _write(self, c: _Conn) -> None:
        """One sendmsg of as much of c's queue as fits in IOV_MAX buffers (mu held on entry and exit)."""
        bufs: list[memoryview] = []
        skip = c.head_off
        for views, _ in c.q:
            for v in views:
                if skip >= v.nbytes:
                    skip -= v.nbytes
                    continue
                bufs.append(v[skip:] if skip else v)
                skip = 0
                if len(bufs) >= IOV_MAX:
                    break
            if len(bufs) >= IOV_MAX:
                break
        c.busy = True
        self._mu.release()
        err = 0
        sent = -1
        try:
            if c.tls:
                sent = c.sock.send(bufs[0][:_TLS_CHUNK])
            else:
                sent = c.sock.sendmsg(bufs, (), _SEND_FLAGS)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            err = errno.EAGAIN
        except InterruptedError:
            err = errno.EINTR
        except OSError as exc:
            err = exc.errno or errno.EPIPE
        finally:
            self._mu.acquire()
            c.busy = False
        if c.closing:
            self._changed.notify_all()
            return
        if sent < 0:
            if err == errno.EAGAIN:
                c.want_out = True
            elif err != errno.EINTR:
                self._kill(c, err)
            return
        popped = False
        while sent and c.q:
            views, n = c.q[0]
            rem = n - c.head_off
            if sent < rem:
                c.head_off += sent
                break
            sent -= rem
            c.head_off = 0
            c.q.popleft()
            c.qbytes -= n
            c.sent += 1
            popped = True
        if popped:
            self._changed_room()

    def _peek(self, c: _Conn) -> None:
        """Reads what a peer sent after the handshake (nothing is expected) to see it hang up."""
        c.busy = True
        self._mu.release()
        got, err = -1, 0
        try:
            got = len(c.sock.recv(4096))
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, InterruptedError):
            pass
        except OSError as exc:
            err = exc.errno or errno.ECONNRESET
        finally:
            self._mu.acquire()
            c.busy = False
        if c.closing:
            self._changed.notify_all()
        elif got == 0:
            self._kill(c, 0)
        elif err:
            self._kill(c, err)

    def _run(self) -> None:
        poller = select.poll
        with self._mu:
            while not self._stop:
                work = waiting = False
                for c in list(self._conns.values()):
                    if c.closing or c.dead:
                        continue
                    if c.q and not c.want_out:
                        self._write(c)
                    if c.want_out:
                        waiting = True
                    elif c.q and not (c.closing or c.dead):
                        work = True
                if self._stop:
                    break
                if work and not waiting:
                    continue
                p = poller()
                p.register(self._rfd, select.POLLIN)
                fds: dict[int, _Conn] = {}
                for c in self._conns.values():
                    if c.closing or c.dead:
                        continue
                    fd = c.sock.fileno()
                    if fd < 0:       # closed by its owner without remove()
                        self._kill(c, errno.EBADF)
                        continue
                    fds[fd] = c
                    p.register(fd, select.POLLIN | (select.POLLOUT if c.want_out else 0))
                self._sleeping = not work
                self._mu.release()
                try:
                    events = p.poll(0 if work else None)
                finally:
                    self._mu.acquire()
                    self._sleeping = False
                for fd, ev in events:
                    if fd == self._rfd:
                        try:
                            os.read(self._rfd, 4096)
                        except BlockingIOError:
                            pass
                        self._wake_pending = False
                        continue
                    c = fds[fd]
                    if c.closing or c.dead or self._conns.get(c.id) is not c:
                        continue
                    if ev & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                        c.want_out = False
                    if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        self._peek(c)
