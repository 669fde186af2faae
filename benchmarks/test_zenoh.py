"""zenoh:// beside bare zenoh-python doing the same work.

Both sides run two zenoh peer sessions in one process joined over loopback TCP
(the subscriber listens, the publisher connects), blocking congestion control,
and a receive path that copies the payload out of zenoh and hands it to the
reading thread through a condition-guarded deque, the least a bare zenoh user
writing a recv(timeout) must do. Bare zenoh copies the array into a bytearray
it keeps (as datacomms does with large frames; zenoh-python's put takes only
bytes or bytearray) and turns what arrives back into an array with
np.frombuffer; datacomms sends and decodes its frame (header, dtype, shape, seq,
timestamp, per-publisher loss accounting). "bare_tobytes" is bare zenoh sending
``arr.tobytes()``, a new 8 MiB bytes per message, shown because the glibc heap
then often gives pages back after every message and faults them in again, which
halves throughput (docs/zenoh.md, "Large messages"). 64 B messages are bytes on
both sides (raw frames), 8 MiB ones numpy arrays.

"bare_fifo" is bare zenoh without a callback: the reader takes samples out of
zenoh's FIFO channel itself (``recv()``, which has no timeout), so zenoh's
thread never takes the GIL; the "datacomms:*:fifo" rows (``Subscriber(...,
fifo=True)``, docs/zenoh.md) do the same and are held against it.

Publishers and subscribers are plain zenoh ones on both sides (datacomms with
history=0 / history=False, which declares plain ones), with the sessions' other
defaults (timestamping off on both sides); datacomms' publishers declare an
encoding naming their id, which every sample carries.

The machine this runs on is small and shared, and one run of one pair swings by
2x (three threads on two cores and one GIL; where the allocator puts 8 MiB
buffers, fresh pages or reused ones), so a run is ROUNDS rounds, each measuring
every pair in turn, the order rotating from round to round. Reported: the median
over rounds of each figure, the median of the per-round ratios to bare zenoh,
and the process CPU time per message (all threads), which is what datacomms adds
and moves less with the machine's load than wall-clock rates do.

One process holds the sender, zenoh's callback thread and the reader, which
share one GIL: how the three hand it to each other moves 64 B throughput by
more than the 10% the target allows (bare zenoh against itself, as
``bare_tobytes`` at 64 B is, reads 0.9-1.5x). So 64 B throughput is also
measured across processes ("64B_xproc"), as publishers and subscribers are
used: the publisher in a child process of its own (bare zenoh-python or
datacomms, ``python benchmarks/test_zenoh.py child PAIR COUNT``), sending COUNT
messages per "go" line, and this process receiving them with the pair's own
subscriber; the figure is messages over the time from "go" to the last one
received, the cpu figure this (receiving) process's CPU per message.

Run with pytest-benchmark (``pytest benchmarks/test_zenoh.py``; results in each
benchmark's extra_info) or as a script (``python benchmarks/test_zenoh.py
[ROUNDS]``) for a plain table. Figures are ratios within one run, never
assertions.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np
import pytest

zenoh = pytest.importorskip("zenoh")

import datacomms as dc  # noqa: E402
from datacomms.netbench import end_child, zenoh_peer_session  # noqa: E402
from conftest import run_once  # noqa: E402

SIZES = {"64B": 64, "8MiB": 8 << 20}
COUNTS = {"64B": 100000, "8MiB": 60}
XPROC_COUNT = 100000
N_LATENCY = 2000
ROUNDS = 5
BACKENDS = ("cython", "python")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bare:
    """The bare zenoh pair: one publisher, one callback subscriber with a queue (or, with
    fifo, a subscriber whose reader takes samples out of zenoh's FIFO channel)."""

    def __init__(self, fifo: bool = False) -> None:
        port = _port()
        self.sessions = [zenoh_peer_session(listen=f"tcp/127.0.0.1:{port}"),
                         zenoh_peer_session(connect=f"tcp/127.0.0.1:{port}")]
        self._subscribe(self.sessions[0], "bench/bare", fifo)
        self.pub = self.sessions[1].declare_publisher("bench/bare", congestion_control=zenoh.CongestionControl.BLOCK)
        deadline = time.monotonic() + 10
        while not self.pub.matching_status.matching and time.monotonic() < deadline:
            time.sleep(0.01)

    def _subscribe(self, session: Any, key: str, fifo: bool) -> None:
        self.q: deque[bytes] = deque()
        self.cond = threading.Condition()
        self.fifo = fifo
        if fifo:
            self.sub = session.declare_subscriber(key, zenoh.handlers.FifoChannel(1024))
            self._take = self.sub.handler.recv
        else:
            self.sub = session.declare_subscriber(key, self._on)

    def _on(self, sample: Any) -> None:
        b = sample.payload.to_bytes()
        with self.cond:
            self.q.append(b)
            self.cond.notify()

    buf: bytearray | None = None

    def send(self, data: Any) -> None:
        if isinstance(data, bytes):
            self.pub.put(data)
            return
        if self.buf is None or len(self.buf) != data.nbytes:
            self.buf = bytearray(data.nbytes)
        memoryview(self.buf)[:] = memoryview(data).cast("B")
        self.pub.put(self.buf)

    def recv(self) -> Any:
        if self.fifo:
            b = self._take().payload.to_bytes()
        else:
            with self.cond:
                while not self.q:
                    self.cond.wait()
                b = self.q.popleft()
        return b if len(b) < 1024 else np.frombuffer(b, dtype=np.uint8)

    def close(self) -> None:
        self.sub.undeclare()
        self.pub.undeclare()
        for s in self.sessions:
            s.close()


class BareTobytes(Bare):
    """Bare zenoh sending a new bytes per message (arr.tobytes())."""

    def send(self, data: Any) -> None:
        self.pub.put(data if isinstance(data, bytes) else data.tobytes())


class Ours:
    """The same pair through datacomms' zenoh:// transport."""

    def __init__(self, backend: str, fifo: bool = False) -> None:
        port = _port()
        self.sub = dc.Subscriber(f"zenoh://bench/dc?listen=tcp/127.0.0.1:{port}", backend=backend,
                                 history=False, fifo=fifo)
        self.pub = dc.Publisher(f"zenoh://bench/dc?connect=tcp/127.0.0.1:{port}", backend=backend,
                                on_full="block", history=0)
        self.pub.wait_for_subscribers(1, timeout=10)

    def send(self, data: Any) -> None:
        self.pub.send(data)

    def recv(self) -> Any:
        return self.sub.recv().data

    def close(self) -> None:
        self.pub.close()
        self.sub.close()


def _payload(size: int) -> Any:
    return bytes(size) if size < 1024 else np.ones(size, dtype=np.uint8)


def throughput(make: Callable[[], Any], size: int, n: int) -> dict[str, float]:
    """Messages and bytes per second for n messages of size bytes, sender and reader on two threads."""
    pair = make()
    try:
        arr = _payload(size)
        pair.send(arr)
        pair.recv()  # warm-up: routes are in place
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.extend(len(pair.recv()) for _ in range(n)))
        c0, t0 = time.process_time(), time.perf_counter()
        reader.start()
        for _ in range(n):
            pair.send(arr)
        reader.join()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert len(got) == n and got[-1] == size
        return {"msg_per_s": n / dt, "MiB_per_s": n * size / dt / (1 << 20), "cpu_us_per_msg": cpu / n * 1e6}
    finally:
        pair.close()


