"""The asyncio benchmark engine (benchmarks/test_aio.py; `python -m datacomms.aiobench`
prints the same as a table): a publisher child process running plain blocking
code, and a receiver in this process that is either the blocking API, an
asyncio loop (``await sub.arecv()``) or a uvloop loop; pyzmq PUSH/PULL with its
blocking and its zmq.asyncio receiver alongside, over the same kinds of link.

- latency: messages paced at ``rate`` Hz, so the receiver sleeps between them
  and each one measures a wake-up: one-way latency from the sender's
  time.time_ns() to the receiver's, p50 and p99.
- throughput: the child sends as fast as it can (block mode: lossless); the
  rate is counted from the first message received to the last.
- send throughput (``send_run``): the other way round, this process publishes
  as fast as it can in block mode, with ``send()`` or ``await asend()`` (zmq:
  a PUSH socket's send, blocking or awaited, at its default high-water mark),
  and a child receives; the rate is counted from the first send to the child's
  last message, so the sender waits for room in every run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import struct
import tempfile
import time
import uuid
from typing import Any

import datacomms as dc

MODES = ("sync", "asyncio", "uvloop")
# (engine, link): dc over shm and tcp, pyzmq over ipc and tcp
LINKS = (("dc-cython", "shm"), ("dc-python", "shm"), ("dc-cython", "tcp"), ("dc-python", "tcp"), ("zmq", "ipc"),
         ("zmq", "tcp"))
_CTX = mp.get_context("spawn")
_TS = struct.Struct("<q")


def available(engine: str, mode: str) -> bool:
    try:
        if engine == "zmq":
            import zmq  # noqa: F401
            import zmq.asyncio  # noqa: F401
        if mode == "uvloop":
            import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ senders (child processes)


def _pace(start: float, i: int, rate: float) -> None:
    if rate:
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def _dc_sender(url: str, backend: str, n: int, rate: float, size: int, done: Any) -> None:
    kw = {"bind": False} if url.startswith("tcp") else {"capacity": 1 << 22}
    with dc.Publisher(url, backend=backend, on_full="block", **kw) as pub:
        pub.wait_for_subscribers(1, timeout=60)
        payload = bytes(size)
        start = time.perf_counter()
        for i in range(n):
            pub.send(payload, timeout=60)
            _pace(start, i, rate)
        done.wait(120)   # stay until everything is received


def _zmq_sender(addr: str, n: int, rate: float, size: int, done: Any) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(addr)
    payload = bytes(size)
    start = time.perf_counter()
    for i in range(n):
        s.send(_TS.pack(time.time_ns()) + payload)   # PUSH waits for a peer: nothing is lost
        _pace(start, i, rate)
    done.wait(120)   # a PULL peer may drop what it has not read when the pusher goes away
    s.close(linger=0)
    ctx.term()


def _dc_receiver(url: str, backend: str, n: int, ready: Any, done: Any) -> None:
    with dc.Subscriber(url, backend=backend) as sub:
        ready.set()
        for _ in range(n):
            sub.recv(timeout=60)
        done.set()


def _zmq_receiver(addr: str, n: int, ready: Any, done: Any) -> None:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVTIMEO, 60_000)
    s.connect(addr)
    ready.set()
    for _ in range(n):
        s.recv()
    done.set()
    s.close(linger=0)
    ctx.term()


def send_run(engine: str, link: str, mode: str, n: int, size: int = 64) -> dict[str, float]:
    """This process sends n messages of size bytes as fast as it can, in block mode, with
    send() ("sync") or await asend(); a child receives them. Returns msg_per_s."""
    ready, done = _CTX.Event(), _CTX.Event()
    payload = bytes(size)
    pub: Any = None
    sock: Any = None
    if engine == "zmq":
        import zmq
        import zmq.asyncio
        ctx: Any = zmq.asyncio.Context() if mode != "sync" else zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        tmp = tempfile.mkdtemp(prefix="dcaio-")
        sock.bind(f"ipc://{tmp}/s" if link == "ipc" else "tcp://127.0.0.1:*")
        addr = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        child = _CTX.Process(target=_zmq_receiver, args=(addr, n, ready, done), daemon=True)
    else:
        backend = engine.split("-", 1)[1]
        url = "shm://as" + uuid.uuid4().hex[:12] if link == "shm" else "tcp://127.0.0.1:0"
        pub = dc.Publisher(url, backend=backend, on_full="block")
        child = _CTX.Process(target=_dc_receiver, args=(pub.url, backend, n, ready, done), daemon=True)
    child.start()
    try:
        ready.wait(60)
        if pub is not None:
            pub.wait_for_subscribers(1, timeout=60)
        t0 = time.perf_counter()
        if mode == "sync":
            send = (lambda: sock.send(payload)) if sock is not None else (lambda: pub.send(payload, timeout=60))
            for _ in range(n):
                send()
        else:
            async def main() -> None:
                if sock is not None:
                    for _ in range(n):
                        await sock.send(payload)
                else:
                    for _ in range(n):
                        await pub.asend(payload, timeout=60)

            async def bounded() -> None:
                await asyncio.wait_for(main(), 300)

            if mode == "uvloop":
                import uvloop
                uvloop.run(bounded())
            else:
                asyncio.run(bounded())
        if not done.wait(120):
            raise TimeoutError("the receiving child did not get every message")
        elapsed = time.perf_counter() - t0
    finally:
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
        if pub is not None:
            pub.close()
        if sock is not None:
            sock.close(linger=0)
            ctx.term()
            if link == "ipc":
                for name in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, name))
                os.rmdir(tmp)
    return {"msg_per_s": round(n / elapsed)}


# ------------------------------------------------------------------ receivers


class _Receiver:
    """One receiving end: ``take()`` (blocking) or ``atake()`` (awaitable), each
    returning the sender's time.time_ns() of the message."""

    def __init__(self, engine: str, link: str) -> None:
        self.engine, self.link = engine, link
        self.tmp = tempfile.mkdtemp(prefix="dcaio-")
        self.sub: Any = None
        self.sock: Any = None

    def open(self, mode: str) -> str:
        """Binds or creates the receiving end; returns the address the sender uses."""
        if self.engine == "zmq":
            import zmq
            import zmq.asyncio
            self.ctx = zmq.asyncio.Context() if mode != "sync" else zmq.Context()
            self.sock = self.ctx.socket(zmq.PULL)
            self.sock.setsockopt(zmq.RCVTIMEO, 300_000)   # a blocking recv never hangs the run
            addr = f"ipc://{self.tmp}/s" if self.link == "ipc" else "tcp://127.0.0.1:*"
            self.sock.bind(addr)
            return self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        backend = self.engine.split("-", 1)[1]
        if self.link == "shm":
            url = "shm://ab" + uuid.uuid4().hex[:12]
            self.sub = dc.Subscriber(url, backend=backend)
            return url
        self.sub = dc.Subscriber("tcp://127.0.0.1:0", backend=backend, bind=True)
        return self.sub.url

    def take(self) -> int:
        if self.sock is not None:
            return _TS.unpack_from(self.sock.recv())[0]
        return self.sub.recv(timeout=60).timestamp_ns

    async def atake(self) -> int:
        if self.sock is not None:
            return _TS.unpack_from(await self.sock.recv())[0]
        return (await self.sub.arecv(timeout=60)).timestamp_ns

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.ctx.term()
        if self.sub is not None:
            self.sub.close()
        try:
            for name in os.listdir(self.tmp):
                os.unlink(os.path.join(self.tmp, name))
            os.rmdir(self.tmp)
        except OSError:
            pass


