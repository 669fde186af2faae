"""asyncio: ``await sub.arecv()`` / ``alatest()`` / ``pub.asend()`` / ``async for`` on
every transport, on both backends: publishers in other processes running plain
blocking code, many subscribers on one loop, cancellation that loses nothing,
timeouts, no thread per subscriber, the shm wake handshake itself, and uvloop."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

import datacomms as dc
import shm_children as kids
from conftest import AVAILABLE
from datacomms.backend import _segment as S

CTX = mp.get_context("spawn")
HERE = os.path.dirname(__file__)
TRANSPORTS = ["shm", "tcp", "udp", "json", "hdf5", "zenoh", "zenoh-fifo"]  # zenoh-fifo: Subscriber(fifo=True)

try:
    import uvloop
except ImportError:  # the test extra installs it; without it the uvloop tests say so
    uvloop = None


def run(coro: Any, loop: str = "asyncio") -> Any:
    if loop == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not installed (pip install '.[test]')")
        return uvloop.run(coro)
    return asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A publisher in another process, running the plain blocking API."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc

    def line(self) -> str:
        return self.proc.stdout.readline().strip()

    def finish(self) -> None:
        p = self.proc
        if isinstance(p, subprocess.Popen):
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=60)
            finally:
                p.kill()
                p.wait()
                p.stdout.close()
        else:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
            assert p.exitcode == 0, f"publisher child exited with {p.exitcode}"


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def publisher_child(transport: str, backend: str, n: int, tmp_path: Path, shm_name: str,
                    rate: float = 2000) -> tuple[str, dict, Child]:
    """Starts a child publishing n messages with seq i; returns (subscriber URL, its kwargs, child).
    Children wait for the subscriber where the transport can tell, so nothing is sent into the void."""
    if transport == "shm":
        url = f"shm://{shm_name}"
        p = CTX.Process(target=kids.publish_sequence, args=(url, backend, n, "block", 1 << 16, 1, 1 / rate),
                        daemon=True)
        p.start()
        return url, {}, Child(p)
    if transport == "tcp":
        c = Child(_popen(os.path.join(HERE, "net_peer.py"), "pub", "tcp://127.0.0.1:0", "--backend", backend,
                         "--count", str(n), "--rate", str(rate), "--wait", "1", "--on-full", "block"))
        return c.line().split()[1], {}, c
    if transport == "udp":
        raise AssertionError("udp children are started against a bound subscriber: see udp_child")
    if transport == "json":
        url = f"json://{tmp_path / 'state.json'}"
        c = Child(_popen(os.path.join(HERE, "file_workers.py"), "json-writer", url, backend, str(n), str(rate)))
        return url, {}, c
    if transport == "hdf5":
        url = f"hdf5://{tmp_path / 'log.h5'}"
        c = Child(_popen(os.path.join(HERE, "file_workers.py"), "hdf5-writer", url, backend, str(n), str(rate),
                         "0.002"))
        return url, {}, c
    if transport.startswith("zenoh"):
        port = free_port()
        key = "dcaio/" + uuid.uuid4().hex[:10]
        c = Child(_popen(os.path.join(HERE, "zenoh_workers.py"), "pub", f"zenoh://{key}?listen=tcp/127.0.0.1:{port}",
                         backend, str(n), "block", "1", "64"))
        return f"zenoh://{key}?connect=tcp/127.0.0.1:{port}", {"fifo": transport == "zenoh-fifo"}, c
    raise AssertionError(transport)


def udp_child(url: str, backend: str, n: int, rate: float = 2000) -> Child:
    return Child(_popen(os.path.join(HERE, "net_peer.py"), "pub", url, "--backend", backend, "--count", str(n),
                        "--rate", str(rate), "--kind", "dict"))


# ------------------------------------------------------------------ every transport, another process


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_transport_from_a_blocking_publisher_process(transport, backend, tmp_path, shm_name) -> None:
    """arecv() gets what a plain blocking publisher in another process sends, in order."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    n = 200

    async def main() -> tuple[list[int], Any]:
        if transport == "udp":
            sub = dc.Subscriber("udp://127.0.0.1:0", backend=backend)
            child = udp_child(sub.url, backend.name, n, rate=1000)
        else:
            url, kw, child = publisher_child(transport, backend.name, n, tmp_path, shm_name, rate=1000)
            sub = dc.Subscriber(url, backend=backend, **kw)
        got: list[int] = []
        try:
            last = n - 1
            while not got or got[-1] < last:
                try:
                    msg = await sub.arecv(timeout=30 if transport != "udp" else 5)
                except dc.Timeout:
                    break   # udp may lose the last datagrams; the checks below say what is allowed
                got.append(msg.seq)
            stats = sub.stats
        finally:
            sub.close()
            child.finish()
        return got, stats

    got, stats = run(main())
    assert got == sorted(set(got)), "out of order or repeated"
    if transport == "json":
        # a latest-value document: versions are skipped by design, never reordered
        assert got[-1] == n - 1
    elif transport == "udp":
        assert len(got) + stats.lost >= n - 1 and got  # lossy by design, but every loss is counted
    elif transport == "hdf5":
        assert got[-1] == n - 1 and got == list(range(got[0], n))   # a new follower starts at the newest row
    else:
        assert got == list(range(n))
        assert stats.lost == 0


