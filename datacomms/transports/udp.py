"""udp://HOST:PORT: one datagram per message, for latest-value telemetry.

The subscriber binds HOST:PORT (a multicast group address joins the group);
publishers send to it. A message whose frame does not fit in one datagram
(65,507 bytes) is refused with a FrameError that says so. Nothing is resent:
losses show as seq gaps, counted per publisher in ``stats.lost``.

Every ``heartbeat`` seconds a publisher sends a control datagram with its
epoch and next seq, so a subscriber also counts messages lost at the end of a
burst, and notices a restarted publisher. A subscriber answers each heartbeat
with a small "sub" datagram carrying a random id of its own (the subscribers
of a multicast group on one host all answer from the group's port), which is
how ``pub.subscribers`` and ``wait_for_subscribers`` know who is listening (a subscriber counts while it
answered within ``dead_after`` seconds; it answers from inside recv/latest).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import threading
import time
from typing import Any

from .. import _aio
from .. import backend as _backend
from .. import url as _url
from ..errors import Closed, check_timeout, DataCommsError, FrameError, Timeout
from ..message import Message
from ..pubsub import Publisher, Subscriber
from ._net import (
    wait_for_count, _buffer_free, address_text, bind_address, check_periods, control, family, log, new_epoch,
    parse_address, url_of,
)

MAX_DATAGRAM = 65507          # the largest UDP payload over IPv4
_SLOT = 65536                 # receive room per datagram
# A seq this far below the last one from the same sender is a restart (same
# source port), not a late datagram, whatever its timestamp.
REORDER_WINDOW = 1024
# Sender addresses whose source string a subscriber keeps (more: it starts afresh).
_MAX_SOURCES = 4096


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def _make_room(per_sender: dict[Any, Any]) -> None:
    """Before a new sender's entry: forgets the oldest sender when _MAX_SOURCES are
    kept, so datagrams from ever new addresses (spoofed, or publishers restarted
    on new ports) never grow a subscriber's memory without bound."""
    if len(per_sender) >= _MAX_SOURCES:
        del per_sender[next(iter(per_sender))]


