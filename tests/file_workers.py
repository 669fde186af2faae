"""Child processes for the file-transport tests: run as
``python file_workers.py ROLE URL BACKEND ...`` so each side is a real process.

Roles print one line per milestone on stdout; the tests read them to know how
far the child got (e.g. what an hdf5 writer had flushed before it was killed).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import datacomms as dc


def run_bounded(path: str | os.PathLike, work: Any) -> list[Any]:
    """Runs work() (which appends its outcomes to the list it is given) in a thread and
    fails if it is still running after 10 s: blocked opening the FIFO at path, which is
    then released by opening it for writing, so the thread ends with the test."""
    out: list[Any] = []

    def run() -> None:
        try:
            work(out)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    hung = t.is_alive()
    for _ in range(100):
        if not t.is_alive():
            break
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        t.join(0.1)
    assert not hung, "blocked opening a FIFO"
    return out


def close_while_reading(url: str, backend: Any, rounds: int, pause: float) -> None:
    """rounds times: a Subscriber of url whose recv waits on another thread is closed
    from this one, after 0 to 9 pauses; that recv must end with dc.Closed."""
    for i in range(rounds):
        sub = dc.Subscriber(url, backend=backend)
        ended: list[BaseException] = []

        def read() -> None:
            try:
                while True:
                    sub.recv(timeout=10)
            except BaseException as exc:
                ended.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep((i % 10) * pause)
        sub.close()
        reader.join(20)
        assert not reader.is_alive()
        assert isinstance(ended[0], dc.Closed), ended


def joint_state(i: int) -> dict:
    """A 9-joint state whose every value is derived from i, so a torn or mixed
    document (values from two versions) is detectable by the reader."""
    d = {"timestamp": i * 0.001}
    for k in range(1, 10):
        d[f"joint_{k}"] = i + k / 16.0
    return d


def check_joint_state(d: dict) -> int:
    """The i a joint_state came from; raises AssertionError if it is not one."""
    i = round(d["timestamp"] * 1000)
    assert d == joint_state(i), f"torn or mixed document: {d!r}"
    return i


def paced_send(pub: dc.Publisher, n: int, hz: float) -> None:
    period = 1.0 / hz
    start = time.perf_counter()
    for i in range(n):
        pub.send(joint_state(i))
        wake = start + (i + 1) * period
        delay = wake - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def main(argv: list[str]) -> None:
    role, url, backend = argv[:3]
    rest = argv[3:]
    if role == "json-writer":
        n, hz = int(rest[0]), float(rest[1])
        with dc.Publisher(url, backend=backend) as pub:
            print("ready", flush=True)
            paced_send(pub, n, hz)
        print("done", flush=True)
    elif role == "json-read-only":
        # publishers whose directory cannot take their temp file (a read-only file system)
        fds = len(os.listdir("/proc/self/fd"))
        for durable in (False, True):
            pub = dc.Publisher(url, backend=backend, durable=durable)
            try:
                pub.send(1)
            except OSError as exc:
                print(f"send errno {exc.errno}", flush=True)
            pub.close()
            print("closed", flush=True)
        print(f"fds left {len(os.listdir('/proc/self/fd')) - fds}", flush=True)
    elif role == "hdf5-writer":
        n, hz, flush_interval = int(rest[0]), float(rest[1]), float(rest[2])
        with dc.Publisher(url, backend=backend, flush_interval=flush_interval) as pub:
            print("ready", flush=True)
            paced_send(pub, n, hz)
        print("done", flush=True)
    elif role == "hdf5-batches":
        # batches of joint states, each flushed, with a pause between (followers read them live)
        batches, size = int(rest[0]), int(rest[1])
        with dc.Publisher(url, backend=backend) as pub:
            print("ready", flush=True)
            for b in range(batches):
                pub.send_many([joint_state(i) for i in range(b * size, (b + 1) * size)])
                pub.flush()
                time.sleep(0.01)
        print("done", flush=True)
    elif role == "hdf5-until-killed":
        # flush every message; report progress so the parent knows what is durable
        with dc.Publisher(url, backend=backend, flush_interval=0) as pub:
            i = 0
            while True:
                seq = pub.send(joint_state(i))
                i += 1
                if i % 50 == 0:
                    print(f"flushed {seq}", flush=True)
    elif role == "hdf5-bytes-until-killed":
        # variable-length bytes naming their seq, as fast as it can
        with dc.Publisher(url, backend=backend) as pub:
            i = 0
            while True:
                pub.send(i.to_bytes(8, "little") * (1 + i % 8))
                i += 1
                if i == 1000:
                    print("ready", flush=True)
    elif role == "hdf5-reader":
        # follows live until it has n messages; prints a JSON summary
        n = int(rest[0])
        seqs = []
        with dc.Subscriber(url, backend=backend) as sub:
            print("ready", flush=True)
            while len(seqs) < n:
                msg = sub.recv(timeout=20)
                assert msg.data == joint_state(msg.seq), msg.data
                seqs.append(msg.seq)
            print(json.dumps({"seqs_ok": seqs == list(range(seqs[0], seqs[0] + n)), "first": seqs[0],
                              "lost": sub.stats.lost}), flush=True)
    elif role == "hdf5-replay-memory":
        # replays a recording from its start: the MiB its first recv added to the peak resident size
        import resource
        with dc.Subscriber(url, backend=backend, from_start=True) as sub:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert sub.recv(timeout=10).seq == 0
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert [sub.recv(timeout=10).seq for _ in range(3)] == [1, 2, 3]
        print(f"grew {grew >> 10}", flush=True)
    elif role == "hdf5-recv-once":
        # one recv (timeout rest[0]) on a file that may be broken: prints the seq, or the error's type
        with dc.Subscriber(url, backend=backend) as sub:
            try:
                print(f"seq {sub.recv(timeout=float(rest[0])).seq}", flush=True)
            except dc.DataCommsError as exc:
                print(type(exc).__name__, flush=True)
    elif role == "hdf5-full-disk":
        hdf5_full_disk(url, backend)
    elif role == "hdf5-append-replay":
        # appends one message, then replays the recording: are the rows seq-named bytes?
        with dc.Publisher(url, backend=backend) as pub:
            seq = pub.send(b"appended")
        with dc.Subscriber(url, backend=backend, from_start=True) as sub:
            seqs = []
            while True:
                try:
                    m = sub.recv(timeout=0.5)
                except dc.Timeout:
                    break
                assert bytes(m.data) == (b"appended" if m.seq == seq else seq_bytes(m.seq)), m.seq
                seqs.append(m.seq)
        print(f"appended {seq}, replayed {len(seqs)} in order {seqs == list(range(len(seqs)))}", flush=True)
    else:
        raise SystemExit(f"unknown role {role}")


def seq_bytes(i: int) -> bytes:
    return i.to_bytes(8, "little") * 2000


def fds_on(path: str) -> int:
    """How many descriptors of this process are open on path."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(path)
        except OSError:
            pass
    return n


