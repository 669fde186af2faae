"""The seed scenario, shared by `datacomms demo`, `send`/`recv` and the tests:
a publisher at a fixed rate and a subscriber polling at another, in separate
processes, with every receive recorded so rate, gaps, loss and latency can be
reported and plotted."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from . import errors
from .pubsub import Publisher, Subscriber


def joint_state(i: int) -> dict[str, float]:
    """The seed scenario's message: a timestamp and eight joint positions."""
    t = time.time()
    return {"timestamp": t, **{f"joint_{j}": float(np.sin(0.01 * i + j)) for j in range(1, 9)}}


def payload_factory(spec: str) -> Callable[[int], Any]:
    """joints | bytes:SIZE | array:SHAPE:DTYPE (SHAPE like 480x640x3)."""
    kind, _, rest = spec.partition(":")
    if kind == "joints" and not rest:
        return joint_state
    if kind == "bytes" and rest.isdigit():
        blob = os.urandom(int(rest))
        return lambda i: blob
    if kind == "array" and rest:
        shape_s, _, dtype = rest.partition(":")
        try:
            shape = tuple(int(d) for d in shape_s.split("x"))
            arr = np.zeros(shape, dtype=np.dtype(dtype or "uint8"))
        except (ValueError, TypeError) as exc:
            raise errors.DataCommsError(f"bad --payload {spec!r}: {exc}") from None
        return lambda i: arr
    raise errors.DataCommsError(f"bad --payload {spec!r}: use joints, bytes:SIZE or array:SHAPE:DTYPE")


@dataclass
class Recording:
    """What a subscriber saw: one row per received message."""

    recv_ns: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)
    failed_reads: int = 0
    failures: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, msg: Any, now_ns: int) -> None:
        self.recv_ns.append(now_ns)
        self.seq.append(-1 if msg.seq is None else msg.seq)
        self.latency_ns.append(now_ns - msg.timestamp_ns if msg.timestamp_ns else 0)


def record(sub: Subscriber, count: int | None, poll_hz: float, idle_timeout: float,
           on_message: Callable[[Recording], None] | None = None, last_seq: int | None = None,
           duration: float | None = None) -> Recording:
    """Polls sub at poll_hz, draining what is there each tick, until count messages,
    the seq last_seq, idle_timeout seconds without news, or duration seconds."""
    rec = Recording()
    period = 1.0 / poll_hz if poll_hz > 0 else 0.0
    start = last_news = time.monotonic()
    next_tick = start
    while True:
        got = False
        while True:
            try:
                msg = sub.recv(timeout=0)
            except errors.Timeout:
                break
            except errors.Closed:
                rec.stats = sub.stats.as_dict()
                return rec
            except errors.DataCommsError as exc:  # a failed read: counted, never fatal
                rec.failed_reads += 1
                if len(rec.failures) < 10:
                    rec.failures.append(f"{type(exc).__name__}: {exc}")
                break
            rec.add(msg, time.time_ns())
            got = True
            if on_message is not None:
                on_message(rec)
        now = time.monotonic()
        if got:
            last_news = now
        done = (count is not None and len(rec.seq) >= count) or \
               (last_seq is not None and rec.seq and rec.seq[-1] >= last_seq)
        if done or now - last_news > idle_timeout or (duration is not None and now - start > duration):
            break
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()
    rec.stats = sub.stats.as_dict()
    return rec


def publish(pub: Publisher, count: int, rate_hz: float, make: Callable[[int], Any],
            on_sent: Callable[[int], None] | None = None) -> float:
    """Sends count messages at rate_hz (absolute deadlines, so no drift); returns the seconds taken."""
    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    start = time.perf_counter()
    for i in range(count):
        if period:
            delay = start + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        pub.send(make(i))
        if on_sent is not None:
            on_sent(i)
    return time.perf_counter() - start