class UdpPublisher(Publisher):
    """Sends each message as one datagram to HOST:PORT (unicast or a multicast
    group: ``ttl`` and ``interface`` set IP_MULTICAST_TTL/IF, loopback of
    multicast is on so subscribers on this host hear it)."""

    def __init__(self, url: str, *, heartbeat: float = 0.25, dead_after: float | None = None, ttl: int = 1,
                 interface: str | None = None, backend: Any = None, on_full: str = "drop") -> None:
        host, port = parse_address(_url.parse(url).rest, url)
        check_periods(heartbeat, dead_after)
        self._be = _backend.get(backend)
        self._framing = self._be.framing
        self.address = (host, port)
        self.url = url_of("udp", host, port)
        self.epoch = new_epoch()
        self.dropped = 0                 # datagrams the kernel refused (buffer full, no route)
        self._failed: set[int | None] = set()   # the errors of failed sends already warned about
        self._seq = 0
        self._heartbeat = heartbeat
        self._dead_after = dead_after if dead_after is not None else max(1.0, 4 * heartbeat)
        self._seen: dict[Any, float] = {}
        self._lock = threading.Lock()
        self._closed = False
        if _is_multicast(host) and ":" in host:
            raise DataCommsError(f"{url!r}: IPv6 multicast is not supported; use an IPv4 group or IPv6 unicast")
        # the name is looked up once: a sendto to a name looked it up for every
        # datagram, and one that never resolves dropped every message quietly
        try:
            self._dest = socket.getaddrinfo(host, port, family(host), socket.SOCK_DGRAM)[0][4]
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"cannot resolve {host!r} in {url!r}: {exc.strerror}") from None
        ip = ipaddress.ip_address(self._dest[0].split("%")[0])
        self._sock = socket.socket(family(host), socket.SOCK_DGRAM)
        try:
            if ip.is_multicast:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if interface:
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            # answers come back to this port; it listens on loopback only when sending there
            v6 = ":" in host
            self._sock.bind(((("::1" if v6 else "127.0.0.1") if ip.is_loopback else ("::" if v6 else "")), 0))
        except BaseException:
            self._sock.close()   # a refused publisher leaves no socket behind
            raise
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # the epoch goes out before any data: a subscriber that knew an earlier
        # publisher on this source address learns of the restart first
        self._hb()
        self._thread = threading.Thread(target=self._run, name="datacomms-udp-pub", daemon=True)
        self._thread.start()

    def _hb(self) -> None:
        # under the lock: a heartbeat must not overtake a data datagram it counts
        with self._lock:
            self._sendto(control(self._framing, {"dc": "hb", "epoch": self.epoch, "next_seq": self._seq}))

    def _sendto(self, parts: list[Any]) -> bool:
        try:
            self._sock.sendmsg(parts, (), 0, self._dest)
            return True
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            # ENOBUFS, ECONNREFUSED from an earlier ICMP, EHOSTUNREACH: the datagram is lost.
            # The first of each kind is a warning: a publisher with no route to its
            # destination dropped every datagram with nothing above debug said
            self.dropped += 1
            level = 10 if exc.errno in self._failed else 30
            self._failed.add(exc.errno)
            log.log(level, "datacomms udp: send to %s:%s failed: %s (this datagram is lost; pub.dropped "
                    "counts them)", *self.address, exc.strerror or exc)
        return False

    def _run(self) -> None:
        """Heartbeats out, subscribers' answers in."""
        p = select.poll()
        p.register(self._sock, select.POLLIN)
        p.register(self._rfd, select.POLLIN)
        next_hb = time.monotonic() + self._heartbeat
        while not self._closed:
            now = time.monotonic()
            if now >= next_hb:
                self._hb()
                next_hb = now + self._heartbeat
                # forget subscribers that stopped answering: each restarted one comes
                # from a new port, and they were kept for ever
                if any(now - t > self._dead_after for t in self._seen.values()):
                    self._seen = {a: t for a, t in self._seen.items() if now - t <= self._dead_after}
            for fd, _ in p.poll(max(0.0, next_hb - now) * 1000):
                if fd != self._sock.fileno():
                    continue
                try:
                    data, addr = self._sock.recvfrom(2048)
                except OSError:
                    continue
                try:
                    msg, _, _, flags, _ = self._framing.decode(data, 0, 4096)
                except FrameError:
                    continue
                if flags & 1 and isinstance(msg, dict) and msg.get("dc") == "sub":
                    # multicast subscribers of one host all answer from the group's port:
                    # their ids tell them apart
                    sid = msg.get("id")
                    self._seen[(addr, sid if isinstance(sid, str) else None)] = time.monotonic()

    def send(self, data: Any, timeout: float | None = None) -> int:
        """Sends one datagram and returns its seq (a datagram the kernel refused is lost, as UDP is)."""
        check_timeout(timeout)
        if self._closed:
            raise Closed("publisher is closed")
        with self._lock:
            seq = self._seq
            parts, flen = self._framing.encode(data, seq, time.time_ns())
            if flen > MAX_DATAGRAM:
                raise FrameError(f"a frame of {flen} bytes does not fit in one UDP datagram "
                                 f"(at most {MAX_DATAGRAM}); use tcp:// for large messages")
            self._seq = seq + 1
            self._sendto(parts)
        return seq

    @property
    def subscribers(self) -> int:
        now = time.monotonic()
        return sum(1 for t in list(self._seen.values()) if now - t <= self._dead_after)

    def wait_for_subscribers(self, n: int = 1, timeout: float | None = None) -> int:
        return wait_for_count(lambda: self.subscribers, n, timeout, lambda: self._closed,
                              lambda seconds: time.sleep(min(seconds, 0.02)), "answered")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wfd, b"\0")
        self._thread.join()
        self._sock.close()
        os.close(self._rfd)
        os.close(self._wfd)


