"""A datacomms network peer run as a separate process by the tcp/udp tests.

    python net_peer.py pub URL --backend B [--count N] [--rate HZ] [--bind/--connect] ...
    python net_peer.py sub URL --backend B --count N [--bind]

A publisher prints "READY <url>" once listening (the test reads the port from
it), then "SENT <n>" when done, and stays alive until stdin closes so the
test decides when it goes away; a stdin closed earlier ends its stream there.
A subscriber prints one JSON line with what it received, and exits at once
when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

import datacomms as dc


_stdin_closed = threading.Event()


def _watch_stdin(role: str) -> None:
    sys.stdin.read()   # until the test closes our stdin
    if role == "sub":
        os._exit(0)
    _stdin_closed.set()


def _payload(i: int, size: int) -> bytes:
    return i.to_bytes(8, "little") * max(1, size // 8)


def run_pub(a: argparse.Namespace) -> None:
    kw = {"on_full": a.on_full, "bind": not a.connect, "key": a.key} if a.url.startswith("tcp") else {}
    if a.peer_timeout is not None:
        kw["peer_timeout"] = a.peer_timeout
    pub = dc.Publisher(a.url, backend=a.backend, **kw)
    print("READY", pub.url, flush=True)
    if a.wait:
        pub.wait_for_subscribers(a.wait, timeout=30)
    period = 1.0 / a.rate if a.rate else 0.0
    t0 = time.perf_counter()
    i = 0
    subs = -1
    while (a.count < 0 or i < a.count) and not _stdin_closed.is_set():
        if a.watch and pub.subscribers != subs:
            subs = pub.subscribers
            print("SUBSCRIBERS", subs, flush=True)
        pub.send(_payload(i, a.size) if a.kind == "bytes" else {"i": i, "pid": a.tag})
        i += 1
        if period:
            # pace against the start time, so a late wake-up does not slow the stream
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    if hasattr(pub, "flush") and not _stdin_closed.is_set():
        pub.flush(30)
    print("SENT", i, flush=True)
    _stdin_closed.wait()   # until the test closes our stdin (or kills us)
    pub.close()


class _DeadPeers(logging.Handler):
    """Counts the subscriber's "nothing heard" (dead peer) log records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "nothing heard" in record.getMessage()


def run_sub(a: argparse.Namespace) -> None:
    if a.until_last:
        run_sub_until_last(a)
        return
    sub = dc.Subscriber(a.url, backend=a.backend, bind=a.bind)
    print("READY", sub.url, flush=True)
    seqs = []
    ok = True
    try:
        for _ in range(a.count):
            m = sub.recv(timeout=a.timeout)
            if a.kind == "bytes" and bytes(m.data[:8]) != m.seq.to_bytes(8, "little"):
                ok = False
            seqs.append(m.seq)
    except dc.DataCommsError as exc:
        print(json.dumps({"error": repr(exc), "received": len(seqs)}), flush=True)
        sub.close()
        return
    in_order = all(b == a_ + 1 for a_, b in zip(seqs, seqs[1:]))
    print(json.dumps({"received": len(seqs), "in_order": in_order, "payload_ok": ok, "lost": sub.stats.lost,
                      "first": seqs[0] if seqs else None, "last": seqs[-1] if seqs else None}), flush=True)
    sub.close()


def run_sub_until_last(a: argparse.Namespace) -> None:
    """Reads until the message of seq count - 1, reconnecting through outages, and
    prints what it received, what its stats counted and how often a peer went silent."""
    dead = _DeadPeers()
    logging.getLogger("datacomms").addHandler(dead)
    logging.getLogger("datacomms").setLevel(logging.INFO)
    sub = dc.Subscriber(a.url, backend=a.backend, bind=a.bind, dead_after=a.dead_after,
                        backoff_max=a.backoff_max)
    print("READY", sub.url, flush=True)
    seqs, ok = [], True
    try:
        while not seqs or seqs[-1] < a.count - 1:
            m = sub.recv(timeout=a.timeout)
            ok = ok and bytes(m.data[:8]) == m.seq.to_bytes(8, "little")
            seqs.append(m.seq)
    except dc.DataCommsError as exc:
        print(json.dumps({"error": repr(exc), "received": len(seqs)}), flush=True)
        sub.close()
        return
    st = sub.stats
    print(json.dumps({"received": len(seqs), "lost": st.lost, "restarts": st.restarts, "first": seqs[0],
                      "last": seqs[-1], "increasing": all(y > x for x, y in zip(seqs, seqs[1:])),
                      "payload_ok": ok, "longest_gap_s": st.longest_gap_s, "dead_peer": dead.count}),
          flush=True)
    sub.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["pub", "sub"])
    p.add_argument("url")
    p.add_argument("--backend", default=None)
    p.add_argument("--count", type=int, default=-1)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--kind", choices=["bytes", "dict"], default="bytes")
    p.add_argument("--on-full", default="block")
    p.add_argument("--wait", type=int, default=0, help="wait for this many subscribers first")
    p.add_argument("--connect", action="store_true", help="publisher connects (the subscriber binds)")
    p.add_argument("--bind", action="store_true", help="subscriber binds")
    p.add_argument("--key", default=None)
    p.add_argument("--tag", default="")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--until-last", action="store_true", help="subscriber reads until seq count - 1")
    p.add_argument("--dead-after", type=float, default=None)
    p.add_argument("--backoff-max", type=float, default=1.0)
    p.add_argument("--peer-timeout", type=float, default=None)
    p.add_argument("--watch", action="store_true", help="publisher prints SUBSCRIBERS <n> when the count changes")
    a = p.parse_args()
    threading.Thread(target=_watch_stdin, args=(a.role,), daemon=True).start()
    (run_pub if a.role == "pub" else run_sub)(a)


if __name__ == "__main__":
    main()
