"""Code run in child processes by the shm tests (spawned, so it lives in an
importable module). Every function takes the backend by name."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

import datacomms as dc


def seq_payload(i: int) -> bytes:
    """A payload whose size and content depend on i, so reordering or mixing shows."""
    return i.to_bytes(8, "little") * (1 + i % 13)


def mixed_payloads() -> list[Any]:
    """One of each payload kind the framing layer carries, including an 8 MiB array."""
    rng = np.random.default_rng(7)
    rec = np.zeros(5, dtype=[("x", "<f8"), ("n", "<i4"), ("tag", "S3")])
    rec["x"] = np.arange(5) / 3
    rec["n"] = np.arange(5)
    rec["tag"] = b"abc"
    return [
        b"", b"raw bytes", bytes(range(256)) * 40,
        bytearray(b"a bytearray"),
        {"timestamp": 1.5, "joint_1": 0.1, "joint_2": -2.0, "name": "arm", "ok": True, "none": None},
        [1, 2, [3, "four"]], "just a string", 3.25, 42,
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(10, dtype=np.int64)[::2],                       # non-contiguous
        rec,
        rng.integers(0, 255, size=8 << 20, dtype=np.uint8),     # 8 MiB
        {"frame": rng.integers(0, 255, size=(64, 48, 3), dtype=np.uint8), "meta": {"id": 9},
         "blobs": [b"x" * 100, np.ones(7, dtype=np.uint16)]},
        np.zeros((0, 3), dtype=np.float64),
    ]


def same(a: Any, b: Any) -> bool:
    """Payload equality as a subscriber sees it (bytes-like compares by content)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (bytes, bytearray, memoryview)):
        return isinstance(b, (bytes, bytearray, memoryview)) and bytes(a) == bytes(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def publish_sequence(url: str, backend: str, n: int, on_full: str, capacity: int, subs: int = 1,
                     pace_s: float = 0.0, spin_us: float = 0.0) -> None:
    with dc.Publisher(url, backend=backend, on_full=on_full, capacity=capacity, spin_us=spin_us) as pub:
        pub.wait_for_subscribers(subs, timeout=60)
        for i in range(n):
            assert pub.send(seq_payload(i), timeout=60) == i
            if pace_s:
                time.sleep(pace_s)


def publish_mixed(url: str, backend: str, capacity: int) -> None:
    with dc.Publisher(url, backend=backend, on_full="block", capacity=capacity) as pub:
        pub.wait_for_subscribers(1, timeout=60)
        for p in mixed_payloads():
            pub.send(p, timeout=60)


def publish_latest(url: str, backend: str, n: int, hz: float, capacity: int) -> None:
    """Sends n self-checking dicts at hz (0: as fast as possible), drop mode."""
    with dc.Publisher(url, backend=backend, capacity=capacity) as pub:
        pub.wait_for_subscribers(1, timeout=60)
        start = time.perf_counter()
        for i in range(n):
            pub.send({"i": i, "arr": np.full(2000, i, dtype=np.int64), "tail": [i] * 20})
            if hz:
                wait = start + (i + 1) / hz - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)


def publish_forever(url: str, backend: str, ready: Any) -> None:
    """Publishes until killed (for SIGKILL tests)."""
    pub = dc.Publisher(url, backend=backend, capacity=1 << 16)
    ready.set()
    i = 0
    while True:
        pub.send(seq_payload(i))
        i += 1
        time.sleep(0.0005)


def subscribe_window(url: str, backend: str, delay: float, count: int, out: Any) -> None:
    """Joins after delay, receives count messages, leaves; reports what it saw."""
    time.sleep(delay)
    with dc.Subscriber(url, backend=backend) as sub:
        seqs = []
        for _ in range(count):
            m = sub.recv(timeout=30)
            if m.data != seq_payload(m.seq):
                out.put(("bad payload", m.seq))
                return
            seqs.append(m.seq)
        out.put((seqs[0], seqs[-1], seqs == list(range(seqs[0], seqs[0] + count)), sub.stats.lost))


def subscribe_paused(url: str, backend: str, pause: float, count: int, ready: Any, out: Any) -> None:
    """Attaches and says so, reads nothing for pause seconds (a block-mode publisher's
    queues fill and it must wait), then receives count messages; reports as subscribe_window."""
    with dc.Subscriber(url, backend=backend) as sub:
        ready.set()
        time.sleep(pause)
        seqs = []
        for _ in range(count):
            m = sub.recv(timeout=30)
            if m.data != seq_payload(m.seq):
                out.put(("bad payload", m.seq))
                return
            seqs.append(m.seq)
        out.put((seqs[0], seqs[-1], seqs == list(range(seqs[0], seqs[0] + count)), sub.stats.lost))