# ------------------------------------------------------------------ many subscribers on one loop


def test_many_subscribers_on_one_loop(backend, shm_name) -> None:
    """Eight shm subscribers and two tcp subscribers wait together on one loop; each gets everything."""
    n = 300
    url = f"shm://{shm_name}"

    async def main() -> list[list[int]]:
        shm_subs = [dc.Subscriber(url, backend=backend) for _ in range(8)]
        tpub = dc.Publisher("tcp://127.0.0.1:0", backend=backend, on_full="block")
        tcp_subs = [dc.Subscriber(tpub.url, backend=backend) for _ in range(2)]
        child = CTX.Process(target=kids.publish_sequence, args=(url, backend.name, n, "block", 1 << 14, 8, 0.0005),
                            daemon=True)
        child.start()

        async def tcp_feed() -> None:
            await asyncio.get_running_loop().run_in_executor(None, tpub.wait_for_subscribers, 2, 30)
            for i in range(n):
                await tpub.asend(i.to_bytes(8, "little"), timeout=30)
                if i % 16 == 0:
                    await asyncio.sleep(0.001)

        async def drain(sub: Any) -> list[int]:
            out = []
            while len(out) < n:
                msg = await sub.arecv(timeout=30)
                out.append(msg.seq)
            return out

        try:
            results = await asyncio.gather(*(drain(s) for s in shm_subs + tcp_subs), tcp_feed())
        finally:
            for s in shm_subs + tcp_subs:
                s.close()
            tpub.close()
            Child(child).finish()
        return results[:-1]

    for seqs in run(main()):
        assert seqs == list(range(n))


# ------------------------------------------------------------------ cancellation


def _cancel_storm_publisher(transport: str, backend: Any, n: int, tmp_path: Path, shm_name: str
                            ) -> tuple[Any, Any, Callable[[], None]]:
    """(publisher, subscriber, paced sender) in this process for the cancellation tests."""
    if transport == "shm":
        pub = dc.Publisher(f"shm://{shm_name}", backend=backend, on_full="block", capacity=1 << 16)
        sub = dc.Subscriber(f"shm://{shm_name}", backend=backend)
    elif transport == "tcp":
        pub = dc.Publisher("tcp://127.0.0.1:0", backend=backend, on_full="block")
        sub = dc.Subscriber(pub.url, backend=backend)
        pub.wait_for_subscribers(1, timeout=30)
    elif transport == "udp":
        sub = dc.Subscriber("udp://127.0.0.1:0", backend=backend)
        pub = dc.Publisher(sub.url, backend=backend)
    else:  # zenoh, peer to peer on loopback
        port = free_port()
        key = "dcaio/" + uuid.uuid4().hex[:10]
        pub = dc.Publisher(f"zenoh://{key}?listen=tcp/127.0.0.1:{port}", backend=backend, on_full="block")
        sub = dc.Subscriber(f"zenoh://{key}?connect=tcp/127.0.0.1:{port}", backend=backend,
                            fifo=transport == "zenoh-fifo")
        pub.wait_for_subscribers(1, timeout=30)

    def feed() -> None:
        for i in range(n):
            pub.send(i.to_bytes(8, "little"), timeout=30)
            time.sleep(random.uniform(0, 0.002))

    return pub, sub, feed


