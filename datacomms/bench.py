"""Cross-process throughput and latency measurements, shared by
benchmarks/test_shm.py and the future ``datacomms bench`` command.

A *pump* is a child process that publishes bursts on request; the parent
receives them. Throughput = messages of one burst / time from the request to
the last message received (spawn cost excluded). Latency = receive time minus
the sender's time.time_ns() (one machine, one clock). Peers (multiprocessing
Queue, faster-fifo, pyzmq PUSH/PULL over ipc://, iceoryx2 copying and
zero-copy) run through the same code and are skipped when not installed.
iceoryx2's Python binding has no blocking receive on a publish-subscribe port
(waiting needs a separate event service), so its receiver always busy-polls.
For one-way latency only, ``spin-flag`` is the floor of this method in Python:
the sender stores its time in a shared mapping, the receiver spins on it
(lossy, no queue): what the machine and the interpreter cost before any
messaging does, measured beside the rest in the same run.

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
SPIN_FLAG = "spin-flag"


def available_peers() -> list[str]:
    """Peers installed here that copy the payload (one send and one recv call per message)."""
    peers = ["mpqueue"]
    for mod, name in (("faster_fifo", "faster-fifo"), ("zmq", "zmq-ipc"), ("iceoryx2", "iceoryx2")):
        try:
            __import__(mod)
            peers.append(name)
        except ImportError:
            pass
    return peers


def zero_copy_kinds() -> list[str]:
    """The zero-copy variants (loaned send buffer, received view), ours and iceoryx2's: for large payloads."""
    return ["cython-zc"] + (["iceoryx2-zc"] if "iceoryx2" in available_peers() else [])


# Our busy-poll rows spin this long before sleeping: long enough that the receiver never
# sleeps between messages at 1 kHz, as the peers that busy-poll (iceoryx2, spin-flag) never
# do. With 2 ms, the senders' stalls on this VM (up to 9 ms, BENCHMARKS.md session 8) sent
# the receiver to sleep now and then, and those wake-ups made most of its p99.
BUSY_SPIN_US = 1_000_000.0


def latency_kinds() -> list[tuple[str, float, str]]:
    """(kind, spin_us, mode) of every one-way latency measurement: ours busy-polling and
    sleeping, the peers as they wait (iceoryx2 can only busy-poll)."""
    rows = [("cython", BUSY_SPIN_US), ("cython", 0.0), ("python", BUSY_SPIN_US), ("python", 0.0)]
    rows += [(k, 0.0) for k in available_peers()] + [(SPIN_FLAG, 0.0)]
    return [(k, spin, "busy-poll" if spin or k in ("iceoryx2", SPIN_FLAG) else "sleeping") for k, spin in rows]


# ------------------------------------------------------------------ endpoints
# kind: "cython" | "python" (datacomms shm), "cython-zc" (loan + copy=False), or a peer name.


def _dc_payload(size: int) -> Any:
    return np.full(size, 7, dtype=np.uint8) if size >= (1 << 20) else b"x" * size


def _make_sender(kind: str, address: Any, size: int) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    """(send one message, send one stamped with the time now, close) in the child.
    datacomms frames carry their own timestamp, so both senders are the same there."""
    if kind in ("cython", "python", "cython-zc"):
        backend = "cython" if kind == "cython-zc" else kind
        # a ring of a few big messages stays in the last-level cache; small ones get 16 MiB.
        # A full ring is waited out busy-polling for 50 us first, as the receiver does.
        pub = dc.Publisher(address, backend=backend, on_full="block", spin_us=50,
                           capacity=4 * size if size >= (1 << 20) else 16 << 20)
        pub.wait_for_subscribers(1, timeout=60)
        if kind == "cython-zc":
            def send() -> None:
                loan = pub.loan(size, np.uint8)  # the producer fills loan.array in place
                loan.commit()
            return send, send, pub.close
        plain = functools.partial(pub.send, _dc_payload(size))
        return plain, plain, pub.close
    if kind in ("iceoryx2", "iceoryx2-zc"):
        return _iceoryx2_sender(kind, address, size)
    if kind == SPIN_FLAG:
        return _flag_sender(address)
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
    if kind in ("iceoryx2", "iceoryx2-zc"):
        return _iceoryx2_receiver(kind, address)
    if kind == SPIN_FLAG:
        return _flag_receiver(address)
    raise ValueError(kind)