class UdpSubscriber(Subscriber):
    """Receives the datagrams sent to HOST:PORT (port 0: any free port, see
    ``url``). A multicast HOST joins that group on ``interface`` (default:
    the system's choice; "127.0.0.1" keeps it on this host)."""

    def __init__(self, url: str, *, interface: str | None = None, recv_buffer: int = 4 << 20,
                 max_frame_size: int | None = None, backend: Any = None, **_ignored: Any) -> None:
        host, port = parse_address(_url.parse(url).rest, url)
        self._be = _backend.get(backend)
        self._framing = self._be.framing
        self.stats = self._be.stats.Stats()
        self.rejected = 0                # datagrams that were not valid frames (or over max_frame_size)
        self._max_frame = min(max_frame_size, _SLOT) if max_frame_size else _SLOT
        self._last: dict[Any, tuple[int, int]] = {}   # sender -> (last seq, newest timestamp_ns seen)
        self._epoch: dict[Any, str] = {}
        self._sources: dict[Any, str] = {}   # sender address -> its "host:port", made once
        self._answer = b"".join(control(self._framing, {"dc": "sub", "id": new_epoch()}))
        self._closed = False
        if _is_multicast(host) and ":" in host:
            raise DataCommsError(f"{url!r}: IPv6 multicast is not supported; use an IPv4 group or IPv6 unicast")
        self._sock = socket.socket(family(host), socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
            if _is_multicast(host):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                bind_address(self._sock, host, port, "udp")
                mreq = socket.inet_aton(host) + socket.inet_aton(interface or "0.0.0.0")
                try:
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                except OSError as exc:
                    # ENODEV ("No such device") said nothing of a group no route leads to
                    raise OSError(exc.errno, f"cannot join multicast group {host} for {url!r} on "
                                             f"{interface or 'the interface the routes choose'}: {exc.strerror}"
                                             + ("" if interface else "; pass interface=, e.g. '127.0.0.1' "
                                                "to keep it on this host")) from None
            else:
                bind_address(self._sock, host, port, "udp")
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self.address = (host, self._sock.getsockname()[1])
        self.url = url_of("udp", host, self.address[1])
        self._buf = bytearray(1 << 20)
        self._spare: bytearray | None = None
        self._off = 0

    def _slot(self) -> memoryview:
        """Room for one datagram; a buffer a returned view still uses is never written again."""
        if len(self._buf) - self._off < _SLOT:
            if _buffer_free(self._buf):
                self._off = 0
            else:
                old = self._buf
                self._buf = self._spare if self._spare is not None and _buffer_free(self._spare) \
                    else bytearray(1 << 20)
                self._spare = old
                self._off = 0
        return memoryview(self._buf)[self._off:self._off + _SLOT]

    def _one(self) -> tuple[Any, int, int, Any, int] | None:
        """Reads and decodes one datagram: (data, seq, ts, source, skipped-before) for
        data; None when nothing is waiting. Control datagrams are handled here."""
        while True:
            try:
                n, addr = self._sock.recvfrom_into(self._slot())
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                if self._closed:   # closed by another thread meanwhile
                    raise Closed("subscriber is closed") from None
                raise
            start = self._off
            try:
                data, seq, ts, flags, flen = self._framing.decode(memoryview(self._buf)[:start + n], start,
                                                                  self._max_frame)
                if flen != n:   # a datagram is one frame: more (a second frame, junk) is not ours
                    raise FrameError(f"a datagram of {n} bytes holding a frame of {flen}")
            except FrameError as exc:
                self.rejected += 1
                level = 30 if self.rejected <= 10 else 10
                log.log(level, "datacomms udp: dropped a datagram from %s:%s: %s", addr[0], addr[1], exc)
                continue
            self._off = (start + flen + 63) & ~63
            if flags & 1:
                self._on_control(data, ts, addr)
                continue
            known = self._last.get(addr)
            last = None
            if known is not None:
                last, newest = known
                if seq <= last:
                    # a datagram sent after everything seen from this address that
                    # starts seq again is a new publisher on the same address (its
                    # heartbeat was lost or is still to come); a late or duplicated
                    # one is older than what was seen (already counted lost, or delivered)
                    if ts <= newest and last - seq < REORDER_WINDOW:
                        continue
                    self._restart(addr)
                    self._epoch.pop(addr, None)   # its heartbeat's new epoch is not a second restart
                    last = -1   # the new sender's seqs before this one were sent, and lost
            if last is not None and seq > last + 1:
                self.stats.add_lost(seq - last - 1)
            elif last is None:
                _make_room(self._last)
            self._last[addr] = (seq, ts)
            return data, seq, ts, addr, 0

    def _restart(self, addr: Any) -> None:
        self._last.pop(addr, None)
        self.stats.restarts += 1

    def _on_control(self, msg: Any, ts: int, addr: Any) -> None:
        if not isinstance(msg, dict) or msg.get("dc") != "hb":
            return
        epoch, nxt = msg.get("epoch"), msg.get("next_seq")
        if isinstance(epoch, str):
            known = self._epoch.get(addr)
            if known is None:
                _make_room(self._epoch)
            elif known != epoch:
                self._restart(addr)
                # the new sender's stream starts at seq 0: next_seq below counts what was lost of it
                _make_room(self._last)
                self._last[addr] = (-1, ts)
            self._epoch[addr] = epoch
        known = self._last.get(addr)
        if known is not None:
            # the heartbeat shows messages lost after the last one that arrived;
            # its time (sent after all it counts) makes those late, not a restart
            last, newest = known
            if isinstance(nxt, int) and nxt - 1 > last:
                self.stats.add_lost(nxt - 1 - last)
                last = nxt - 1
            self._last[addr] = (last, max(newest, ts))
        try:
            self._sock.sendto(self._answer, addr)
        except OSError:
            pass

    def _next(self, timeout: float | None, newest: bool) -> Message:
        check_timeout(timeout)
        if self._closed:
            raise Closed("subscriber is closed")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        p = select.poll()
        p.register(self._sock, select.POLLIN)
        while True:
            if self._closed:
                raise Closed("subscriber is closed")
            best = None
            passed = 0
            while True:
                got = self._one()
                if got is None:
                    break
                if best is not None:
                    passed += 1
                best = got
                if not newest:
                    break
            if best is not None:
                data, seq, ts, addr, _ = best
                source = self._sources.get(addr)
                if source is None:
                    if len(self._sources) >= _MAX_SOURCES:
                        self._sources.clear()   # a flood of (spoofed) senders never grows it without bound
                    source = self._sources[addr] = address_text(addr)
                # loss is counted here per sender (seq gaps and heartbeats), so
                # Stats gets no seq: it keeps rate, gaps, latency and skips
                self.stats.record(None, ts, time.time_ns(), passed)
                return Message(data, seq, ts, source)
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise Timeout(f"no message within {timeout} s")
            p.poll(None if wait is None else wait * 1000 + 0.5)

    def _aio_waiter(self) -> _aio.Waiter:
        if self._closed:
            raise Closed("subscriber is closed")
        w = self.__dict__.get("_aio_w")
        if w is None:
            w = self._aio_w = _aio.SocketWaiter(self._sock)
        return w

    def recv(self, timeout: float | None = None) -> Message:
        return self._next(timeout, newest=False)

    def latest(self, timeout: float | None = None) -> Message:
        return self._next(timeout, newest=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                # wakes a recv waiting in poll on this socket in another thread (Linux
                # wakes pollers even of an unconnected UDP socket, then says ENOTCONN)
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            w = self.__dict__.get("_aio_w")
            if w is None:
                self._sock.close()
            else:
                # the waiter closes the socket: at once, or, while a coroutine sleeps on it,
                # once that loop no longer watches it (closed before, its number could go to
                # a new descriptor that the loop would then stop watching)
                w.shutdown()