@pytest.mark.parametrize("transport", ["shm", "tcp", "udp", "zenoh", "zenoh-fifo"])
def test_cancelled_waits_lose_nothing(transport, backend, tmp_path, shm_name) -> None:
    """asyncio.wait_for with tiny timeouts cancels arecv over and over while messages
    arrive: every message still comes out once, in order, and nothing counts as lost."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    n = 300
    pub, sub, feed = _cancel_storm_publisher(transport, backend, n, tmp_path, shm_name)
    rng = random.Random(11)

    async def main() -> tuple[list[int], int]:
        got: list[int] = []
        cancels = 0
        sender = threading.Thread(target=feed)
        sender.start()
        try:
            while len(got) < n:
                try:
                    msg = await asyncio.wait_for(sub.arecv(), rng.uniform(0.0002, 0.003))
                except TimeoutError:
                    cancels += 1
                    if cancels > 200_000:
                        break
                    continue
                got.append(int.from_bytes(bytes(msg.data[:8]), "little"))
        finally:
            sender.join()
        return got, cancels

    with pub, sub:
        got, cancels = run(main())
        lost = sub.stats.lost
    assert cancels > 0
    assert got == list(range(n))
    assert lost == 0


def test_cancel_then_use_again(backend, shm_name) -> None:
    """A cancelled waiter leaves the subscriber as it was: the next arecv gets seq 0."""
    async def main() -> list[int]:
        with dc.Publisher(f"shm://{shm_name}", backend=backend) as pub, \
                dc.Subscriber(f"shm://{shm_name}", backend=backend) as sub:
            task = asyncio.ensure_future(sub.arecv())
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            pub.send(b"a")
            pub.send(b"b")
            first = await sub.arecv(timeout=5)
            second = await sub.alatest(timeout=5)
            return [first.seq, second.seq, sub.stats.lost]

    assert run(main()) == [0, 1, 0]


# ------------------------------------------------------------------ timeouts


def _idle_pair(transport: str, backend: Any, tmp_path: Path, shm_name: str) -> tuple[Any, Any]:
    """A publisher (or None) and a subscriber with nothing sent yet."""
    if transport == "shm":
        pub = dc.Publisher(f"shm://{shm_name}", backend=backend)
        return pub, dc.Subscriber(f"shm://{shm_name}", backend=backend)
    if transport == "tcp":
        pub = dc.Publisher("tcp://127.0.0.1:0", backend=backend)
        sub = dc.Subscriber(pub.url, backend=backend)
        pub.wait_for_subscribers(1, timeout=30)
        return pub, sub
    if transport == "udp":
        sub = dc.Subscriber("udp://127.0.0.1:0", backend=backend)
        return dc.Publisher(sub.url, backend=backend), sub
    if transport == "json":
        url = f"json://{tmp_path / 'idle.json'}"
        return dc.Publisher(url, backend=backend), dc.Subscriber(url, backend=backend)
    if transport == "hdf5":
        # one process cannot both write and follow one HDF5 file: a subscriber waiting for a file
        return None, dc.Subscriber(f"hdf5://{tmp_path / 'idle.h5'}", backend=backend)
    port = free_port()
    key = "dcaio/" + uuid.uuid4().hex[:10]
    pub = dc.Publisher(f"zenoh://{key}?listen=tcp/127.0.0.1:{port}", backend=backend)
    sub = dc.Subscriber(f"zenoh://{key}?connect=tcp/127.0.0.1:{port}", backend=backend, history=False,
                        fifo=transport == "zenoh-fifo")
    pub.wait_for_subscribers(1, timeout=30)
    return pub, sub


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeouts(transport, backend, tmp_path, shm_name) -> None:
    """The methods' own timeout raises dc.Timeout (a TimeoutError), timeout=0 only looks,
    asyncio.wait_for cancels cleanly; the subscriber still works afterwards."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)

    async def main() -> Any:
        with pytest.raises(dc.Timeout) as info:
            await sub.arecv(timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(dc.Timeout):
            await sub.alatest(timeout=0.05)
        with pytest.raises(dc.Timeout):
            await sub.arecv(timeout=0)
        with pytest.raises(TimeoutError) as info:
            await asyncio.wait_for(sub.arecv(), 0.05)
        assert not isinstance(info.value, dc.Timeout)   # asyncio's own, from the cancellation
        if pub is None:
            return None
        seq = await pub.asend({"after": "timeouts"})
        msg = await sub.arecv(timeout=10)
        return seq, msg.seq, msg.data

    try:
        out = run(main())
    finally:
        sub.close()
        if pub is not None:
            pub.close()
    if pub is not None:
        assert out == (0, 0, {"after": "timeouts"})


def test_a_nan_timeout_is_refused(backend, shm_name) -> None:
    """timeout=NaN (a deadline computed from a NaN) is a ValueError, as shm's recv says: the
    wait used to become a timer at NaN, which disordered the loop's other timers (a 0.1 s
    sleep of another task ended with the longest one beside it)."""
    async def main() -> None:
        with dc.Subscriber("udp://127.0.0.1:0", backend=backend) as sub, \
                dc.Publisher(f"shm://{shm_name}", backend=backend, on_full="block") as pub, \
                dc.Subscriber(f"shm://{shm_name}", backend=backend):
            for wait in (sub.arecv, sub.alatest):
                with pytest.raises(ValueError, match="not nan"):
                    await asyncio.wait_for(wait(timeout=float("nan")), 10)   # a bound against a hang
            _fill(pub, b"x" * 1000)
            with pytest.raises(ValueError, match="not nan"):
                await asyncio.wait_for(pub.asend(b"x" * 1000, timeout=float("nan")), 10)

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_nan_timeout_is_refused_by_recv_latest_and_send(transport, backend, tmp_path, shm_name) -> None:
    """The synchronous calls refuse NaN alike on every transport, with a message there or
    not (it was a ValueError on shm, a dc.Timeout on tcp and udp, a wait for ever on json)."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    nan = float("nan")
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)
    if pub is None:   # hdf5: a publisher of another file
        pub = dc.Publisher(f"hdf5://{tmp_path / 'written.h5'}", backend=backend)
    try:
        for call in (sub.recv, sub.latest, lambda timeout: pub.send(b"x", timeout)):
            with pytest.raises(ValueError, match="nan"):
                call(timeout=nan)
        if transport == "shm":   # a message there, and a subscriber attached to it
            pub.send(b"y")
            for call in (sub.recv, sub.latest):
                with pytest.raises(ValueError, match="nan"):
                    call(timeout=nan)
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------ async for, closing, late publisher


def test_async_for_ends_when_the_publisher_closes(backend, shm_name) -> None:
    url = f"shm://{shm_name}"

    async def main() -> list[int]:
        child = CTX.Process(target=kids.publish_sequence, args=(url, backend.name, 100, "block", 1 << 14, 1, 0.0),
                            daemon=True)
        with dc.Subscriber(url, backend=backend) as sub:
            child.start()   # after the subscriber: it attaches when the segment appears
            seqs = [msg.seq async for msg in sub]
        Child(child).finish()
        return seqs

    assert run(main()) == list(range(100))


def test_killed_publisher_ends_a_wait_with_closed(backend, shm_name) -> None:
    url = f"shm://{shm_name}"
    ready = CTX.Event()
    child = CTX.Process(target=kids.publish_forever, args=(url, backend.name, ready), daemon=True)
    child.start()
    assert ready.wait(60)

    async def main() -> int:
        with dc.Subscriber(url, backend=backend) as sub:
            await sub.arecv(timeout=30)
            child.kill()
            child.join()
            n = 0
            with pytest.raises(dc.Closed):
                while True:
                    await sub.arecv(timeout=30)
                    n += 1
            return n

    try:
        run(main())
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        for name in os.listdir("/dev/shm"):
            if shm_name in name:
                os.unlink(os.path.join("/dev/shm", name))   # a killed publisher leaves its segment


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_from_another_task_ends_the_wait(transport, loop, backend, tmp_path, shm_name) -> None:
    """close() while a coroutine waits (here from another task) ends that wait with dc.Closed,
    even where nothing would ever wake the loop otherwise (udp, zenoh: no time slice)."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)

    async def main() -> None:
        waiting = asyncio.ensure_future(sub.arecv())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        sub.close()
        with pytest.raises(dc.Closed):
            await asyncio.wait_for(waiting, 30)   # a bound against a hang, not a timing check

    try:
        run(main(), loop)
    finally:
        sub.close()
        if pub is not None:
            pub.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_closing_a_subscriber_while_awaited_leaves_other_waits_alone(transport, loop, backend, tmp_path,
                                                                       shm_name) -> None:
    """close() while a coroutine waits on the subscriber's own sockets: the loop still watches
    them until that coroutine has woken, so they stay open until then. (They were closed at
    once: a subscriber made next took their numbers, and the ending wait unregistered them
    from the loop, so a wait on the new one never woke.)"""
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)
    others: list[Any] = []

    async def main() -> list[Any]:
        waiting = asyncio.ensure_future(sub.arecv())
        await asyncio.sleep(0.02)
        sub.close()
        for _ in range(4):   # they take the lowest free descriptor numbers
            s = dc.Subscriber("udp://127.0.0.1:0", backend=backend)
            others.append((s, dc.Publisher(s.url, backend=backend)))
        waits = [asyncio.ensure_future(s.arecv()) for s, _ in others]
        with pytest.raises(dc.Closed):
            await asyncio.wait_for(waiting, 10)   # a bound against a hang, not a timing check
        await asyncio.sleep(0.02)   # every other wait sleeps in the loop now
        for i, (_, p) in enumerate(others):
            p.send(i)
        return [(await asyncio.wait_for(w, 10)).data for w in waits]

    try:
        assert run(main(), loop) == [0, 1, 2, 3]
    finally:
        for s, p in others:
            s.close()
            p.close()
        pub.close()


