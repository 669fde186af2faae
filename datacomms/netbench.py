"""Cross-process network benchmarks, shared by benchmarks/test_net.py and a
future ``datacomms bench``: throughput (one process sends N messages, this
one receives them) and round trip (a child echoes every message back), for
datacomms tcp:// on each backend beside a plain persistent Python socket,
pyzmq (PUSH/PULL, REQ/REP) when installed, and a raw stream (sendall /
recv_into of whole buffers: the loopback's speed with no per-message work).

    python -m datacomms.netbench            # prints a table
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

PEERS = ("dc-cython", "dc-python", "socket", "zmq", "zenoh", "stream")
RTT_PEERS = ("dc-cython", "dc-python", "dc-cython-spin", "socket", "socket-2conn", "zmq", "zenoh")
SEED_PEERS = ("dc-cython", "dc-python", "socket")
ONE_WAY_PEERS = ("dc-cython", "dc-python", "dc-cython-spin", "socket", "zmq", "zenoh")
_TS = struct.Struct("<q")
_LEN = struct.Struct("<Q")


def _dc_kind(kind: str) -> tuple[str, float]:
    """'dc-cython' -> ('cython', 0); 'dc-cython-spin' -> ('cython', SPIN_US)."""
    parts = kind.split("-")
    return parts[1], SPIN_US if parts[-1] == "spin" else 0.0


SPIN_US = 500.0


def _payload(size: int) -> Any:
    return np.zeros(size, np.uint8) if size > 4096 else b"x" * size


# -- the child side: python -m datacomms.netbench child KIND MODE SIZE COUNT ADDR -------------

def _child(kind: str, mode: str, size: int, count: int, addr: str) -> None:
    data = _payload(size)
    if kind.startswith("dc-"):
        import datacomms as dc
        be, spin = _dc_kind(kind)
        if mode == "stamp":   # size is the rate in Hz here; the frame carries the send time
            pub = dc.Publisher("tcp://127.0.0.1:0", backend=be, on_full="block")
            print(pub.url, flush=True)
            pub.wait_for_subscribers(1, timeout=30)
            sys.stdin.readline()
            small = b"x" * 64
            _paced(count, size, lambda i: pub.send(small))
            pub.flush(10)
            sys.stdin.readline()
            pub.close()
            return
        if mode == "seed":   # size is the rate in Hz here
            pub = dc.Publisher("tcp://127.0.0.1:0", backend=be, on_full="block")
            print(pub.url, flush=True)
            pub.wait_for_subscribers(1, timeout=30)
            _paced(count, size, lambda i: pub.send(_joints(i)))
            pub.flush(10)
            sys.stdin.readline()
            pub.close()
            return
        if mode == "send":
            pub = dc.Publisher("tcp://127.0.0.1:0", backend=be, on_full="block")
            print(pub.url, flush=True)
            pub.wait_for_subscribers(1, timeout=30)
            print("ok", flush=True)
            while sys.stdin.readline().strip() == "go":
                for _ in range(count):
                    pub.send(data)
            pub.close()
        else:   # echo: subscribe to the parent, publish back
            sub = dc.Subscriber(addr, backend=be, reconnect=False, spin_us=spin)
            pub = dc.Publisher("tcp://127.0.0.1:0", backend=be, on_full="block")
            print(pub.url, flush=True)
            pub.wait_for_subscribers(1, timeout=30)
            try:
                while True:
                    pub.send(sub.recv(timeout=30).data)
            except dc.DataCommsError:
                pass
            pub.close()
            sub.close()
        return
    if kind == "zenoh":
        _zenoh_child(mode, size, count)
        return
    if kind == "zmq":
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH if mode in ("send", "stamp") else zmq.REP)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        print(f"tcp://127.0.0.1:{port}", flush=True)
        if mode == "stamp":
            sys.stdin.readline()
            _paced(count, size, lambda i: s.send(_stamped()))
            sys.stdin.readline()
        elif mode == "send":
            print("ok", flush=True)
            while sys.stdin.readline().strip() == "go":
                for _ in range(count):
                    s.send(data, copy=size <= 4096)
        else:
            while True:
                s.send(s.recv(copy=False), copy=False)
        return
    # plain sockets
    srv = socket.create_server(("127.0.0.1", 0))
    print(f"tcp://127.0.0.1:{srv.getsockname()[1]}", flush=True)
    conn, _ = srv.accept()
    # socket-2conn echoes: read the first connection, answer on the second
    out = srv.accept()[0] if kind == "socket-2conn" else conn
    srv.close()
    for s in {conn, out}:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "stamp":
        sys.stdin.readline()
        _paced(count, size, lambda i: conn.sendall(_LEN.pack(64) + _stamped()))
        sys.stdin.readline()
    elif mode == "seed":
        def send_one(i: int) -> None:
            body = json.dumps({"ts_ns": time.time_ns(), **_joints(i)}).encode()
            conn.sendall(_LEN.pack(len(body)) + body)
        _paced(count, size, send_one)
        sys.stdin.readline()
    elif mode == "send":
        print("ok", flush=True)
        view = memoryview(data)
        while sys.stdin.readline().strip() == "go":
            if kind == "stream":
                for _ in range(count):
                    conn.sendall(view)
            elif size <= 4096:
                msg = _LEN.pack(size) + bytes(data)
                for _ in range(count):
                    conn.sendall(msg)
            else:
                for _ in range(count):
                    conn.sendall(_LEN.pack(size))
                    conn.sendall(view)
    else:
        r = _SockReader(conn)
        while True:
            m = r.read()
            if m is None:
                return
            out.sendall(_LEN.pack(len(m)) + bytes(m))


# -- bare zenoh-python, the way its own examples use it: a peer listening on
# loopback (the child), a peer connecting to it (this process), multicast
# scouting off, blocking congestion control, a FIFO channel on the receiving side.

def zenoh_peer_session(listen: str = "", connect: str = "") -> Any:
    """A zenoh peer session on loopback endpoints only (no multicast scouting)."""
    import zenoh
    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([listen] if listen else []))
    c.insert_json5("connect/endpoints", json.dumps([connect] if connect else []))
    return zenoh.open(c)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zenoh_child(mode: str, size: int, count: int) -> None:
    """send: count messages of size bytes per "go"; echo: ping back every
    message; stamp: count 64 B stamped messages at size Hz."""
    import zenoh
    port = _free_port()
    session = zenoh_peer_session(listen=f"tcp/127.0.0.1:{port}")
    block = zenoh.CongestionControl.BLOCK
    print(f"tcp://127.0.0.1:{port}", flush=True)
    if mode == "echo":
        pong = session.declare_publisher("netbench/pong", congestion_control=block)
        ping = session.declare_subscriber("netbench/ping", lambda s: pong.put(s.payload))
        sys.stdin.readline()   # until the parent is done
        ping.undeclare()
        session.close()
        return
    pub = session.declare_publisher("netbench/data", congestion_control=block)
    if mode == "stamp":
        sys.stdin.readline()
        _zenoh_matched(pub)
        _paced(count, size, lambda i: pub.put(_stamped()))
        sys.stdin.readline()
        session.close()
        return
    payload = bytes(_payload(size))
    print("ok", flush=True)
    while sys.stdin.readline().strip() == "go":
        _zenoh_matched(pub)
        for _ in range(count):
            pub.put(payload)
    session.close()


def _zenoh_matched(pub: Any) -> None:
    """Waits until the child's declarations reached this session (else the first puts reach nobody)."""
    deadline = time.monotonic() + 10
    while not pub.matching_status.matching:
        if time.monotonic() > deadline:
            raise TimeoutError("the zenoh child never matched")
        time.sleep(0.01)


