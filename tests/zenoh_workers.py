"""Child processes for the zenoh:// tests: ``python zenoh_workers.py ROLE URL BACKEND ...``.

Each role prints "ready" once its zenoh session is up and "done" at the end, so
the test knows how far the child got; a child never outlives its stdin (the
test closes it, or dies) by more than its own work.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import datacomms as dc


def payload(i: int, size: int) -> dict:
    """A message whose every part derives from i, so a mixed-up one is detectable."""
    return {"i": i, "arr": np.full(size, i % 251, dtype=np.uint8)}


def main(argv: list[str]) -> None:
    role, url, backend = argv[:3]
    rest = argv[3:]
    if role == "pub":
        # pub URL BACKEND N ON_FULL WAIT_SUBS SIZE [linger] [gap=SECONDS] [close=SECONDS]:
        # send N messages (SECONDS apart), then optionally stay until stdin closes (a
        # late joiner needs a live cache); close= is the publisher's linger.
        n, on_full, wait_subs, size = int(rest[0]), rest[1], int(rest[2]), int(rest[3])
        linger = "linger" in rest[4:]
        opts = dict(a.split("=") for a in rest[4:] if "=" in a)
        gap = float(opts.get("gap", 0))
        kw = {"linger": float(opts["close"])} if "close" in opts else {}
        with dc.Publisher(url, backend=backend, on_full=on_full, **kw) as pub:
            print("ready", flush=True)
            if wait_subs:
                pub.wait_for_subscribers(wait_subs, timeout=30)
            for i in range(n):
                pub.send(payload(i, size))
                if gap:
                    time.sleep(gap)
            print("done", flush=True)
            if linger:
                sys.stdin.read()
    elif role == "multi-pub":
        # multi-pub URL BACKEND N KEY...: one publisher per key, N messages each, in turn.
        n, keys = int(rest[0]), rest[1:]
        base, _, query = url.partition("?")
        pubs = [dc.Publisher(f"{base}/{k}?{query}", backend=backend, on_full="block") for k in keys]
        try:
            print("ready", flush=True)
            # the first key's wait is enough: one session carries every publisher,
            # and the other keys may have no subscriber at all
            pubs[0].wait_for_subscribers(1, timeout=30)
            for i in range(n):
                for k, p in zip(keys, pubs):
                    p.send({"key": k, "i": i})
            print("done", flush=True)
            sys.stdin.read()
        finally:
            for p in pubs:
                p.close()
    elif role == "sub":
        # sub URL BACKEND: receive one message, say "got", then read nothing more
        # until stdin closes (a subscriber that stopped reading)
        with dc.Subscriber(url, backend=backend, queue_size=2) as sub:
            print("ready", flush=True)
            sub.recv(timeout=30)
            print("got", flush=True)
            sys.stdin.read()
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