def test_a_sleep_after_shutdown_returns_at_once() -> None:
    """close() that lands between a look and the sleep after it: the sleep does not begin
    (its descriptors are gone), so the next look raises dc.Closed instead of hanging."""
    from datacomms import _aio
    w = _aio.PipeWaiter()
    w.shutdown()
    assert w.rfd == -1
    run(asyncio.wait_for(_aio._sleep(w, None), 30))   # a bound against a hang, not a timing check


def test_one_waiting_coroutine_per_subscriber(backend, shm_name) -> None:
    async def main() -> None:
        with dc.Publisher(f"shm://{shm_name}", backend=backend), \
                dc.Subscriber(f"shm://{shm_name}", backend=backend) as sub:
            first = asyncio.ensure_future(sub.arecv())
            await asyncio.sleep(0.01)
            with pytest.raises(dc.DataCommsError, match="already waiting"):
                await sub.arecv(timeout=1)
            first.cancel()

    run(main())


def _wait_in_a_loop_then_close_it(sub: Any, loop: str) -> Any:
    """Leaves a coroutine waiting in sub.arecv() in an event loop that is closed; returns its task."""
    if loop == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed (pip install '.[test]')")
    ended = uvloop.new_event_loop() if loop == "uvloop" else asyncio.new_event_loop()
    task = ended.create_task(sub.arecv())
    ended.run_until_complete(asyncio.sleep(0.02))
    assert not task.done()
    ended.close()
    return task


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["shm", "tcp", "udp", "json"])
def test_a_wait_left_in_a_closed_loop_does_not_hold_the_subscriber(transport, loop, backend, tmp_path,
                                                                     shm_name) -> None:
    """An event loop closed while a coroutine still waits in arecv (its finally never runs):
    a loop in another thread may wait on the subscriber then, and when the abandoned
    coroutine is collected meanwhile, the new wait is undisturbed: a second waiter is still
    refused and close() still ends the wait."""
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)
    abandoned = [_wait_in_a_loop_then_close_it(sub, loop)]
    out: list[Any] = []

    def other_thread() -> None:
        async def main() -> None:
            await pub.asend({"k": 1})
            out.append((await sub.arecv(timeout=10)).data)
            waiting = asyncio.ensure_future(sub.arecv())
            await asyncio.sleep(0.02)
            abandoned.clear()
            gc.collect()   # the abandoned coroutine is thrown away now
            with pytest.raises(dc.DataCommsError, match="already waiting"):
                await sub.arecv(timeout=1)
            sub.close()
            with pytest.raises(dc.Closed):
                await asyncio.wait_for(waiting, 10)   # a bound against a hang, not a timing check
            out.append("closed")
        try:
            run(main(), loop)
        except BaseException as e:   # pytest.raises' failures too
            out.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(30)
    sub.close()
    pub.close()
    assert out == [{"k": 1}, "closed"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["shm", "json"])