def _stamped() -> bytes:
    """64 bytes that start with the time now (time.time_ns())."""
    return _TS.pack(time.time_ns()) + b"x" * 56


def _joints(i: int) -> dict[str, float]:
    return {"timestamp": time.time(), **{f"joint_{j}": 0.1 * j + i * 1e-4 for j in range(1, 9)}}


def _paced(count: int, rate: float, send_one: Callable[[int], None]) -> None:
    """Calls send_one(i) count times at rate Hz, sleeping (time.sleep) until each slot."""
    period = 1.0 / rate
    t0 = time.perf_counter()
    for i in range(count):
        send_one(i)
        delay = t0 + (i + 1) * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class _SockReader:
    """Length-prefixed messages from a socket the way a careful hand-rolled client reads them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(1 << 20)
        self.start = self.end = 0

    def _need(self, n: int) -> bool:
        while self.end - self.start < n:
            if len(self.buf) - self.start < n:
                keep = self.buf[self.start:self.end]
                if len(self.buf) < n:
                    self.buf = bytearray(n)
                self.buf[:len(keep)] = keep
                self.start, self.end = 0, len(keep)
            got = self.sock.recv_into(memoryview(self.buf)[self.end:])
            if not got:
                return False
            self.end += got
        return True

    def read(self) -> memoryview | None:
        if not self._need(8):
            return None
        (n,) = _LEN.unpack_from(self.buf, self.start)
        if not self._need(8 + n):
            return None
        m = memoryview(self.buf)[self.start + 8:self.start + 8 + n]
        self.start += 8 + n
        return m


# -- the parent side --------------------------------------------------------------------

class _Child:
    def __init__(self, kind: str, mode: str, size: int, count: int, addr: str = "-", cpu: int | None = None) -> None:
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        self.p = subprocess.Popen([sys.executable, "-m", "datacomms.netbench", "child", kind, mode, str(size),
                                   str(count), addr], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  preexec_fn=pin)
        assert self.p.stdout is not None
        self.url = self.p.stdout.readline().strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def expect_ok(self) -> None:
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "ok"

    def go(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def close(self) -> None:
        end_child(self.p, 3)


def end_child(p: subprocess.Popen, grace: float = 10) -> None:
    """Ends a child that stops when its stdin closes: closes stdin, waits up to
    grace seconds, kills it if it is still there, and closes its stdout."""
    try:
        if p.stdin is not None:
            p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if p.stdout is not None:
        p.stdout.close()


def receiver(kind: str, size: int, count: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(run, close): run() has a child send count messages of size bytes and
    receives them all; call it repeatedly, then close()."""
    child = _Child(kind, "send", size, count)
    if kind.startswith("dc-"):
        import datacomms as dc
        sub = dc.Subscriber(child.url, backend=kind[3:])
        child.expect_ok()

        def run() -> None:
            child.go()
            for _ in range(count):
                sub.recv(timeout=30)

        def close() -> None:
            child.close()
            sub.close()
        return run, close
    if kind == "zenoh":
        import zenoh
        session = zenoh_peer_session(connect=f"tcp/127.0.0.1:{child.port}")
        zsub = session.declare_subscriber("netbench/data", zenoh.handlers.FifoChannel(1024))
        child.expect_ok()
        time.sleep(0.5)   # the subscription reaches the child before it publishes

        def run() -> None:
            child.go()
            for _ in range(count):
                zsub.recv().payload.to_bytes()

        def close() -> None:
            child.close()
            session.close()
        return run, close
    if kind == "zmq":
        import zmq
        ctx = zmq.Context()
        s = ctx.socket(zmq.PULL)
        s.connect(child.url)
        child.expect_ok()

        def run() -> None:
            child.go()
            for _ in range(count):
                s.recv(copy=size <= 4096)

        def close() -> None:
            child.close()
            s.close(linger=0)
            ctx.term()
        return run, close
    sock = socket.create_connection(("127.0.0.1", child.port))
    child.expect_ok()
    if kind == "stream":
        buf = bytearray(size)
        view = memoryview(buf)

        def run() -> None:
            child.go()
            for _ in range(count):
                got = 0
                while got < size:
                    n = sock.recv_into(view[got:])
                    if not n:
                        raise ConnectionError("stream ended")
                    got += n
    else:
        r = _SockReader(sock)

        def run() -> None:
            child.go()
            for _ in range(count):
                r.read()

    def close() -> None:
        child.close()
        sock.close()
    return run, close