def latency(make: Callable[[], Any], size: int = 64, n: int = N_LATENCY) -> dict[str, float]:
    """One-way latency of one message at a time, send to the reader holding the array: p50/p99 us."""
    pair = make()
    try:
        arr = _payload(size)
        lat = []
        for i in range(n + 50):
            t0 = time.perf_counter_ns()
            pair.send(arr)
            pair.recv()
            if i >= 50:
                lat.append(time.perf_counter_ns() - t0)
        a = np.array(lat) / 1000.0
        return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}
    finally:
        pair.close()


class BareReceiver(Bare):
    """Bare zenoh's receiving half only, connected to a publisher in another process."""

    def __init__(self, port: int, fifo: bool = False) -> None:
        self.sessions = [zenoh_peer_session(connect=f"tcp/127.0.0.1:{port}")]
        self._subscribe(self.sessions[0], "bench/x", fifo)
        self.pub = None

    def close(self) -> None:
        self.sub.undeclare()
        self.sessions[0].close()


class OursReceiver:
    """datacomms' receiving half only, connected to a publisher in another process."""

    def __init__(self, backend: str, port: int, fifo: bool = False) -> None:
        self.sub = dc.Subscriber(f"zenoh://bench/x?connect=tcp/127.0.0.1:{port}", backend=backend, history=False,
                                 fifo=fifo)

    def recv(self) -> Any:
        return self.sub.recv().data

    def close(self) -> None:
        self.sub.close()