def test_closing_a_subscriber_whose_wait_was_left_in_a_closed_loop_releases_its_fds(
        transport, loop, backend, tmp_path, shm_name) -> None:
    fds_before = _open_fds()
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)
    task = _wait_in_a_loop_then_close_it(sub, loop)
    sub.close()
    pub.close()
    assert _open_fds() <= fds_before
    del task


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["shm", "json"])
def test_a_close_whose_wake_up_a_closing_loop_never_ran_releases_the_fds(transport, loop, backend, tmp_path,
                                                                         shm_name) -> None:
    """close() schedules the wake-up in the loop that sleeps, and that loop is closed before it
    runs it: the wait's finally, when its coroutine is collected, closes the waiter (the
    directory waiter: a bare inotify descriptor). The collection here happens while the thread
    holds the waiters' guard, as it may when it comes at any allocation: no deadlock."""
    from datacomms import _aio
    if loop == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed (pip install '.[test]')")
    new_loop = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    new_loop().close()   # libuv's first loop keeps a few descriptors for good
    fds_before = _open_fds()
    # shm: a subscriber before its publisher sleeps on the directory waiter too
    url = f"json://{tmp_path / 'late.json'}" if transport == "json" else f"shm://{shm_name}"
    sub = dc.Subscriber(url, backend=backend)
    ending = new_loop()
    task = ending.create_task(sub.arecv())
    ending.run_until_complete(asyncio.sleep(0.02))
    assert not task.done()
    sub.close()      # the wake-up is scheduled in the still-open loop ...
    ending.close()   # ... which is closed before it runs it
    del task, ending

    def collect_holding_the_guard() -> None:
        with _aio._guard:
            gc.collect()

    t = threading.Thread(target=collect_holding_the_guard, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "collecting the abandoned wait deadlocked on the guard"
    assert _open_fds() <= fds_before


def test_shm_close_while_the_waiter_switches_to_the_wake_socket(backend, shm_name, monkeypatch) -> None:
    """A close() from another thread that lands while _aio_waiter() replaces the directory
    waiter with the wake socket (the publisher just appeared): the new socket is closed at
    once and the wait gets dc.Closed, instead of the socket staying open until the
    subscriber is collected."""
    from datacomms import _aio
    url = f"shm://{shm_name}"
    sub = dc.Subscriber(url, backend=backend)
    sub._aio_waiter()   # the directory waiter: no publisher yet
    made: list[Any] = []

    class CloseLandsHere(_aio.WakeSocket):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)
            t = threading.Thread(target=sub.close)
            t.start()
            t.join(10)

    with dc.Publisher(url, backend=backend):
        with pytest.raises(dc.Timeout):
            sub.recv(timeout=0)   # attaches
        monkeypatch.setattr(_aio, "WakeSocket", CloseLandsHere)
        with pytest.raises(dc.Closed):
            sub._aio_waiter()
    assert len(made) == 1 and made[0].sock.fileno() == -1