def throughputs(kinds: Sequence[str], size: int, count: int, rounds: int = 5) -> dict[str, list[float]]:
    """Messages per second of each kind over rounds bursts of count messages of
    size bytes (receiver()), after one warm-up burst each; the kinds take turns
    (taking_turns), all their children alive throughout."""
    runs: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}

    def timed(run: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        run()
        return count / (time.perf_counter() - t0)
    try:
        for kind in kinds:
            runs[kind] = receiver(kind, size, count)
        for run, _ in runs.values():
            run()
        return taking_turns({k: functools.partial(timed, run) for k, (run, _) in runs.items()}, rounds)
    finally:
        for _, close in runs.values():
            close()


class Echo:
    """One sender and its echoing child; once() is one round trip (seconds)."""

    def __init__(self, kind: str, size: int, cpu: int | None = None) -> None:
        self.kind = kind
        data = _payload(size)
        if kind.startswith("dc-"):
            import datacomms as dc
            be, spin = _dc_kind(kind)
            pub = dc.Publisher("tcp://127.0.0.1:0", backend=be, on_full="block")
            self.child = _Child(kind, "echo", size, 0, pub.url, cpu)
            sub = dc.Subscriber(self.child.url, backend=be, spin_us=spin)
            pub.wait_for_subscribers(1, timeout=30)
            self._ends: tuple[Any, ...] = (pub, sub)
            send, recv = pub.send, sub.recv
            self._trip = lambda: (send(data), recv(timeout=30))
        elif kind == "zenoh":
            import zenoh
            self.child = _Child(kind, "echo", size, 0, cpu=cpu)
            session = zenoh_peer_session(connect=f"tcp/127.0.0.1:{self.child.port}")
            ping = session.declare_publisher("netbench/ping", congestion_control=zenoh.CongestionControl.BLOCK)
            pong = session.declare_subscriber("netbench/pong", zenoh.handlers.FifoChannel(16))
            _zenoh_matched(ping)
            time.sleep(0.2)   # and the child's pong subscription reached us
            self._ends = (session,)
            payload = bytes(data)
            self._trip = lambda: (ping.put(payload), pong.recv())
        elif kind == "zmq":
            import zmq
            self.child = _Child(kind, "echo", size, 0, cpu=cpu)
            ctx = zmq.Context()
            s = ctx.socket(zmq.REQ)
            s.connect(self.child.url)
            self._ends = (s, ctx)
            self._trip = lambda: (s.send(data), s.recv())
        else:
            # socket: one connection both ways. socket-2conn: one each way, as
            # a publisher and a subscriber on each side have (each side's
            # receiver then acknowledges on its own, where one connection
            # carries the acknowledgement on the reply)
            self.child = _Child(kind, "echo", size, 0, cpu=cpu)
            sock = socket.create_connection(("127.0.0.1", self.child.port))
            back = socket.create_connection(("127.0.0.1", self.child.port)) if kind == "socket-2conn" else sock
            for s in {sock, back}:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ends = tuple({sock, back})
            r = _SockReader(back)
            msg = _LEN.pack(size) + bytes(data)
            self._trip = lambda: (sock.sendall(msg), r.read())
        for _ in range(50):   # the first ones warm both ends up
            self._trip()

    def once(self) -> float:
        t0 = time.perf_counter()
        self._trip()
        return time.perf_counter() - t0

    def trips(self, n: int, hz: float = 0.0) -> list[float]:
        """n round trips (seconds), back to back, or each after sleeping 1/hz."""
        if not hz:
            return [self.once() for _ in range(n)]
        out = []
        for _ in range(n):
            time.sleep(1.0 / hz)
            out.append(self.once())
        return out

    def close(self) -> None:
        if self.kind == "zmq":
            s, ctx = self._ends
            s.close(linger=0)
            ctx.term()
            self.child.p.kill()
        else:
            for end in self._ends:
                end.close()
        self.child.close()


PLACEMENTS = {"": None, "same core": (0, 0), "across cores": (0, 1)}


def taking_turns(measures: dict[Any, Callable[[], Any]], rounds: int) -> dict[Any, list[Any]]:
    """Each measure's results over rounds calls, the kinds taking turns with all
    of them set up throughout: this machine's speed and wake-up cost drift by
    several times within minutes, and taking turns makes the drift fall alike
    on every kind, so their ratio means something. Each round starts one kind
    later (a b c, b c a, c a b, ...): what ran just before a kind moves its
    figure too (8 MiB copies read 10-15 % faster right after pyzmq's turn
    than first in the round), so no kind keeps one place."""
    keys = list(measures)
    out: dict[Any, list[Any]] = {k: [] for k in keys}
    for r in range(rounds):
        start = r % len(keys) if keys else 0
        for k in keys[start:] + keys[:start]:
            out[k].append(measures[k]())
    return out


def round_trips(kinds: Sequence[str], size: int, count: int, rounds: int = 20,
                placement: str = "") -> dict[str, list[float]]:
    """count round-trip times (seconds) per kind of one message of size bytes
    through an echoing child, back to back. The kinds take turns
    (taking_turns), count // rounds trips at a time.

    placement (PLACEMENTS): "" leaves the processes to the scheduler; "same
    core" pins this process and the children to CPU 0, "across cores" the
    children to CPU 1. On a VM, waking a process on another (idle) vCPU costs
    far more than the messaging does, and where the scheduler puts each pair
    decides most of a free-running comparison."""
    pairs: dict[str, Echo] = {}
    cpus = PLACEMENTS[placement]
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        for k in kinds:
            pairs[k] = Echo(k, size, None if cpus is None else cpus[1])
        per = max(1, count // rounds)
        turns = taking_turns({k: functools.partial(pair.trips, per) for k, pair in pairs.items()},
                             -(-count // per))
    finally:
        for pair in pairs.values():
            pair.close()
        os.sched_setaffinity(0, before)
    return {k: [t for chunk in v for t in chunk][:count] for k, v in turns.items()}


def one_way(kind: str, count: int = 2000, rate: int = 1000) -> list[float]:
    """One-way latencies (µs, receive time minus send time, one clock) of count
    64 B messages a child sends at rate Hz, the first 100 left out (warm-up)."""
    warm = 100
    child = _Child(kind, "stamp", rate, count + warm)
    out: list[float] = []
    ns = time.time_ns
    try:
        if kind.startswith("dc-"):
            import datacomms as dc
            be, spin = _dc_kind(kind)
            sub = dc.Subscriber(child.url, backend=be, spin_us=spin)
            take: Callable[[], int] = lambda: sub.recv(timeout=30).timestamp_ns  # noqa: E731
            done: Callable[[], None] = sub.close
        elif kind == "zmq":
            import zmq
            ctx = zmq.Context()
            s = ctx.socket(zmq.PULL)
            s.connect(child.url)
            take = lambda: _TS.unpack_from(s.recv())[0]  # noqa: E731
            done = lambda: (s.close(linger=0), ctx.term())  # noqa: E731
        elif kind == "zenoh":
            import zenoh
            session = zenoh_peer_session(connect=f"tcp/127.0.0.1:{child.port}")
            zsub = session.declare_subscriber("netbench/data", zenoh.handlers.FifoChannel(1024))
            take = lambda: _TS.unpack_from(zsub.recv().payload.to_bytes())[0]  # noqa: E731
            done = session.close
        else:
            sock = socket.create_connection(("127.0.0.1", child.port))
            r = _SockReader(sock)
            take = lambda: _TS.unpack_from(r.read())[0]  # noqa: E731
            done = sock.close
        try:
            time.sleep(0.5)   # connected, subscribed, matched
            child.go()
            for i in range(count + warm):
                t = take()
                if i >= warm:
                    out.append((ns() - t) / 1e3)
        finally:
            done()
    finally:
        child.close()
    return out


def seed(kind: str, rate: int, count: int) -> dict[str, Any]:
    """The seed scenario: a child publishes count joint-state dicts at rate Hz;
    returns the subscriber's stats plus the lowest rate seen in any 1 s window.
    kind "socket": the same JSON over a plain persistent socket (length prefix,
    json.loads), the reference for what the machine's scheduling alone costs."""
    child = _Child(kind, "seed", rate, count)
    times = []
    if kind == "socket":
        sock = socket.create_connection(("127.0.0.1", child.port))
        r = _SockReader(sock)
        lat = []
        try:
            for _ in range(count):
                m = json.loads(bytes(r.read()))   # type: ignore[arg-type]
                now = time.monotonic()
                lat.append((time.time_ns() - m["ts_ns"]) / 1e3)
                times.append(now)
        finally:
            child.close()
            sock.close()
        lat.sort()
        gaps = [b - a for a, b in zip(times, times[1:])]
        st = {"received": len(times), "lost": 0, "longest_gap_s": max(gaps, default=0.0),
              "latency_p50_us": lat[len(lat) // 2], "latency_p99_us": lat[int(len(lat) * 0.99)]}
    else:
        import datacomms as dc
        be, spin = _dc_kind(kind)
        sub = dc.Subscriber(child.url, backend=be, spin_us=spin)
        try:
            for _ in range(count):
                sub.recv(timeout=30)
                times.append(time.monotonic())
            st = sub.stats.as_dict()
        finally:
            child.close()
            sub.close()
    per_s = [0] * (int(times[-1] - times[0]) + 1)
    for t in times:
        per_s[int(t - times[0])] += 1
    full = per_s[:-1] or per_s   # the last second is partial
    st["min_hz"] = min(full)
    return st


def placements() -> list[str]:
    """The placements this machine can do (across cores needs two CPUs)."""
    have = os.sched_getaffinity(0)
    return [p for p, c in PLACEMENTS.items() if c is None or set(c) <= have]


def available(kind: str) -> bool:
    if kind == "zenoh":
        try:
            import zenoh  # noqa: F401
        except ImportError:
            return False
    if kind == "zmq":
        try:
            import zmq  # noqa: F401
        except ImportError:
            return False
    if kind.startswith("dc-cython"):
        try:
            import datacomms.backend as b
            b.get("cython")
        except ImportError:
            return False
    return True


def main() -> None:
    sizes = [(64, 100_000), (8 << 20, 100)]
    print(f"{'peer':<10} {'size':>8} {'msg/s':>12} {'MB/s':>10}  (median of 5 bursts, the peers taking turns)")
    for size, count in sizes:
        kinds = [k for k in PEERS if available(k) and not (k == "stream" and size < 4096)]
        for kind, rates in throughputs(kinds, size, count).items():
            rate = float(np.median(rates))
            print(f"{kind:<10} {size:>8} {rate:>12.0f} {rate * size / 1e6:>10.1f}", flush=True)
    print(f"\none-way at 1 kHz, 64 B\n{'peer':<14} {'p50 us':>10} {'p99 us':>10}")
    for kind in ONE_WAY_PEERS:
        if available(kind):
            lat = sorted(one_way(kind))
            print(f"{kind:<14} {lat[len(lat) // 2]:>10.1f} {lat[int(len(lat) * 0.99)]:>10.1f}", flush=True)
    print(f"\nround trip\n{'peer':<10} {'size':>8} {'p50 us':>10} {'p99 us':>10}")
    for placement in placements():
        for kind, rtt in round_trips([k for k in RTT_PEERS if available(k)], 64, 2000, placement=placement).items():
            rtt.sort()
            print(f"{kind:<10} {64:>8} {rtt[len(rtt) // 2] * 1e6:>10.1f} {rtt[int(len(rtt) * 0.99)] * 1e6:>10.1f} "
                  f"{placement}", flush=True)
    print(f"\n{'peer':<10} {'rate':>6} {'count':>6} {'lost':>5} {'min Hz':>7} {'longest gap ms':>15}")
    for kind in SEED_PEERS:
        for rate, count in ((1000, 10_000), (50, 500)):
            st = seed(kind, rate, count)
            print(f"{kind:<10} {rate:>6} {count:>6} {st['lost']:>5} {st['min_hz']:>7} "
                  f"{st['longest_gap_s'] * 1e3:>15.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
    os._exit(0) if len(sys.argv) > 1 and sys.argv[1] == "child" else None