# spin-flag: a 16-byte mapping of a file in /dev/shm. The sender makes seq odd,
# stores its time, makes seq even (x86-64 keeps stores in order); the receiver
# spins until seq is even and new, and keeps the time only if seq did not move
# while it read. Latest value only: a message the receiver was too slow for is
# overwritten, and such gaps are left out of the figures.

def _flag_map(path: str) -> tuple[memoryview, Callable[[], None]]:
    """The mapping as two native int64s, and its close. A memoryview item is one
    8-byte load or store; struct.pack_into is not (it zeroes the field first)."""
    import mmap
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 16)
    finally:
        os.close(fd)
    words = memoryview(m).cast("q")

    def close() -> None:
        words.release()
        m.close()
    return words, close


def _flag_sender(path: str) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    words, close = _flag_map(path)
    seq = [0]

    def send() -> None:
        s = seq[0] + 2
        seq[0] = s
        words[0] = s - 1
        words[1] = time.time_ns()
        words[0] = s
    return send, send, close


def _flag_receiver(path: str) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    words, close = _flag_map(path)
    state = {"last": 0, "owed": 0}

    def recv_ts() -> int | None:
        """The time of the next message, or None for one that was overwritten unseen."""
        if state["owed"]:
            state["owed"] -= 1
            return None
        last, give_up = state["last"], time.monotonic() + 60
        while True:
            s = words[0]
            if s != last and not s & 1:
                ts = words[1]
                if words[0] == s:
                    state["last"], state["owed"] = s, (s - last) // 2 - 1
                    return ts
            elif time.monotonic() > give_up:
                raise TimeoutError("the spin-flag sender stopped")

    def recv() -> None:
        raise ValueError("spin-flag measures latency only: it keeps no queue")
    return recv, recv_ts, close


# iceoryx2: a publish-subscribe service of byte slices, lossless (no safe
# overflow, the publisher retries until delivered), one publisher, one subscriber.

def _iceoryx2_service(name: str, size: int) -> tuple[Any, Any]:
    import ctypes

    import iceoryx2 as iox
    iox.set_log_level(iox.LogLevel.Error)
    node = iox.NodeBuilder.new().signal_handling_mode(iox.SignalHandlingMode.Disabled).create(iox.ServiceType.Ipc)
    queue = 4 if size >= (1 << 20) else 1024  # messages in flight, as our ring holds 4 big ones
    service = (node.service_builder(iox.ServiceName.new(name)).publish_subscribe(iox.Slice[ctypes.c_uint8])
               .enable_safe_overflow(False).subscriber_max_buffer_size(queue).history_size(0)
               .max_publishers(1).max_subscribers(1).open_or_create())
    return node, service


def _iceoryx2_sender(kind: str, address: tuple[str, int], size: int) -> tuple[Callable[[], Any], Callable[[], Any],
                                                                Callable[[], None]]:
    import ctypes

    import iceoryx2 as iox
    node, service = _iceoryx2_service(*address)
    pub = (service.publisher_builder().initial_max_slice_len(size)
           .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered).create())
    # A subscriber shows in the service's count before this port is connected to it,
    # and a sample sent meanwhile reaches nobody: send one probe until it arrives
    # (the receiver drops it).
    deadline = time.monotonic() + 60
    while True:
        pub.update_connections()
        if pub.loan_slice_uninit(8).assume_init().send() > 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no iceoryx2 subscriber on {address[0]} after 60 s")
        time.sleep(0.001)
    src = np.full(size, 7, dtype=np.uint8)
    src_ptr = src.ctypes.data
    memmove, loan = ctypes.memmove, pub.loan_slice_uninit
    zero_copy = kind == "iceoryx2-zc"

    # Seen here (iceoryx2 0.10, loaded machine): now and then a send with
    # RetryUntilDelivered reaches nobody although the subscriber is connected;
    # both senders then send the message again, so the stream stays lossless.

    def send() -> None:
        while True:
            sample = loan(size)
            if not zero_copy:  # the copying variant writes the payload into the loan, as send() of bytes must
                memmove(sample.payload_ptr, src_ptr, size)
            if sample.assume_init().send():
                return
            pub.update_connections()

    def send_stamped() -> None:
        while True:
            sample = loan(size)
            memmove(sample.payload_ptr, src_ptr, size)
            _TS.pack_into((ctypes.c_char * 8).from_address(sample.payload_ptr), 0, time.time_ns())
            if sample.assume_init().send():
                return
            pub.update_connections()

    def close() -> None:
        pub.delete()
        keep.clear()  # the node and the service go after the port
    keep = [node, service, src]  # src_ptr points into src
    return send, send_stamped, close