def test_a_child_forked_during_a_wait_leaves_the_parents_wait_alone(backend) -> None:
    """A child forked (os.fork in a coroutine) while the parent's arecv sleeps ends its copy of
    that wait when it leaves asyncio.run; the parent's wait must still be woken by its
    descriptor (the epoll instance is shared across fork). udp has no time slice to hide a
    lost wake-up behind. (Under uvloop, libuv's own close in the child drops it: docs/aio.md.)"""
    script = (
        "import asyncio, os, warnings\n"
        "import datacomms as dc\n"
        "warnings.simplefilter('ignore', DeprecationWarning)  # fork with threads, Python 3.12+\n"
        f"sub = dc.Subscriber('udp://127.0.0.1:0', backend='{backend.name}')\n"
        f"pub = dc.Publisher(sub.url, backend='{backend.name}')\n"
        "async def main():\n"
        "    waiting = asyncio.ensure_future(sub.arecv())\n"
        "    await asyncio.sleep(0.02)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        return 'child'   # asyncio.run cancels the child's copy of the wait\n"
        "    os.waitpid(pid, 0)\n"
        "    pub.send(b'x')\n"
        "    try:\n"
        "        return bytes((await asyncio.wait_for(waiting, 10)).data)\n"
        "    except asyncio.TimeoutError:\n"
        "        return 'not woken'\n"
        "out = asyncio.run(main())\n"
        "if out == 'child':\n"
        "    os._exit(0)\n"
        "print(out, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["b'x'"]


def test_files_without_inotify_fall_back_to_a_timer(backend, tmp_path, monkeypatch) -> None:
    """Where the system has no inotify, a json subscriber waits on a timer (its poll_interval)
    and still gets every version written after it started waiting."""
    from datacomms import _aio
    monkeypatch.setattr(_aio, "_libc", lambda: None)
    url = f"json://{tmp_path / 'timer.json'}"

    async def main() -> tuple[tuple[int, ...], list[int]]:
        with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
            waiter = sub._aio_waiter()
            got = []
            for i in range(5):
                task = asyncio.ensure_future(sub.arecv(timeout=30))
                await asyncio.sleep(0.01)
                pub.send({"i": i})
                got.append((await task).data["i"])
            return waiter.fds(), got

    fds, got = run(main())
    assert fds == ()
    assert got == list(range(5))


# ------------------------------------------------------------------ publishers


def _fill(pub: Any, payload: bytes) -> int:
    """Sends until a send would have to wait; how many went."""
    sent, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        if pub._send_nowait(payload) is None:
            # tcp: the loop thread may still be moving queued frames into the kernel
            time.sleep(0.05)
            if pub._send_nowait(payload) is None:
                return sent
        sent += 1
    raise AssertionError("the publisher never filled")


class _BlockPair:
    """A block-mode publisher whose subscriber reads nothing until told: shm on a small
    ring, tcp with a 4-message queue (the kernel's socket buffers fill first)."""

    def __init__(self, transport: str, backend: Any, shm_name: str) -> None:
        if transport == "shm":
            url = f"shm://{shm_name}"
            self.pub = dc.Publisher(url, backend=backend, on_full="block", capacity=4096)
            self.sub = dc.Subscriber(url, backend=backend)
            self.payload = b"x" * 900
        else:
            self.pub = dc.Publisher("tcp://127.0.0.1:0", backend=backend, on_full="block", queue_messages=4)
            self.sub = dc.Subscriber(self.pub.url, backend=backend)
            self.pub.wait_for_subscribers(1, timeout=10)
            self.payload = b"x" * 65000

    def fill(self) -> int:
        return _fill(self.pub, self.payload)

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_block_mode_asend_waits_without_blocking_the_loop(backend, shm_name, transport) -> None:
    """Full block-mode queues: asend waits for room while the loop keeps running other tasks,
    with no worker thread."""
    async def main() -> tuple[int, int, list[int], int, int]:
        pair = _BlockPair(transport, backend, shm_name)
        try:
            sent = pair.fill()
            threads = threading.active_count()
            pending = asyncio.ensure_future(pair.pub.asend(b"last", timeout=30))
            ticks = 0
            while ticks < 20:
                await asyncio.sleep(0.001)
                ticks += 1
            assert not pending.done()
            during = threading.active_count()
            seqs = []
            for _ in range(sent + 1):
                seqs.append((await pair.sub.arecv(timeout=30)).seq)
            return await pending, ticks, seqs, threads, during
        finally:
            pair.close()

    last, ticks, seqs, threads, during = run(main())
    assert ticks == 20
    assert during == threads
    assert seqs == list(range(last + 1))


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_cancelled_block_mode_asend_sends_nothing(backend, shm_name, transport) -> None:
    """An asend waiting for room (on a descriptor, no worker thread) that is cancelled has
    sent nothing, nor has one that timed out; the publisher's next message takes the next seq."""
    async def main() -> tuple[int, int, int, list[Any], int, bytes]:
        pair = _BlockPair(transport, backend, shm_name)
        pub, sub = pair.pub, pair.sub
        try:
            sent = pair.fill()
            threads = threading.active_count()
            pending = asyncio.ensure_future(pub.asend(b"cancelled", timeout=30))
            await asyncio.sleep(0.05)
            during = threading.active_count()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            with pytest.raises(dc.Timeout):
                await pub.asend(b"too late", timeout=0.05)
            got = [await sub.arecv(timeout=30) for _ in range(sent)]
            with pytest.raises(dc.Timeout):
                await sub.arecv(timeout=0.2)
            nxt = await pub.asend(b"next", timeout=30)
            last = await sub.arecv(timeout=30)
            assert (last.seq, bytes(last.data)) == (nxt, b"next")
            return threads, during, nxt, [(m.seq, bytes(m.data)) for m in got], sent, pair.payload
        finally:
            pair.close()

    threads, during, nxt, got, sent, payload = run(main())
    assert during == threads
    assert got == [(i, payload) for i in range(sent)]
    assert nxt == sent


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["tcp"])   # an shm publisher is used from one thread at a time
def test_asends_from_two_loops_never_sleep_on_one_waiter(backend, shm_name, transport, loop, monkeypatch) -> None:
    """Two event loops in two threads asend on one full block-mode publisher: while one sleeps
    on the publisher's waiter, the other does not sleep on it too (each would clear the other's
    wake-up hook: a lost wake-up); it waits in a blocking send on a worker thread. Both sends
    arrive once room comes."""
    from datacomms import _aio
    if loop == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed (pip install '.[test]')")
    sleeping: list[Any] = []
    most = [0]
    real_sleep = _aio._sleep

    async def counted_sleep(waiter: Any, seconds: Any) -> None:
        sleeping.append(waiter)
        most[0] = max(most[0], sleeping.count(waiter))
        try:
            await real_sleep(waiter, seconds)
        finally:
            sleeping.remove(waiter)

    monkeypatch.setattr(_aio, "_sleep", counted_sleep)
    pair = _BlockPair(transport, backend, shm_name)
    blocking: list[Any] = []
    real_send = pair.pub.send

    def send(data: Any, timeout: Any = None) -> int:
        if timeout != 0:
            blocking.append(data)
        return real_send(data, timeout)

    pair.pub.send = send
    done: list[Any] = []

    def asend_in_own_loop(data: bytes) -> None:
        try:
            done.append(run(pair.pub.asend(data, timeout=30), loop))
        except BaseException as e:
            done.append(e)

    def until(what: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not what():
            assert time.monotonic() < deadline and len(done) < 2, done
            time.sleep(0.002)

    threads = []
    try:
        sent = pair.fill()
        for data in (b"first", b"second"):
            threads.append(threading.Thread(target=asend_in_own_loop, args=(data,)))
            threads[-1].start()
            if data == b"first":
                until(lambda: len(sleeping) == 1)
            else:
                until(lambda: most[0] > 1 or blocking)
        got = [bytes((pair.sub.recv(timeout=30)).data) for _ in range(sent + 2)]
    finally:
        for t in threads:
            t.join(30)
        pair.close()
    assert most[0] == 1
    assert blocking == [b"second"]
    assert sorted(got[sent:]) == [b"first", b"second"] and sorted(done) == [sent, sent + 1]


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_closing_the_publisher_ends_a_waiting_asend(backend, shm_name, transport) -> None:
    """An asend waiting for room raises dc.Closed when another task closes its publisher."""
    async def main() -> None:
        pair = _BlockPair(transport, backend, shm_name)
        try:
            pair.fill()
            pending = asyncio.ensure_future(pair.pub.asend(b"never", timeout=30))
            await asyncio.sleep(0.05)
            assert not pending.done()
            pair.pub.close()
            with pytest.raises(dc.Closed):
                await asyncio.wait_for(pending, 5)
        finally:
            pair.close()

    run(main())


def test_block_mode_tcp_asend_to_a_slow_subscriber_process_loses_nothing(backend) -> None:
    """A subscriber in another process that pauses while a block-mode publisher floods it
    with asend: the publisher waits on its room descriptor (counted), starts no thread, and
    the subscriber gets every message, in order, with nothing lost."""
    n = 100_000
    ready, out = CTX.Event(), CTX.Queue()

    async def main() -> tuple[int, int, int]:
        pub = dc.Publisher("tcp://127.0.0.1:0", backend=backend, on_full="block", queue_messages=4)
        child = CTX.Process(target=kids.subscribe_paused, args=(pub.url, backend.name, 0.5, n, ready, out),
                            daemon=True)
        child.start()
        waits = 0
        make_waiter = pub._aio_send_waiter

        def counted() -> Any:
            nonlocal waits
            waits += 1
            return make_waiter()
        pub._aio_send_waiter = counted
        try:
            assert ready.wait(30)
            pub.wait_for_subscribers(1, timeout=30)
            threads = threading.active_count()
            for i in range(n):
                await pub.asend(kids.seq_payload(i), timeout=30)
            return waits, threads, threading.active_count()
        finally:
            try:
                pub.flush(30)
            finally:
                Child(child).finish()
                pub.close()

    waits, before, after = run(main())
    first, last, in_order, lost = out.get(timeout=30)
    assert (first, last, in_order, lost) == (0, n - 1, True, 0)
    assert waits > 0, "the publisher never had to wait: the test did not exercise the wait"
    assert after == before


def test_a_departed_tcp_subscriber_makes_room_for_a_waiting_asend(backend) -> None:
    """Block mode waits only for live subscribers: when the one whose queue is full leaves,
    a waiting asend goes out to the others."""
    async def main() -> tuple[int, bytes]:
        pub = dc.Publisher("tcp://127.0.0.1:0", backend=backend, on_full="block", queue_messages=4)
        stuck = dc.Subscriber(pub.url, backend=backend)
        pub.wait_for_subscribers(1, timeout=10)
        try:
            sent = _fill(pub, b"x" * 65000)
            pending = asyncio.ensure_future(pub.asend(b"after", timeout=30))
            await asyncio.sleep(0.05)
            assert not pending.done()
            stuck.close()
            seq = await asyncio.wait_for(pending, 10)
            return seq - sent, b"after"
        finally:
            stuck.close()
            pub.close()

    assert run(main()) == (0, b"after")


def test_arecv_passes_options_on(backend, shm_name) -> None:
    """arecv(copy=False) on shm gives the zero-copy view recv(copy=False) gives, woken or not."""
    async def main() -> tuple[bool, bytes, bytes]:
        url = f"shm://{shm_name}"
        with dc.Publisher(url, backend=backend) as pub, dc.Subscriber(url, backend=backend) as sub:
            pub.send(b"ready")
            first = await sub.arecv(timeout=5, copy=False)
            view = isinstance(first.data, memoryview)
            a = bytes(first.data)
            task = asyncio.ensure_future(sub.arecv(timeout=30, copy=False))
            await asyncio.sleep(0.01)
            pub.send(b"woken")
            b = bytes((await task).data)
            sub.release()
            return view, a, b

    assert run(main()) == (True, b"ready", b"woken")


def test_asend_drop_mode_returns_seqs(backend, shm_name) -> None:
    async def main() -> list[int]:
        with dc.Publisher(f"shm://{shm_name}", backend=backend) as pub:
            return [await pub.asend({"i": i}) for i in range(5)]

    assert run(main()) == list(range(5))


# ------------------------------------------------------------------ threads and descriptors


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("transport", ["shm", "tcp", "udp", "json", "hdf5"])
def test_no_thread_per_subscriber_and_no_fd_left(transport, backend, tmp_path, shm_name) -> None:
    """Twelve subscribers waiting at once on one loop add no thread; closing them
    releases every descriptor the asyncio waits made."""
    pubs: list[Any] = []

    def make(i: int) -> Any:
        if transport == "shm":
            return dc.Subscriber(f"shm://{shm_name}", backend=backend)
        if transport == "tcp":
            return dc.Subscriber(pubs[0].url, backend=backend)
        if transport == "udp":
            return dc.Subscriber("udp://127.0.0.1:0", backend=backend)
        if transport == "json":
            return dc.Subscriber(f"json://{tmp_path / f'f{i}.json'}", backend=backend)
        return dc.Subscriber(f"hdf5://{tmp_path / f'f{i}.h5'}", backend=backend)

    if transport == "shm":
        pubs.append(dc.Publisher(f"shm://{shm_name}", backend=backend))
    elif transport == "tcp":
        pubs.append(dc.Publisher("tcp://127.0.0.1:0", backend=backend))
    fds_before = _open_fds()
    subs = [make(i) for i in range(12)]
    if transport == "tcp":
        pubs[0].wait_for_subscribers(12, timeout=30)

    async def main() -> tuple[int, int]:
        before = threading.active_count()
        tasks = [asyncio.ensure_future(s.arecv(timeout=5)) for s in subs]
        await asyncio.sleep(0.2)          # every task is asleep in the loop now
        during = threading.active_count()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, during

    try:
        before, during = run(main())
    finally:
        for s in subs:
            s.close()
    for p in pubs:
        p.close()
    assert during == before
    if transport != "tcp":   # tcp sockets linger in the publisher's reap cycle; the count is its own test
        assert _open_fds() <= fds_before


# ------------------------------------------------------------------ the shm wake handshake itself


@pytest.mark.skipif(len(AVAILABLE) < 2, reason="DATACOMMS_NO_EXTENSIONS=1")
@pytest.mark.parametrize("writer", AVAILABLE)
def test_shm_wake_socket_handshake(writer, backend, shm_name) -> None:
    """A reader that announced an async sleep gets exactly one datagram from the next
    publish (each writer backend to each reader backend); one with news pending is told
    not to sleep; a reader that did not announce itself gets nothing."""
    url = f"shm://{shm_name}"
    with dc.Publisher(url, backend=writer) as pub, dc.Subscriber(url, backend=backend) as sub, \
            dc.Subscriber(url, backend=backend) as quiet:
        waiter = sub._aio_waiter()
        other = quiet._aio_waiter()
        assert waiter.arm() is True            # empty ring: may sleep
        pub.send(b"one")
        assert waiter.sock.recv(8) == b"\0"    # the publisher found the flag and woke it
        with pytest.raises(BlockingIOError):
            waiter.sock.recv(8)                # once
        with pytest.raises(BlockingIOError):
            other.sock.recv(8)                 # never armed: never woken
        assert waiter.arm() is False           # "one" is unread: do not sleep
        assert sub.recv(timeout=0).data == b"one"
        assert waiter.arm() is True
        pub.send(b"two")                       # the flag was cleared by the first wake; set again by arm
        assert waiter.sock.recv(8) == b"\0"
        off = S.OFF_SLOTS + sub._slot * S.SLOT_SIZE
        mm = sub._seg.mm
        assert int.from_bytes(mm[off + S.SLOT_WAKE_ID:off + S.SLOT_WAKE_ID + 8], "little") == waiter.id
        assert int.from_bytes(mm[off + S.SLOT_WAKE:off + S.SLOT_WAKE + 4], "little") == 0


def test_shm_subscriber_before_its_publisher(backend, shm_name) -> None:
    """A subscriber waiting in the loop for a publisher that does not exist yet gets its first message."""
    url = f"shm://{shm_name}"

    async def main() -> int:
        with dc.Subscriber(url, backend=backend) as sub:
            task = asyncio.ensure_future(sub.arecv(timeout=30))
            await asyncio.sleep(0.05)
            child = CTX.Process(target=kids.publish_sequence, args=(url, backend.name, 1, "block", 1 << 14, 1, 0.0),
                                daemon=True)
            child.start()
            msg = await task
            Child(child).finish()
            return msg.seq

    assert run(main()) == 0


# ------------------------------------------------------------------ uvloop


@pytest.mark.parametrize("transport", ["shm", "tcp", "udp", "json", "zenoh", "zenoh-fifo"])
def test_uvloop(transport, backend, tmp_path, shm_name) -> None:
    """The same waits under uvloop: a thread publishes, the loop receives in order."""
    if transport.startswith("zenoh"):
        pytest.importorskip("zenoh")
    pub, sub = _idle_pair(transport, backend, tmp_path, shm_name)
    n = 100

    def feed() -> None:
        for i in range(n):
            pub.send({"i": i})
            time.sleep(0.002 if transport == "json" else 0.0005)

    async def main() -> list[int]:
        t = threading.Thread(target=feed)
        t.start()
        got: list[int] = []
        try:
            while not got or got[-1] < n - 1:
                got.append((await sub.arecv(timeout=10)).data["i"])
        finally:
            t.join()
        return got

    with sub:
        try:
            got = run(main(), "uvloop")
        finally:
            pub.close()
    if transport == "json":
        assert got == sorted(set(got)) and got[-1] == n - 1
    else:
        assert got == list(range(n))