def fill(path: str) -> None:
    """Writes path until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def hdf5_full_disk(url: str, backend: str) -> None:
    """Records onto a small file system (a tmpfs of the test's) until it is full."""
    path = url[len("hdf5://"):]
    d = os.path.dirname(path)
    filler = os.path.join(d, "filler")
    # 1. the sends fill the disk, each flushed
    with open(filler, "wb") as f:
        f.write(bytes(256 << 10))
    pub = dc.Publisher(url, backend=backend, flush_interval=0)
    n = 0
    try:
        while n < 10000:
            assert pub.send(seq_bytes(n)) == n
            n += 1
    except dc.DataCommsError as exc:
        print(f"send {n > 10}: {exc}", flush=True)
    try:
        pub.send(b"later")
    except dc.DataCommsError as exc:
        print(f"later send: {exc}", flush=True)
    pub.close()  # raises nothing: the error was raised
    print(f"closed, fds on the file {fds_on(path)}, threads {threading.active_count()}", flush=True)
    os.unlink(filler)
    print(subprocess.run([sys.executable, __file__, "hdf5-append-replay", url, backend], capture_output=True,
                         text=True, timeout=60).stdout.strip(), flush=True)
    # 2. the timer's flush meets the full disk; close raises it
    os.unlink(path)
    pub = dc.Publisher(url, backend=backend, flush_interval=1.0)  # the disk fills well within it
    pub.send(seq_bytes(0))  # the first send flushes at once, and makes the file
    fill(filler)
    pub.send(seq_bytes(1))  # left to the timer
    deadline = time.monotonic() + 30
    while fds_on(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"timer let go: fds on the file {fds_on(path)}", flush=True)
    try:
        pub.close()
    except dc.DataCommsError as exc:
        print(f"close: {exc}", flush=True)
    print(f"closed, threads {threading.active_count()}", flush=True)
    os.unlink(filler)
    print(subprocess.run([sys.executable, __file__, "hdf5-append-replay", url, backend], capture_output=True,
                         text=True, timeout=60).stdout.strip(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