@dataclass
class Summary:
    transport: str
    backend: str
    sent: int
    received: int
    lost: int
    lost_pct: float
    failed_reads: int
    min_hz: float
    longest_gap_ms: float
    p50_us: float
    p99_us: float
    duration_s: float
    plot: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(transport: str, backend: str, sent: int, rec: Recording) -> Summary:
    t = np.asarray(rec.recv_ns, dtype=np.int64)
    lat = np.asarray(rec.latency_ns, dtype=np.float64) / 1000.0
    received = len(t)
    duration = (t[-1] - t[0]) / 1e9 if received > 1 else 0.0
    gaps = np.diff(t) / 1e6 if received > 1 else np.zeros(0)
    # the lowest rate seen over any whole second of the run
    if duration >= 1.0:
        bins = ((t - t[0]) // 1_000_000_000).astype(np.int64)
        full = bins < bins[-1]
        min_hz = float(np.bincount(bins[full]).min()) if full.any() else float(received / duration)
    else:
        min_hz = float((received - 1) / duration) if duration > 0 else 0.0
    lost = max(0, sent - received) if sent else int(rec.stats.get("lost", 0))
    return Summary(
        transport=transport, backend=backend, sent=sent, received=received, lost=lost,
        lost_pct=100.0 * lost / sent if sent else 0.0, failed_reads=rec.failed_reads, min_hz=min_hz,
        longest_gap_ms=float(gaps.max()) if gaps.size else 0.0,
        p50_us=float(np.percentile(lat, 50)) if lat.size else 0.0,
        p99_us=float(np.percentile(lat, 99)) if lat.size else 0.0, duration_s=duration)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_url(transport: str, tmpdir: str, tag: str) -> str:
    if transport == "shm":
        return f"shm://demo{os.getpid() % 100000}{tag}"
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_port()}"
    if transport == "udp":
        return f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    if transport == "json":
        return f"json://{os.path.join(tmpdir, tag + '.json')}"
    if transport == "hdf5":
        return f"hdf5://{os.path.join(tmpdir, tag + '.h5')}"
    raise errors.DataCommsError(f"no demo for {transport}://")


def _subscriber_child(url: str, backend: str, count: int, poll_hz: float, ready: Any, out: Any,
                      progress: Any) -> None:
    try:
        with Subscriber(url, backend=backend) as sub:
            ready.set()

            def tick(rec: Recording) -> None:
                progress.value = len(rec.seq)

            rec = record(sub, None, poll_hz, idle_timeout=3.0, on_message=tick, last_seq=count - 1)
        out.put(asdict(rec))
    except BaseException as exc:  # reported to the parent, which prints it
        ready.set()
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def run_pair(url: str, backend: str, count: int, rate_hz: float, poll_hz: float, payload: str,
             progress_cb: Callable[[int], None] | None = None) -> Recording:
    """Publisher here, subscriber in a spawned process; returns what the subscriber recorded."""
    ctx = mp.get_context("spawn")
    ready, out, progress = ctx.Event(), ctx.Queue(), ctx.Value("q", 0)
    make = payload_factory(payload)
    with Publisher(url, backend=backend) as pub:
        child = ctx.Process(target=_subscriber_child, args=(url, backend, count, poll_hz, ready, out, progress),
                            daemon=True)
        child.start()
        try:
            if not ready.wait(30):
                raise errors.DataCommsError("the subscriber process did not start")
            try:
                pub.wait_for_subscribers(1, timeout=10)
            except (NotImplementedError, errors.DataCommsError):
                time.sleep(0.3)  # a transport that cannot count its readers: give it a moment
            publish(pub, count, rate_hz, make, on_sent=(lambda i: progress_cb(progress.value))
                    if progress_cb else None)
            result = out.get(timeout=60)
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
    if "error" in result:
        raise errors.DataCommsError(f"subscriber failed: {result['error']}")
    return Recording(**result)


def scratch_dir() -> str:
    return tempfile.mkdtemp(prefix="datacomms-demo-")
