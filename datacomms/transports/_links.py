"""Connection management for tcp://: a background thread that either listens
and accepts (bind) or keeps one outgoing connection (connect, reconnecting
with capped exponential backoff), runs the handshake of each new connection
and hands the finished ones to the transport.

Handshakes of accepted connections run in short-lived threads of their own,
so a peer that connects and says nothing (or sends an HTTP request) delays
nobody else.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl as _ssl
import threading
import time
from typing import Any, Callable

from ._net import (
    FrameReader, HandshakeError, address_text, bind_address, close_quietly, family, handshake, log, tls_wrap, tune_tcp,
)

OnReady = Callable[[Any, dict, Any, Any], None]

# accept() errors that mean this process (or the system) is out of descriptors or memory
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# how long the listener is left alone after such an error
ACCEPT_PAUSE = 0.1


class Links:
    """Listens (bind=True) or connects (bind=False) to (host, port) for one
    Publisher or Subscriber. ``on_ready(sock, peer_hello, reader, where)`` is
    called from a background thread for every connection that passed the
    handshake (where: the peer's address, address_text's "host:port");
    ``on_tick()`` runs about every ``tick`` seconds on the same thread;
    ``on_error(exc)`` gets every handshake failure."""

    def __init__(self, host: str, port: int, *, bind: bool, role: str, framing: Any, epoch: str | None,
                 key: bytes | None, ssl: _ssl.SSLContext | None, heartbeat: float, handshake_timeout: float,
                 backoff_max: float, on_ready: OnReady, on_error: Callable[[Exception], None],
                 on_tick: Callable[[], None] | None = None, tick: float = 0.1,
                 reader_type: Any = FrameReader) -> None:
        self.host, self.port, self.bind, self.role = host, port, bind, role
        self._framing, self._epoch, self._key, self._ssl = framing, epoch, key, ssl
        self._reader_type = reader_type   # what reads each connection, from its handshake on
        self._heartbeat, self._hs_timeout, self._backoff_max = heartbeat, handshake_timeout, backoff_max
        self._on_ready, self._on_error, self._on_tick, self._tick = on_ready, on_error, on_tick, tick
        self._stop = False
        self._want = not bind          # connect mode: a connection is wanted now
        self.failure: str | None = None   # connect mode: why the last attempt to connect failed
        self._backoff = 0.0
        self._next_try = 0.0
        self._accept_after = 0.0          # bind mode: when to look at the listener again (0: now)
        self._accept_failing = False      # bind mode: the last accept ran out of descriptors
        self._pending: set[Any] = set()   # sockets in a handshake
        self._threads: set[threading.Thread] = set()
        self._mu = threading.Lock()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listener: socket.socket | None = None
        if bind:
            self.listener = socket.socket(family(host), socket.SOCK_STREAM)
            try:
                self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                bind_address(self.listener, host, port, "tcp")
                self.listener.listen(128)
                self.listener.setblocking(False)
            except OSError:
                self.listener.close()
                os.close(self._rfd)
                os.close(self._wfd)
                raise
            self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"datacomms-tcp-{role}", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Connect mode: the connection was lost; make a new one (after the backoff)."""
        if not self.bind:
            self._want = True
            self._wake()

    def _wake(self) -> None:
        with self._mu:     # close() closes the pipe under the same lock
            if self._stop and self._wfd < 0:
                return
            try:
                os.write(self._wfd, b"\0")
            except (BlockingIOError, OSError):
                pass

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake()
        # a handshake in progress fails at once: the connect side runs its own on
        # this thread, which is joined next (a silent peer held it for the
        # whole handshake_timeout)
        self._shutdown_pending()
        self._thread.join()
        threads = self._shutdown_pending()
        for t in threads:
            t.join()
        if self.listener is not None:
            self.listener.close()
        with self._mu:
            os.close(self._rfd)
            os.close(self._wfd)
            self._rfd = self._wfd = -1

    def _shutdown_pending(self) -> list[threading.Thread]:
        """Shuts down every socket in a handshake; returns the handshake threads."""
        with self._mu:
            pending, threads = list(self._pending), list(self._threads)
        for s in pending:
            try:
                # the plain socket's shutdown, also for a TLS one: SSLSocket's own drops its
                # TLS state, and its handshake then fails with AttributeError, not OSError
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except OSError:
                pass
        return threads

    # -- the thread -------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        if self.listener is not None:
            poller.register(self.listener, select.POLLIN)
        last_tick = 0.0
        while not self._stop:
            now = time.monotonic()
            if self._want and now >= self._next_try:
                self._connect()
                continue
            timeout = self._tick
            if self._want:
                timeout = min(timeout, max(0.0, self._next_try - now))
            if self._accept_after:
                if now >= self._accept_after:
                    self._accept_after = 0.0   # look at the listener again
                    poller.register(self.listener, select.POLLIN)
                else:
                    timeout = min(timeout, self._accept_after - now)
            for fd, _ in poller.poll(timeout * 1000):
                if fd == self._rfd:
                    try:
                        os.read(self._rfd, 4096)
                    except BlockingIOError:
                        pass
                elif self.listener is not None and not self._accept_after and not self._accept():
                    # out of descriptors (or memory): the pending connection stays in the
                    # backlog and the listener readable; polling it again at once spun a
                    # core and logged a warning per turn (100,000 a second)
                    poller.unregister(self.listener)
                    self._accept_after = time.monotonic() + ACCEPT_PAUSE
            now = time.monotonic()
            if self._on_tick is not None and now - last_tick >= self._tick:
                last_tick = now
                try:
                    self._on_tick()
                except Exception:   # never let the service thread die
                    log.exception("datacomms tcp: error in the %s service thread", self.role)

    def _accept(self) -> bool:
        """Accepts every pending connection; False when accepting failed for want of
        descriptors or memory (the caller waits ACCEPT_PAUSE before trying again)."""
        assert self.listener is not None
        while True:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                if self._accept_failing:
                    self._accept_failing = False
                    log.warning("datacomms tcp: accepting connections again")
                return True
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.warning("datacomms tcp: accept failed: %s", exc)
                    return True
                # once per spell, not once per try: the backlog holds the connections meanwhile
                log.log(logging.DEBUG if self._accept_failing else logging.WARNING,
                        "datacomms tcp: cannot accept connections: %s (trying again every %.1f s; the "
                        "connections already made carry on)", exc, ACCEPT_PAUSE)
                self._accept_failing = True
                return False
            if self._accept_failing:
                self._accept_failing = False
                log.warning("datacomms tcp: accepting connections again")
            t = threading.Thread(target=self._serve, args=(sock, addr), daemon=True,
                                 name=f"datacomms-tcp-handshake-{addr[1]}")
            with self._mu:
                self._pending.add(sock)
                self._threads.add(t)
            try:
                t.start()
            except RuntimeError as exc:   # no thread to be had: this connection only, not this thread
                with self._mu:
                    self._pending.discard(sock)
                    self._threads.discard(t)
                log.warning("datacomms tcp: dropping connection from %s: cannot start its handshake: %s",
                            address_text(addr), exc)
                close_quietly(sock)

    def _serve(self, sock: socket.socket, addr: Any) -> None:
        """Handshake of one accepted connection (its own thread)."""
        try:
            self._finish(sock, addr, server=True)
        finally:
            with self._mu:
                self._pending.discard(sock)
                self._threads.discard(threading.current_thread())

    def _finish(self, sock: socket.socket, addr: Any, server: bool) -> bool:
        where = address_text(addr)
        conn: Any = sock
        tls: list[Any] = []   # the TLS socket that took sock's descriptor over, once there is one

        def track(wrapped: Any) -> None:   # close() shuts it down too, ending its handshake
            tls.append(wrapped)
            with self._mu:
                self._pending.add(wrapped)
            if self._stop:   # close() came before it could see it in _pending
                socket.socket.shutdown(wrapped, socket.SHUT_RDWR)

        try:
            sock.setblocking(True)
            tune_tcp(sock, self._heartbeat)
            conn = tls_wrap(sock, self._ssl, server, self.host, self._hs_timeout, track, self._framing)
            peer, reader = handshake(conn, self._framing, self.role, self._epoch, self._key, self._hs_timeout,
                                     self._reader_type, server)
            conn.settimeout(None)
        except Exception as exc:   # whatever a peer sent, this thread goes on (connect mode: it is the only one)
            msg = (str(exc) if isinstance(exc, HandshakeError) else f"connection failed: {exc}"
                   if isinstance(exc, OSError) else f"handshake failed: {type(exc).__name__}: {exc}")
            if not self._stop:
                log.warning("datacomms tcp: dropping connection %s %s: %s", "from" if server else "to", where, msg)
                self._on_error(HandshakeError(msg) if not isinstance(exc, HandshakeError) else exc)
            close_quietly(conn)
            if conn is not sock:
                close_quietly(sock)
            return False
        finally:
            if tls:
                with self._mu:
                    self._pending.discard(tls[0])
        if self._stop:
            close_quietly(conn)
            return False
        try:
            self._on_ready(conn, peer, reader, where)
        except Exception as exc:   # e.g. out of descriptors: this connection only
            log.warning("datacomms tcp: could not take connection %s %s: %s", "from" if server else "to", where, exc)
            close_quietly(conn)
            return False
        return True

    def _dial(self) -> socket.socket:
        """socket.create_connection, each socket in _pending while it connects (and
        after: the caller takes it out), so close() ends a connect that waits for
        an unanswered SYN at once instead of after handshake_timeout."""
        err: OSError | None = None
        for af, kind, proto, _, addr in socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM):
            sock = socket.socket(af, kind, proto)
            with self._mu:
                self._pending.add(sock)
            try:
                if self._stop:   # close() came before it could see sock in _pending
                    raise OSError("closing")
                sock.settimeout(self._hs_timeout)
                sock.connect(addr)
                return sock
            except OSError as exc:
                err = exc
                with self._mu:
                    self._pending.discard(sock)
                sock.close()
        raise err if err is not None else OSError(f"no address for {self.host}")

    def _connect(self) -> None:
        """One connection attempt (connect mode); on failure the next waits longer, up to backoff_max."""
        sock = None
        try:
            sock = self._dial()
        except OSError as exc:
            log.debug("datacomms tcp: connect to %s:%s failed: %s", self.host, self.port, exc)
            self.failure = f"connecting to {self.host}:{self.port} failed: {exc}"
        ok = False
        if sock is not None:
            try:
                try:
                    addr = sock.getpeername()   # the address connected to, whatever name led there
                except OSError:
                    addr = (self.host, self.port)
                ok = self._finish(sock, addr, server=False)
            finally:
                with self._mu:
                    self._pending.discard(sock)
        if ok:
            self._want = False
            self._backoff = 0.0
            self.failure = None
            return
        self._backoff = min(self._backoff_max, max(0.02, self._backoff * 2))
        self._next_try = time.monotonic() + self._backoff
