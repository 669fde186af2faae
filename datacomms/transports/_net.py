"""What tcp:// and udp:// share: addresses, socket options, control frames,
the frame reader of the receive side, and the connect-time handshake.

Control frames (header flag FLAG_CONTROL) carry a small JSON object with a
"dc" key: ``hello`` (role, epoch, nonce, whether a key is required),
``auth`` (HMAC answer to the peer's nonce), ``start`` (the publisher's next
seq, sent first on every new connection), ``hb`` (heartbeat), ``bye`` (clean
close), ``error`` (why the peer is closing). Nothing is ever unpickled:
control frames are JSON, data frames go through the framing layer.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import socket
import ssl as _ssl
import struct
import time
from typing import Any

# FrameReader lives with its compiled twin in the backends; the Python one is
# also the reader of handshakes when no other is given, and stays importable here
from ..backend.python.streamreader import MAGIC, FrameReader, buffer_free as _buffer_free, describe_garbage  # noqa: F401
from ..errors import Closed, DataCommsError, FrameError, Timeout

log = logging.getLogger("datacomms")

# Control frames are small; a peer announcing more during the handshake is not a datacomms peer.
HANDSHAKE_MAX_FRAME = 64 * 1024
PROTOCOL = 1


class HandshakeError(DataCommsError):
    """The connect-time handshake failed: not a datacomms peer, wrong role,
    authentication refused, or TLS failed. Both sides report it."""


def parse_address(rest: str, url: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as [ADDR]:PORT; '*' means every interface) -> (host, port)."""
    host, sep, port_s = rest.rstrip("/").rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise DataCommsError(f"bad address in {url!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    port = int(port_s)
    if port > 65535:
        raise DataCommsError(f"bad port {port} in {url!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "*":
        host = "0.0.0.0"
    return host, port


def family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (the URL wrote it in brackets), else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def url_of(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def address_text(addr: Any) -> str:
    """A socket address as "host:port" ("[addr]:port" for IPv6): a Message's source."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_address(sock: socket.socket, host: str, port: int, scheme: str) -> None:
    """sock.bind((host, port)); an address in use is an OSError that names it."""
    try:
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(exc.errno, f"{scheme} address {where} is already in use "
                                     "(by another publisher, or another program listening there)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise OSError(exc.errno, f"cannot bind {url_of(scheme, host, port)}: {host} is not an address "
                                     "of this machine") from None
        raise


def wait_for_count(count: Any, n: int, timeout: float | None, closed: Any, pause: Any, what: str) -> int:
    """Polls count() until it reaches n (returns it), closed() turns true (Closed) or
    timeout passes (Timeout); pause(seconds) waits between looks."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        have = count()
        if have >= n:
            return have
        if closed():
            raise Closed("publisher is closed")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise Timeout(f"{have} of {n} subscribers {what} after {timeout} s")
        pause(0.05 if left is None else min(left, 0.05))


def check_periods(heartbeat: float, dead_after: float | None = None) -> None:
    """ValueError unless the liveness periods are positive: a heartbeat of 0 made
    the service thread spin (and a udp publisher send heartbeats without pause)."""
    if not heartbeat > 0:
        raise ValueError(f"heartbeat must be a positive number of seconds, not {heartbeat!r}")
    if dead_after is not None and not dead_after > 0:
        raise ValueError(f"dead_after must be a positive number of seconds, not {dead_after!r}")


def new_epoch() -> str:
    """A random id per Publisher instance: a restarted publisher is a new epoch."""
    return os.urandom(8).hex()


def tune_tcp(sock: socket.socket, heartbeat: float) -> None:
    """No Nagle delay; idle connections are probed (keepalive), so the kernel
    drops one whose peer stopped answering. A peer that stops acknowledging
    while data waits is the publisher's to notice (peer_silence): the
    kernel's own bound for that, TCP_USER_TIMEOUT, also cuts off a reader
    that only paused (its window stays shut although its host answers)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(round(heartbeat * 4)))
    for opt, val in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)


# Linux's struct tcp_info: tcpi_probes (window probes sent since the peer last
# answered), tcpi_unacked, tcpi_last_ack_recv (ms), tcpi_notsent_bytes
_TCP_INFO_LEN = 148
_PROBES, _UNACKED, _LAST_ACK_RECV, _NOTSENT = 3, 24, 56, 144
# Linux spaces its probes of a shut window up to TCP_RTO_MAX apart
ZERO_WINDOW_PROBE_GAP = 120.0


def peer_silence(sock: Any, timeout: float) -> float | None:
    """Seconds sock's peer has acknowledged nothing while our data waits for
    it, once that is beyond timeout; else None. Data in flight must be
    acknowledged within timeout. Data held back by a shut window (the peer
    reads nothing) only needs the peer's answers to the kernel's window
    probes, which may be ZERO_WINDOW_PROBE_GAP apart: a reader that paused
    is alive. Its host is gone once two probes in a row went unanswered
    (one lost answer is not enough), or after ZERO_WINDOW_PROBE_GAP more.
    None where TCP_INFO is not Linux's or sock is gone."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (AttributeError, OSError):
        return None
    if len(info) < _TCP_INFO_LEN:
        return None
    (unacked,) = struct.unpack_from("<I", info, _UNACKED)
    (notsent,) = struct.unpack_from("<I", info, _NOTSENT)
    (silent_ms,) = struct.unpack_from("<I", info, _LAST_ACK_RECV)
    silent = silent_ms / 1000
    if unacked:
        return silent if silent > timeout else None
    if notsent and silent > timeout:
        return silent if info[_PROBES] >= 2 or silent > timeout + ZERO_WINDOW_PROBE_GAP else None
    return None


def abort(sock: Any) -> None:
    """Ends a connection whose peer is gone: reset, not an orderly close whose
    unsent data the kernel would go on retransmitting; the send loop sees it hang up."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def control(framing: Any, obj: dict[str, Any]) -> list[Any]:
    """The parts of a control frame holding obj."""
    return framing.encode(obj, 0, time.time_ns(), framing.FLAG_CONTROL)[0]


def read_control(sock: Any, reader: Any, what: str, deadline: float | None = None) -> dict[str, Any]:
    """Blocks (socket timeout; at most until deadline, time.monotonic()) for the
    next frame, which must be a control frame."""
    while True:
        try:
            f = reader.next()
        except FrameError as exc:
            raise HandshakeError(f"bad {what} from peer: {exc}") from None
        if f is not None:
            data, _, _, flags = f
            if not flags & reader.framing.FLAG_CONTROL or not isinstance(data, dict):
                raise HandshakeError(f"expected a {what} control frame, got a data frame")
            if data.get("dc") == "error":
                raise HandshakeError(f"peer refused the connection: {data.get('reason')}")
            return data
        if deadline is not None:
            # the whole handshake is bounded, not each read: a peer trickling its
            # hello a byte at a time held a handshake (and its thread) for ever
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandshakeError(f"peer sent no {what} in time")
            sock.settimeout(left)
        try:
            n = reader.fill(sock)
        except socket.timeout:
            raise HandshakeError(f"peer sent no {what} in time") from None
        except _ssl.SSLError as exc:
            raise HandshakeError(f"TLS error: {exc}") from None
        if n == 0:
            raise HandshakeError(f"peer closed the connection before its {what}")


def _token(value: Any) -> bool:
    """A nonce or an HMAC answer as a peer must send it: a short ASCII string. What a
    hostile peer sends instead (a non-ASCII answer, which compare_digest refuses
    with TypeError; a lone surrogate, which cannot be encoded) is a failed
    handshake, not an exception that ended the connecting side's thread."""
    return isinstance(value, str) and 0 < len(value) <= 128 and value.isascii()


def _mac(key: bytes, role: str, side: str, challenge: str, own: str) -> str:
    # side ("listen" or "connect") is part of what is signed: without it a listening
    # subscriber answered, to anyone who connected as a publisher with a publisher's
    # nonce, the very answer that publisher expects from a subscriber connecting to
    # it, so a peer without the key could read a keyed publisher (and a publisher
    # was the same oracle for writing into a listening subscriber)
    return hmac.new(key, f"datacomms-auth-v2|{role}|{side}|{challenge}|{own}".encode(), hashlib.sha256).hexdigest()


def resolve_key(key: bytes | str | None) -> bytes | None:
    """The shared secret: the argument, else $DATACOMMS_KEY, else None (no authentication).
    Checked here, when the endpoint is made: a key of another type was only refused by
    hmac inside the first handshake (and ended a connecting subscriber's thread), and an
    empty one is a secret every peer knows."""
    if key is None:
        key = os.environ.get("DATACOMMS_KEY") or None
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    elif isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes or str, not {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty (every peer knows an empty secret); "
                         "key=None means no authentication")
    return key


def handshake(sock: Any, framing: Any, role: str, epoch: str | None, key: bytes | None,
              timeout: float, reader_type: Any = FrameReader, server: bool = False) -> tuple[dict[str, Any], Any]:
    """Exchanges hellos (and HMAC answers to each other's nonces when a key is
    set) on a connected socket; returns the peer's hello and the reader (a
    reader_type), which may already hold frames that followed. server: this
    side accepted the connection (the answers say which side listened).
    Raises HandshakeError."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    reader = reader_type(framing, HANDSHAKE_MAX_FRAME, chunk=64 * 1024)
    nonce = os.urandom(16).hex()
    want = "sub" if role == "pub" else "pub"
    hello = {"dc": "hello", "v": PROTOCOL, "role": role, "epoch": epoch, "nonce": nonce, "auth": key is not None}
    try:
        sock.sendall(b"".join(control(framing, hello)))
        peer = read_control(sock, reader, "hello", deadline)
        if peer.get("dc") != "hello" or not _token(peer.get("nonce")):
            raise HandshakeError(f"expected a hello, got {str(peer)[:80]}")
        if type(peer.get("v")) is not int or peer["v"] != PROTOCOL:
            # a peer of another version reads nothing here the way it means it: it is told why
            why = f"the peer speaks protocol version {str(peer.get('v'))[:20]}, this side version {PROTOCOL}"
            sock.sendall(b"".join(control(framing, {"dc": "error", "reason": why})))
            raise HandshakeError(why)
        if peer.get("role") != want:
            raise HandshakeError(f"peer is a {peer.get('role')!r}, this side is a {role!r}: "
                                 "both ends bind or both connect? (see bind=)")
        if bool(peer.get("auth")) != (key is not None):
            raise HandshakeError("authentication failed: " + (
                "the peer requires a key and none is set here (key= or DATACOMMS_KEY)" if key is None
                else "this side requires a key and the peer has none"))
        if key is not None:
            side, peer_side = ("listen", "connect") if server else ("connect", "listen")
            sock.sendall(b"".join(control(framing, {"dc": "auth", "mac": _mac(key, role, side, peer["nonce"], nonce)})))
            answer = read_control(sock, reader, "authentication answer", deadline)
            expect = _mac(key, want, peer_side, nonce, peer["nonce"])
            mac = answer.get("mac")
            if not _token(mac) or not hmac.compare_digest(mac, expect):
                raise HandshakeError("authentication failed: the peer's key does not match")
    except socket.timeout:
        raise HandshakeError("handshake timed out") from None
    except (ConnectionError, BrokenPipeError) as exc:
        raise HandshakeError(f"connection lost during the handshake: {exc}") from None
    except _ssl.SSLError as exc:
        raise HandshakeError(f"TLS error: {exc}") from None
    return peer, reader


def tls_wrap(sock: socket.socket, ctx: _ssl.SSLContext | None, server: bool, host: str,
             timeout: float, wrapped: Any = None, framing: Any = None) -> Any:
    """The socket wrapped in TLS, handshake done (within timeout s in all: CPython's
    do_handshake keeps one deadline), or sock itself without a context.
    ``wrapped(conn)`` is called before the handshake with the TLS socket, which
    owns the descriptor from then on (sock is detached): shutting conn down (with
    socket.socket.shutdown) is what ends that handshake from another thread.
    With framing, a server first looks at the peer's first bytes: a plain datacomms
    hello there is answered with an error frame saying this side uses TLS."""
    if ctx is None:
        return sock
    conn = None
    deadline = time.monotonic() + timeout
    if server and framing is not None:
        # a peer without TLS sends its hello (a frame) where a ClientHello belongs:
        # tell it so in a frame it reads, where it only saw the connection close
        sock.settimeout(timeout)
        try:
            head = sock.recv(len(MAGIC), socket.MSG_PEEK)
        except (socket.timeout, OSError) as exc:
            close_quietly(sock)
            raise HandshakeError(f"TLS handshake failed: {exc or 'timed out'}") from None
        if head and MAGIC.startswith(head):
            why = "the listening side uses TLS (ssl=) and the connecting side does not"
            try:
                sock.sendall(b"".join(control(framing, {"dc": "error", "reason": why})))
            except OSError:
                pass
            close_quietly(sock)
            raise HandshakeError(f"TLS handshake failed: {why}")
    try:
        conn = ctx.wrap_socket(sock, server_side=server, server_hostname=None if server else host,
                               do_handshake_on_connect=False)
        if wrapped is not None:
            wrapped(conn)
        conn.settimeout(max(0.0, deadline - time.monotonic()))
        conn.do_handshake()
        return conn
    except (_ssl.SSLError, socket.timeout, OSError) as exc:
        if conn is not None:
            close_quietly(conn)
        if not server and getattr(exc, "reason", None) == "WRONG_VERSION_NUMBER":
            # what came back is no TLS record: most likely a datacomms peer's plain hello
            raise HandshakeError(f"TLS handshake failed: the peer does not answer in TLS (has it no ssl=?): "
                                 f"{exc}") from None
        raise HandshakeError(f"TLS handshake failed: {exc}") from None


def close_quietly(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
