"""Cross-process throughput and latency measurements, shared by
benchmarks/test_shm.py and the future ``datacomms bench`` command.

A *pump* is a child process that publishes bursts on request; the parent
receives them. Throughput = messages of one burst / time from the request to
the last message received (spawn cost excluded). Latency = receive time minus
the sender's time.time_ns() (one machine, one clock). Peers (multiprocessing
Queue, faster-fifo, pyzmq PUSH/PULL over ipc://) run through the same code and
are skipped when not installed.

    python -m datacomms.bench            # the whole matrix, printed as a table
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import struct
import tempfile
import time
import uuid
from typing import Any, Callable

import numpy as np

import datacomms as dc

SIZES = {"64B": 64, "4KiB": 4096, "1MiB": 1 << 20, "8MiB": 8 << 20}
_CTX = mp.get_context("spawn")
_TS = struct.Struct("<q")


def available_peers() -> list[str]:
    peers = ["mpqueue"]
    for mod, name in (("faster_fifo", "faster-fifo"), ("zmq", "zmq-ipc")):
        try:
            __import__(mod)
            peers.append(name)
        except ImportError:
            pass
    return peers


# ------------------------------------------------------------------ endpoints
# kind: "cython" | "python" (datacomms shm), "cython-zc" (loan + copy=False), or a peer name.


def _dc_payload(size: int) -> Any:
    return np.full(size, 7, dtype=np.uint8) if size >= (1 << 20) else b"x" * size


def _make_sender(kind: str, address: Any, size: int) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    """(send one message, send one stamped with the time now, close) in the child.
    datacomms frames carry their own timestamp, so both senders are the same there."""
    if kind in ("cython", "python", "cython-zc"):
        backend = "cython" if kind == "cython-zc" else kind
        # a ring of a few big messages stays in the last-level cache; small ones get 16 MiB
        pub = dc.Publisher(address, backend=backend, on_full="block",
                           capacity=4 * size if size >= (1 << 20) else 16 << 20)
        pub.wait_for_subscribers(1, timeout=60)
        if kind == "cython-zc":
            def send() -> None:
                loan = pub.loan(size, np.uint8)  # the producer fills loan.array in place
                loan.commit()
            return send, send, pub.close
        plain = functools.partial(pub.send, _dc_payload(size))
        return plain, plain, pub.close
    payload = bytes(size)
    buf = bytearray(size)

    def stamped() -> bytes:
        _TS.pack_into(buf, 0, time.time_ns())
        return bytes(buf)
    if kind in ("mpqueue", "faster-fifo"):
        q = address
        return functools.partial(q.put, payload), (lambda: q.put(stamped())), (lambda: None)
    if kind == "zmq-ipc":
        import zmq
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.connect(address)
        copy = size < 65536
        return (functools.partial(sock.send, payload, copy=copy), (lambda: sock.send(stamped(), copy=copy)),
                (lambda: (sock.close(0), ctx.term())))
    raise ValueError(kind)


def _make_receiver(kind: str, address: Any, spin_us: float) -> tuple[Callable[[], Any], Callable[[], int],
                                                                     Callable[[], None]]:
    """(receive one message, receive one and return its send time in ns, close) in the parent."""
    if kind in ("cython", "python", "cython-zc"):
        backend = "cython" if kind == "cython-zc" else kind
        sub = dc.Subscriber(address, backend=backend, spin_us=spin_us)
        if kind == "cython-zc":
            def recv_zc() -> Any:
                return sub.recv(copy=False)
            return recv_zc, (lambda: recv_zc().timestamp_ns), sub.close
        return (lambda: sub.recv()), (lambda: sub.recv().timestamp_ns), sub.close
    if kind == "mpqueue":
        return address.get, (lambda: _TS.unpack_from(address.get())[0]), (lambda: None)
    if kind == "faster-fifo":
        return (functools.partial(address.get, timeout=60), (lambda: _TS.unpack_from(address.get(timeout=60))[0]),
                (lambda: None))
    if kind == "zmq-ipc":
        import zmq
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(address)
        return sock.recv, (lambda: _TS.unpack_from(sock.recv(copy=True))[0]), (lambda: (sock.close(0), ctx.term()))
    raise ValueError(kind)


def _pump_main(kind: str, address: Any, size: int, conn: Any) -> None:
    send, send_stamped, close = _make_sender(kind, address, size)
    try:
        while True:
            cmd = conn.recv()
            if cmd is None:
                break
            n, hz = cmd
            if hz:
                period = 1.0 / hz
                nxt = time.perf_counter()
                for _ in range(n):
                    nxt += period
                    left = nxt - time.perf_counter()
                    if left > 3e-4:
                        time.sleep(left - 2e-4)   # sleep most of the period, spin the rest for precision
                    while time.perf_counter() < nxt:
                        pass
                    send_stamped()
            else:
                for _ in range(n):
                    send()
            conn.send(True)
    finally:
        close()


class Pump:
    """A publishing child of one kind and payload size, plus the receiving end in this process."""

    def __init__(self, kind: str, size: int, spin_us: float = 0.0) -> None:
        self.kind = kind
        self.size = size
        address: Any
        if kind in ("cython", "python", "cython-zc"):
            address = f"shm://bench{uuid.uuid4().hex[:10]}"
        elif kind == "mpqueue":
            address = _CTX.Queue()
        elif kind == "faster-fifo":
            import faster_fifo
            address = faster_fifo.Queue(max_size_bytes=max(64 << 20, 4 * size))
        elif kind == "zmq-ipc":
            address = f"ipc://{tempfile.gettempdir()}/dc-bench-{uuid.uuid4().hex[:10]}"
        else:
            raise ValueError(kind)
        self._address = address
        self._conn, child = _CTX.Pipe()
        if kind == "zmq-ipc":
            self.recv, self.recv_ts, self._close = _make_receiver(kind, address, spin_us)
        self._proc = _CTX.Process(target=_pump_main, args=(kind, address, size, child), daemon=True)
        self._proc.start()
        if kind != "zmq-ipc":
            self.recv, self.recv_ts, self._close = _make_receiver(kind, address, spin_us)

    def latencies(self, n: int, hz: float) -> list[int]:
        """Asks for n messages at hz; returns the per-message one-way latencies in ns."""
        recv_ts = self.recv_ts
        self._conn.send((n, hz))
        lat = [0] * n
        for i in range(n):
            ts = recv_ts()
            lat[i] = time.time_ns() - ts
        self._conn.recv()
        return lat

    def burst(self, n: int) -> None:
        """Asks for n messages flat out and receives them: one recv() call per message."""
        recv = self.recv
        self._conn.send((n, 0))
        for _ in range(n):
            recv()
        self._conn.recv()

    def throughput(self, n: int) -> float:
        """Messages per second for one burst of n."""
        t0 = time.perf_counter()
        self.burst(n)
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._close()
        if self.kind == "zmq-ipc":
            try:
                os.unlink(self._address[len("ipc://"):])
            except OSError:
                pass

    def __enter__(self) -> "Pump":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _echo_main(port_out: Any) -> None:
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_out.send(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(64)
        if not data:
            break
        conn.sendall(data)
    conn.close()
    srv.close()


def tcp_echo_rtt(n: int = 2000, hz: float = 1000.0) -> dict[str, float]:
    """Round trip of 64 B through a plain Python TCP echo child at hz: this machine's wake-up reference."""
    import socket
    parent, child = _CTX.Pipe()
    proc = _CTX.Process(target=_echo_main, args=(child,), daemon=True)
    proc.start()
    sock = socket.create_connection(("127.0.0.1", parent.recv()))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    rtt = []
    try:
        for i in range(n + 100):
            time.sleep(1.0 / hz)
            t0 = time.perf_counter_ns()
            sock.sendall(msg)
            got = 0
            while got < 64:
                got += len(sock.recv(64 - got))
            if i >= 100:
                rtt.append(time.perf_counter_ns() - t0)
    finally:
        sock.close()
        proc.join(10)
    return percentiles(rtt)