def _iceoryx2_receiver(kind: str, address: tuple[str, int]) -> tuple[Callable[[], Any], Callable[[], int], Callable[[], None]]:
    import ctypes
    node, service = _iceoryx2_service(*address)
    sub = service.subscriber_builder().create()
    receive, string_at, memmove = sub.receive, ctypes.string_at, ctypes.memmove
    held: list[Any] = []
    probe = [True]

    def take() -> Any:
        if probe:
            probe.pop()
            take().delete()  # the sender's connection probe
        deadline = time.monotonic() + 60
        while True:  # busy-poll: the binding has no blocking receive on this port
            for _ in range(1000):
                sample = receive()
                if sample is not None:
                    return sample
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing from the iceoryx2 publisher on {address[0]} for 60 s")

    def recv_copy() -> Any:
        sample = take()
        n = sample.header.number_of_elements
        if n < 1024:
            out: Any = string_at(sample.payload_ptr, n)
        else:
            out = np.empty(n, dtype=np.uint8)
            memmove(out.ctypes.data, sample.payload_ptr, n)
        sample.delete()
        return out

    def recv_view() -> Any:
        if held:
            held.pop().delete()  # the previous view ends here, as with our recv(copy=False)
        sample = take()
        held.append(sample)
        n = sample.header.number_of_elements
        return np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(sample.payload_ptr))

    def recv_ts() -> int:
        sample = take()
        ts = _TS.unpack(string_at(sample.payload_ptr, 8))[0]
        sample.delete()
        return ts

    def close() -> None:
        for sample in held:
            sample.delete()
        sub.delete()
        keep.clear()
    keep = [node, service]
    return (recv_view if kind == "iceoryx2-zc" else recv_copy), recv_ts, close


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
        elif kind in ("iceoryx2", "iceoryx2-zc"):
            address = (f"datacomms-bench/{uuid.uuid4().hex[:10]}", size)
        elif kind == SPIN_FLAG:
            fd, address = tempfile.mkstemp(prefix="datacomms-bench-flag-", dir="/dev/shm")
            os.ftruncate(fd, 16)
            os.close(fd)
        else:
            raise ValueError(kind)
        self._address = address
        # a file this pump made, removed on close
        self._file = address[len("ipc://"):] if kind == "zmq-ipc" else address if kind == SPIN_FLAG else None
        self._conn, child = _CTX.Pipe()
        if kind == "zmq-ipc":
            self.recv, self.recv_ts, self._close = _make_receiver(kind, address, spin_us)
        self._proc = _CTX.Process(target=_pump_main, args=(kind, address, size, child), daemon=True)
        self._proc.start()
        if kind != "zmq-ipc":
            self.recv, self.recv_ts, self._close = _make_receiver(kind, address, spin_us)

    def latencies(self, n: int, hz: float) -> list[int]:
        """Asks for n messages at hz; returns the per-message one-way latencies in ns
        (for spin-flag, of the messages its receiver saw)."""
        recv_ts = self.recv_ts
        self._conn.send((n, hz))
        lat = [0] * n
        for i in range(n):
            ts = recv_ts()
            lat[i] = -1 if ts is None else time.time_ns() - ts
        self._conn.recv()
        return [x for x in lat if x >= 0] if self.kind == SPIN_FLAG else lat

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
        if self._file is not None:
            try:
                os.unlink(self._file)
            except OSError:
                pass

    def __enter__(self) -> "Pump":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def throughputs(kinds: list[str], size: int, rounds: int = 5, seconds: float = 0.25,
                spin_us: float = 50.0) -> dict[str, list[float]]:
    """Messages per second of each kind for size-byte payloads over rounds bursts,
    the kinds taking turns with all their pumps alive (netbench.taking_turns). A
    warm-up burst per kind maps the pages and warms the caches; then bursts
    growing fivefold until one takes a fifth of `seconds` size that kind's bursts
    to about `seconds` each (at least 10 messages). A burst of a few
    milliseconds, as 20 messages of 8 MiB are, measures the scheduler and the
    fixed cost of asking the child more than the copy."""
    from .netbench import taking_turns
    pumps: dict[str, Pump] = {}
    try:
        for kind in kinds:
            pumps[kind] = Pump(kind, size, spin_us=spin_us)
        bursts = {}
        for kind, pump in pumps.items():
            n = max(10, burst_size(size, kind) // 10)
            pump.throughput(n)   # the first burst also waits for the child to get going
            while (took := n / pump.throughput(n)) < seconds / 5:
                n *= 5
            bursts[kind] = functools.partial(pump.throughput, max(10, round(n * seconds / took)))
        return taking_turns(bursts, rounds)
    finally:
        for pump in pumps.values():
            pump.close()


ECHO = "tcp-echo"  # latencies(): the round trip of a plain Python TCP echo at the same rate


def latencies(rows: list[tuple[str, float, str]], count: int, rounds: int = 4,
              hz: float = 1000.0) -> dict[tuple[str, str], list[int]]:
    """One-way latencies (ns) of count 64 B messages at hz for each (kind, spin_us,
    mode) of latency_kinds(), and under (ECHO, "sleeping") the round trips (ns) of
    a plain Python TCP echo sent at the same rate: this machine's cost of a
    wake-up each way. The kinds take turns, count // rounds messages at a time,
    all their pumps alive throughout (netbench.taking_turns)."""
    from .netbench import Echo, taking_turns
    pumps: dict[tuple[str, str], Pump] = {}
    echo = None
    per = max(1, count // rounds)
    try:
        for kind, spin, mode in rows:
            pumps[(kind, mode)] = Pump(kind, 64, spin_us=spin)
        echo = Echo("socket", 64)
        measures: dict[Any, Callable[[], list[int]]] = {}
        for key, pump in pumps.items():
            pump.latencies(min(per, 200), hz)  # warm-up
            measures[key] = functools.partial(pump.latencies, per, hz)
        measures[(ECHO, "sleeping")] = lambda: [int(t * 1e9) for t in echo.trips(per, hz)]
        turns = taking_turns(measures, rounds)
    finally:
        for pump in pumps.values():
            pump.close()
        if echo is not None:
            echo.close()
    return {key: [x for chunk in chunks for x in chunk] for key, chunks in turns.items()}


def tcp_echo_rtt(n: int = 2000, hz: float = 1000.0) -> dict[str, float]:
    """Round trip of 64 B through a plain Python TCP echo child at hz: this machine's wake-up reference."""
    from .netbench import Echo
    echo = Echo("socket", 64)
    try:
        return percentiles([int(t * 1e9) for t in echo.trips(n, hz)])
    finally:
        echo.close()


def burst_size(size: int, kind: str = "") -> int:
    """Messages per burst: about 64 MiB or 200k messages, whichever is fewer.
    A zero-copy kind never touches the payload, so its per-message cost is a
    few microseconds whatever the size: 20,000 messages, or the fixed cost of
    asking the child for a burst would be most of what is measured."""
    if kind.endswith("-zc"):
        return 20_000
    return max(20, min(200_000, (64 << 20) // max(size, 64)))


def percentiles(lat: list[int]) -> dict[str, float]:
    a = np.sort(np.asarray(lat, dtype=np.int64)) / 1000.0
    return {"p50_us": float(a[len(a) // 2]), "p99_us": float(a[min(len(a) - 1, int(len(a) * 0.99))]),
            "max_us": float(a[-1])}


def main() -> None:  # pragma: no cover - a report, not a test
    print(f"{'kind':<12}{'size':>6}{'msg/s':>14}{'MB/s':>10}  (median of 5 bursts, the kinds taking turns)")
    for label, size in SIZES.items():
        kinds = ["cython", "python"] + available_peers() + (zero_copy_kinds() if size >= (1 << 20) else [])
        for kind, rates in throughputs(kinds, size).items():
            rate = float(np.median(rates))
            print(f"{kind:<12}{label:>6}{rate:>14,.0f}{rate * size / 1e6:>10,.0f}", flush=True)
    print("\none-way latency, 64 B at 1 kHz, 2000 messages (tcp-echo: its round trip)")
    for (kind, mode), lat in latencies(latency_kinds(), 2000).items():
        p = percentiles(lat)
        print(f"{kind:<12}{mode:<10} p50 {p['p50_us']:8.1f} us  p99 {p['p99_us']:8.1f} us  max {p['max_us']:8.1f} us",
              flush=True)


if __name__ == "__main__":
    main()