def child(name: str, count: int) -> None:
    """The publisher of a cross-process pair: listens on a port it prints, then sends
    count 64 B messages per "go" line on stdin, once its subscriber is there."""
    port = _port()
    data = _payload(64)
    if name.startswith("datacomms:"):
        pub = dc.Publisher(f"zenoh://bench/x?listen=tcp/127.0.0.1:{port}", backend=name.split(":")[1],
                           on_full="block", history=0)
        send, ready, close = pub.send, lambda: pub.wait_for_subscribers(1, timeout=30), pub.close
    else:
        session = zenoh_peer_session(listen=f"tcp/127.0.0.1:{port}")
        zpub = session.declare_publisher("bench/x", congestion_control=zenoh.CongestionControl.BLOCK)

        def ready() -> None:
            deadline = time.monotonic() + 30
            while not zpub.matching_status.matching and time.monotonic() < deadline:
                time.sleep(0.01)
        send, close = zpub.put, session.close
    print(port, flush=True)
    first = True
    for line in sys.stdin:
        n = int(line.split()[1]) if line.startswith("go") else 0
        if not n:
            break
        if first:  # the warm-up: outside the timed part
            ready()
            first = False
        for _ in range(n):
            send(data)
    close()


def throughput_xproc(name: str, n: int = XPROC_COUNT) -> dict[str, float]:
    """64 B messages per second from a publisher in a child process to this one."""
    proc = subprocess.Popen([sys.executable, __file__, "child", name, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        fifo = name.endswith("fifo")
        pair: Any = (OursReceiver(name.split(":")[1], port, fifo) if name.startswith("datacomms:")
                     else BareReceiver(port, fifo))
        try:
            proc.stdin.write("go 100\n")  # warm-up: routes are in place
            proc.stdin.flush()
            for _ in range(100):
                pair.recv()
            c0, t0 = time.process_time(), time.perf_counter()
            proc.stdin.write(f"go {n}\n")
            proc.stdin.flush()
            for _ in range(n - 1):
                pair.recv()
            last = pair.recv()
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert len(last) == 64
        finally:
            pair.close()
        return {"msg_per_s": n / dt, "cpu_us_per_msg": cpu / n * 1e6}
    finally:
        end_child(proc)


def makers() -> dict[str, Callable[[], Any]]:
    return {"bare_zenoh": Bare, "bare_tobytes": BareTobytes, "bare_fifo": lambda: Bare(fifo=True),
            **{f"datacomms:{b}": (lambda b=b: Ours(b)) for b in BACKENDS},
            **{f"datacomms:{b}:fifo": (lambda b=b: Ours(b, fifo=True)) for b in BACKENDS}}


def reference(name: str) -> str:
    """The bare pair a pair is held against: the one that receives the same way."""
    return "bare_fifo" if name.endswith(":fifo") else "bare_zenoh"


def one_pair(name: str) -> dict[str, Any]:
    make = makers()[name]
    row: dict[str, Any] = {label: throughput(make, size, COUNTS[label]) for label, size in SIZES.items()}
    row["64B_xproc"] = throughput_xproc(name)
    row["latency_64B"] = latency(make)
    return row


def rounds(fn: Callable[[str], dict[str, Any]], n_rounds: int = ROUNDS) -> dict[str, Any]:
    """fn(pair name) for every pair, n_rounds times, the order rotating each round. For each
    pair and figure: the median over rounds, and (not for bare zenoh) the median of the
    per-round ratios to bare zenoh's figure, so a round slowed by the machine's other
    work skews both sides of its own ratio."""
    names = list(makers())
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
    for r in range(n_rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            runs[name].append(fn(name))

    def figures(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in row.items():
            out.update(figures(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    flat = {k: [figures(row) for row in v] for k, v in runs.items()}
    out: dict[str, Any] = {"rounds": n_rounds}
    for name, rows in flat.items():
        med = {f: statistics.median(row[f] for row in rows) for f in rows[0]}
        if name != "bare_zenoh":
            ref = flat[reference(name)]
            med.update({f + "/bare": statistics.median(row[f] / bare[f] for row, bare in zip(rows, ref))
                        for f in rows[0]})
        out[name] = med
    return out


def run_all(n_rounds: int = ROUNDS) -> dict[str, Any]:
    return rounds(one_pair, n_rounds)


@pytest.mark.parametrize("label", list(SIZES))
def test_throughput(benchmark: Any, label: str) -> None:
    """Throughput of 64 B and 8 MiB messages: bare zenoh vs datacomms (both backends), ROUNDS rounds."""
    run_once(benchmark, lambda: rounds(lambda m: throughput(makers()[m], SIZES[label], COUNTS[label])))


def test_throughput_cross_process(benchmark: Any) -> None:
    """Throughput of 64 B messages from a publisher in another process: bare zenoh vs datacomms."""
    run_once(benchmark, lambda: rounds(throughput_xproc))


def test_latency(benchmark: Any) -> None:
    """One-way p50/p99 latency of 64 B messages sent one at a time: bare zenoh vs datacomms."""
    run_once(benchmark, lambda: rounds(lambda m: latency(makers()[m])))


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child(sys.argv[2], int(sys.argv[3]))
elif __name__ == "__main__":
    res = run_all(int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
    cols = [("64B msg/s", "64B.msg_per_s", "{:.0f}"), ("64B cpu us", "64B.cpu_us_per_msg", "{:.1f}"),
            ("xproc msg/s", "64B_xproc.msg_per_s", "{:.0f}"), ("xproc cpu us", "64B_xproc.cpu_us_per_msg", "{:.1f}"),
            ("8MiB MiB/s", "8MiB.MiB_per_s", "{:.0f}"), ("8MiB cpu ms", "8MiB.cpu_us_per_msg", "{:.0f}"),
            ("p50 us", "latency_64B.p50_us", "{:.1f}"), ("p99 us", "latency_64B.p99_us", "{:.1f}")]
    print(f"medians of {res['rounds']} rounds; (x.xx) = median of per-round ratios to bare zenoh "
          "(to bare_fifo for the :fifo rows)")
    print(f"{'':18}" + "".join(f"{c:>18}" for c, _, _ in cols))
    for name in makers():
        row = res[name]
        cells = []
        for _, f, fmt in cols:
            v = row[f] / 1000 if f == "8MiB.cpu_us_per_msg" else row[f]
            cells.append(fmt.format(v) + (f" ({row[f + '/bare']:.2f})" if f + "/bare" in row else ""))
        print(f"{name:18}" + "".join(f"{c:>18}" for c in cells))