def burst_size(size: int) -> int:
    """Messages per burst: about 64 MiB or 200k messages, whichever is fewer."""
    return max(20, min(200_000, (64 << 20) // max(size, 64)))


def percentiles(lat: list[int]) -> dict[str, float]:
    a = np.sort(np.asarray(lat, dtype=np.int64)) / 1000.0
    return {"p50_us": float(a[len(a) // 2]), "p99_us": float(a[min(len(a) - 1, int(len(a) * 0.99))]),
            "max_us": float(a[-1])}


def main() -> None:  # pragma: no cover - a report, not a test
    kinds = ["cython", "python"] + available_peers()
    print(f"{'kind':<12}{'size':>6}{'msg/s':>14}{'MB/s':>10}")
    for label, size in SIZES.items():
        for kind in kinds + (["cython-zc"] if size >= (1 << 20) else []):
            n = burst_size(size) if kind not in ("python", "mpqueue") else burst_size(size) // 4
            with Pump(kind, size, spin_us=50) as pump:
                pump.throughput(max(10, n // 10))  # warm the pages and the caches
                rate = max(pump.throughput(n) for _ in range(3))
            print(f"{kind:<12}{label:>6}{rate:>14,.0f}{rate * size / 1e6:>10,.0f}", flush=True)
    print("\none-way latency, 64 B at 1 kHz, 2000 messages")
    for kind, spin in [("cython", 2000.0), ("cython", 0.0), ("python", 2000.0), ("python", 0.0)] + \
            [(k, 0.0) for k in available_peers()]:
        with Pump(kind, 64, spin_us=spin) as pump:
            pump.latencies(200, 1000)
            p = percentiles(pump.latencies(2000, 1000))
        mode = "busy-poll" if spin else "sleeping"
        print(f"{kind:<12}{mode:<10} p50 {p['p50_us']:8.1f} us  p99 {p['p99_us']:8.1f} us  max {p['max_us']:8.1f} us",
              flush=True)
    p = tcp_echo_rtt()
    print(f"{'tcp echo':<12}{'RTT':<10} p50 {p['p50_us']:8.1f} us  p99 {p['p99_us']:8.1f} us  max {p['max_us']:8.1f} us")


if __name__ == "__main__":
    main()
