"""A fault-injecting TCP proxy for the tests: listens on loopback, forwards each
accepted connection to an upstream address, and on command delays, stalls,
truncates or cuts what it forwards.

    with FaultProxy(pub.address) as proxy:
        sub = dc.Subscriber(proxy.url)
        proxy.cut()                 # close every connection now (both sides see it)
        proxy.truncate()            # forward up to the middle of a later frame, then cut
        proxy.stall()               # stop forwarding, keep the connections open
        proxy.resume()
        proxy.delay = 0.05          # hold every chunk this long before forwarding it

New connections after a cut or a stall are forwarded normally. Threads, one
pair per connection; everything is closed and joined by close().
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

FRAME_ALIGN = 64  # every datacomms frame length is a multiple of this


class _Link:
    """One proxied connection: client <-> upstream, a pump thread per direction."""

    def __init__(self, proxy: "FaultProxy", client: socket.socket, upstream: socket.socket) -> None:
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.down_bytes = 0             # upstream -> client, forwarded so far
        self.truncate_at: int | None = None
        self.stalled = False
        self.closed = threading.Event()
        self.threads = [threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True),
                        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while not self.closed.is_set():
                if self.stalled:
                    time.sleep(0.01)
                    continue
                if not select.select([src], [], [], 0.05)[0]:
                    continue
                data = src.recv(1 << 16)
                if not data:
                    break
                if self.proxy.delay:
                    time.sleep(self.proxy.delay)
                if down and self.truncate_at is not None:
                    room = self.truncate_at - self.down_bytes
                    if room <= len(data):
                        dst.sendall(data[:room])
                        self.down_bytes += room
                        self.proxy.truncated += 1
                        break
                dst.sendall(data)
                if down:
                    self.down_bytes += len(data)
        except OSError:
            pass
        self.cut()

    def cut(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def join(self) -> None:
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(5)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.accepted = 0
        self.truncated = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = self._listener.getsockname()
        self.url = f"tcp://127.0.0.1:{self.address[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._links.append(_Link(self, client, upstream))
                self.accepted += 1

    def _live(self) -> list[_Link]:
        with self._lock:
            return [link for link in self._links if not link.closed.is_set()]

    def cut(self) -> int:
        """Closes every open connection; returns how many."""
        links = self._live()
        for link in links:
            link.cut()
        return len(links)

    def truncate(self, after: int = 4096) -> None:
        """Each open connection forwards at least ``after`` more bytes downstream,
        stops in the middle of a frame (never on a 64-byte frame boundary), and is cut."""
        for link in self._live():
            at = link.down_bytes + after
            link.truncate_at = at - at % FRAME_ALIGN + FRAME_ALIGN // 2 + 5

    def stall(self) -> None:
        """Stops forwarding on every open connection, which stays open."""
        for link in self._live():
            link.stalled = True

    def resume(self) -> None:
        for link in self._live():
            link.stalled = False

    @property
    def connections(self) -> int:
        return len(self._live())

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.cut()
            link.join()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
