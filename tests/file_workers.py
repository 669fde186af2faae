"""Child processes for the file-transport tests: run as
``python file_workers.py ROLE URL BACKEND ...`` so each side is a real process.

Roles print one line per milestone on stdout; the tests read them to know how
far the child got (e.g. what an hdf5 writer had flushed before it was killed).
"""

from __future__ import annotations

import json
import os
import sys
import time

import datacomms as dc


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
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(sys.argv[1:])