def run(engine: str, link: str, mode: str, n: int, rate: float, size: int = 64) -> dict[str, float]:
    """One run: n messages of size bytes at rate Hz (0: as fast as possible). Returns
    p50_us, p99_us (one-way latency) and msg_per_s."""
    rx = _Receiver(engine, link)
    addr = rx.open(mode)
    done = _CTX.Event()
    if engine == "zmq":
        child = _CTX.Process(target=_zmq_sender, args=(addr, n, rate, size, done), daemon=True)
    else:
        child = _CTX.Process(target=_dc_sender, args=(addr, engine.split("-", 1)[1], n, rate, size, done),
                             daemon=True)
    child.start()
    lat = [0] * n
    try:
        if mode == "sync":
            first = rx.take()
            t0 = time.perf_counter()
            lat[0] = time.time_ns() - first
            for i in range(1, n):
                sent = rx.take()
                lat[i] = time.time_ns() - sent
            elapsed = time.perf_counter() - t0
        else:
            async def main() -> float:
                first = await rx.atake()
                t0 = time.perf_counter()
                lat[0] = time.time_ns() - first
                for i in range(1, n):
                    sent = await rx.atake()
                    lat[i] = time.time_ns() - sent
                return time.perf_counter() - t0

            async def bounded() -> float:
                return await asyncio.wait_for(main(), 300)   # one bound for the run, not per message

            if mode == "uvloop":
                import uvloop
                elapsed = uvloop.run(bounded())
            else:
                elapsed = asyncio.run(bounded())
    finally:
        done.set()
        child.join(60)
        if child.is_alive():
            child.kill()
            child.join()
        rx.close()
    lat.sort()
    return {"p50_us": round(lat[n // 2] / 1e3, 1), "p99_us": round(lat[int(n * 0.99)] / 1e3, 1),
            "msg_per_s": round((n - 1) / elapsed) if elapsed > 0 else 0.0}


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="asyncio receive vs blocking receive vs zmq.asyncio")
    p.add_argument("--latency-count", type=int, default=2000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--throughput-count", type=int, default=50_000)
    a = p.parse_args()
    print(f"{'engine':10} {'link':4} {'mode':8} {'p50 us':>8} {'p99 us':>8} {'msg/s':>10} {'sent/s':>10}")
    for engine, link in LINKS:
        for mode in MODES:
            if not available(engine, mode):
                continue
            lat = run(engine, link, mode, a.latency_count, a.rate)
            thr = run(engine, link, mode, a.throughput_count, 0)
            snd = send_run(engine, link, mode, a.throughput_count)
            print(f"{engine:10} {link:4} {mode:8} {lat['p50_us']:8.1f} {lat['p99_us']:8.1f} {thr['msg_per_s']:10.0f}"
                  f" {snd['msg_per_s']:10.0f}", flush=True)


if __name__ == "__main__":
    main()