def subscribe_then_hang(url: str, backend: str, ready: Any) -> None:
    """Attaches, reads a little, then stops reading and waits to be killed."""
    sub = dc.Subscriber(url, backend=backend)
    sub.recv(timeout=30)
    ready.set()
    while True:
        time.sleep(1)


def subscribe_collect(url: str, backend: str, out: Any) -> None:
    """Receives until Closed and reports the seqs and whether every payload matched."""
    with dc.Subscriber(url, backend=backend) as sub:
        seqs, ok = [], True
        while True:
            try:
                m = sub.recv(timeout=30)
            except dc.Closed:
                break
            ok = ok and m.data == seq_payload(m.seq)
            seqs.append(m.seq)
        out.put((seqs, ok, sub.stats.lost))


def wait_forever(url: str, backend: str, first: bool = False, **options) -> None:
    """Blocks in recv with no timeout (Ctrl-C tests); exits 3 on KeyboardInterrupt.
    first: receive one message before saying "waiting" (a tcp subscriber then
    waits on its socket inside the compiled recv). options: for the Subscriber."""
    sub = dc.Subscriber(url, backend=backend, **options)
    if first:
        sub.recv(timeout=10)
    print("waiting", flush=True)
    try:
        sub.recv()
    except KeyboardInterrupt:
        sub.close()
        os._exit(3)
    os._exit(1)


def publish_then_fork(url: str, backend: str, out: Any) -> None:
    """Makes a Publisher, forks a child that only sleeps, sends b"hello", reports the
    child's pid and waits to be killed (the child outlives it)."""
    pub = dc.Publisher(url, backend=backend, capacity=1 << 16)
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(1)
    pub.send(b"hello")
    out.put(pid)
    while True:
        time.sleep(1)


def fork_child_closes(url: str, backend: str, out: Any) -> None:
    """Forks while holding a Publisher and a Subscriber; the child tries to send and then
    closes both (as leaving a with block would); reports what the parent sees afterwards."""
    pub = dc.Publisher(url, backend=backend, capacity=1 << 16)
    sub = dc.Subscriber(url, backend=backend)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pub.send(b"from the child")
        except dc.Closed as exc:
            code = 2 if "forked child" in str(exc) else 3
        pub.close()
        sub.close()
        os._exit(code)
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    exists = os.path.exists("/dev/shm/dc-" + url[len("shm://"):])
    got = []
    for data in (b"after", b"again"):
        pub.send(data)
        try:
            got.append(sub.recv(timeout=5).data)
        except dc.DataCommsError as exc:
            got.append(type(exc).__name__)
    out.put((child, exists, got, pub.subscribers))
    sub.close()
    pub.close()


def fork_with_a_loan_open(url: str, backend: str, out: Any) -> None:
    """Forks with a loan open and the Publisher's send and the Subscriber's recv bound; the
    child tries the three and exits with 10 + how many raised Closed. Reports that and what
    the parent then publishes and receives."""
    pub = dc.Publisher(url, backend=backend, capacity=1 << 16)
    sub = dc.Subscriber(url, backend=backend)
    send, recv = pub.send, sub.recv
    loan = pub.loan(4, "u1")
    pid = os.fork()
    if pid == 0:
        closed = 0
        for call in (loan.commit, lambda: send(b"child"), lambda: recv(timeout=0)):
            try:
                call()
            except dc.Closed:
                closed += 1
            except BaseException:
                pass
        os._exit(10 + closed)
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    loan.array[:] = 1
    seqs = [loan.commit(), send(b"parent")]
    got = []
    for _ in range(3):
        try:
            m = recv(timeout=0.2)
        except dc.Timeout:
            break
        got.append((m.seq, bytes(m.data)))
    out.put((child, seqs, got))
    sub.close()
    pub.close()


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def open_as(url: str, backend: str, uid: int, out: Any) -> None:
    """Becomes user uid, then tries a Publisher and a Subscriber of url; puts what each raised."""
    import importlib
    # everything it imports, before the user may lose access to where it is installed
    importlib.import_module("datacomms.transports.shm")
    dc.backend.get(backend)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    said = []
    for end in (dc.Publisher, dc.Subscriber):
        try:
            end(url, backend=backend).close()
            said.append("opened")
        except Exception as exc:
            said.append(f"{type(exc).__name__}: {exc}")
    out.put(said)
