"""Soak: a long stream over each transport while subscribers join, leave and
are SIGKILLed; this process's resident memory, open file descriptors, threads
and its /dev/shm entries must stay flat, and the subscriber that stays must
lose nothing in block mode (or count every loss exactly where loss is allowed).

Not part of the default run (marker ``soak``); .ci/run runs it as its own step:

    DATACOMMS_SOAK_SECONDS=60 pytest -m soak tests/test_soak.py -s

DATACOMMS_SOAK_SECONDS (default 60) is the budget for all transports together;
set it to 3600 for an hour. The figures are printed (-s) and BENCHMARKS.md
records a run. The publisher, the surviving subscriber and the in-process
churn all live in this process, so a leak in any of them shows here; the
joining and dying subscribers are child processes.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

import datacomms as dc

pytestmark = pytest.mark.soak

TOTAL = float(os.environ.get("DATACOMMS_SOAK_SECONDS", "60"))
SHARE = {"shm": 0.3, "tcp": 0.3, "udp": 0.15, "json": 0.1, "hdf5": 0.15}
RSS_SLACK_KB = 24 * 1024   # after warm-up: generous for allocator noise, far below any per-message leak

# A subscriber in a child process: reads n messages (in order and, in block
# mode, with nothing lost) and exits 0, unless the test kills it first.
CHILD = r"""
import sys, datacomms as dc
url, n, strict = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
with dc.Subscriber(url) as sub:
    last = None
    for _ in range(n):
        m = sub.recv(timeout=20)
        assert last is None or m.seq > last, (last, m.seq)
        assert not strict or last is None or m.seq == last + 1, (last, m.seq)
        last = m.seq
    assert not strict or sub.stats.lost == 0, sub.stats
"""


# The survivor in a child process (hdf5: one process must not hold both ends of a
# file, docs/files.md): reads every message in order until the parent writes the
# number sent to its stdin and it has them all, then prints what it got.
SURVIVOR = r"""
import json, select, sys, datacomms as dc
sub = dc.Subscriber(sys.argv[1])
print("READY", flush=True)
last, received, total = -1, 0, None
while total is None or last + 1 < total:
    if total is None and select.select([sys.stdin], [], [], 0)[0]:
        total = int(sys.stdin.readline())
    try:
        m = sub.recv(timeout=0.2)
    except dc.Timeout:
        continue
    assert m.seq == last + 1, (last, m.seq)
    assert bytes(m.data[:8]) == m.seq.to_bytes(8, "little"), m.seq
    last, received = m.seq, received + 1
print(json.dumps({"received": received, "lost": sub.stats.lost, "last": last}), flush=True)
sub.close()
"""


def payload(seq: int) -> bytes:
    """8 to 64 bytes that name their seq."""
    return seq.to_bytes(8, "little") * (1 + seq % 8)


def json_payload(seq: int) -> dict:
    """json:// carries no bytes: a small joint-state-like dict that names its seq."""
    return {"seq": seq, "joint": [seq * 0.5] * (1 + seq % 8)}


def payload_ok(seq: int, data: Any) -> bool:
    if isinstance(data, dict):
        return data == json_payload(seq)
    return bytes(data[:8]) == seq.to_bytes(8, "little")


def usage(shm_prefix: str | None) -> tuple[int, int, int, int]:
    """(VmRSS in kB, open fds, threads, /dev/shm entries named after shm_prefix)."""
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir("/proc/self/fd"))
    threads = len(os.listdir("/proc/self/task"))
    shm = sum(shm_prefix in n for n in os.listdir("/dev/shm")) if shm_prefix else 0
    return rss, fds, threads, shm


@dataclass
class Run:
    """One transport's soak: the figures it reports and the samples it checks."""

    name: str
    sent: int = 0
    received: int = 0
    first: int = -1
    last: int = -1
    lost: int = 0
    joined: int = 0
    left: int = 0
    killed: int = 0
    churned: int = 0
    samples: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def check_flat(self, after: tuple[int, int, int, int]) -> str:
        warm = self.samples[len(self.samples) // 3]
        end = self.samples[-1]
        peak_rss = max(s[0] for s in self.samples[len(self.samples) // 3:])
        fig = (f"{self.name}: {self.sent:,} sent, {self.received:,} received by the survivor, {self.lost:,} lost; "
               f"{self.joined} subscribers joined ({self.left} left cleanly, {self.killed} SIGKILLed), "
               f"{self.churned} in-process open/close cycles; RSS {warm[0] // 1024} -> {end[0] // 1024} MiB "
               f"(peak {peak_rss // 1024}) after warm-up, fds {warm[1]} -> {end[1]} -> {after[1]} after close, "
               f"threads {warm[2]} -> {end[2]} -> {after[2]}, /dev/shm entries {warm[3]} -> {end[3]} -> {after[3]}")
        print("\nSOAK", fig)
        assert not self.errors, self.errors
        assert end[0] - warm[0] < RSS_SLACK_KB and peak_rss - warm[0] < 2 * RSS_SLACK_KB, fig
        # fds move with how many subscribers are connected at a sample (two
        # each on the publisher's side, more while a departed one is still to
        # be reaped, which a loaded machine makes more often): a leak shows as
        # the last third's median count rising above the middle third's, one
        # per join or so, where their highest counts differ by chance
        third = len(self.samples) // 3
        middle = statistics.median(s[1] for s in self.samples[third:2 * third])
        late = statistics.median(s[1] for s in self.samples[2 * third:])
        assert late <= middle + 2, f"{fig}; median fds: middle third {middle}, last third {late}"
        assert end[2] <= warm[2] + 1, fig
        assert end[3] <= warm[3], fig
        return fig


class Children:
    """Subscriber processes that join, read, and leave or get SIGKILLed."""

    def __init__(self, run: Run, url: str, strict: bool, env: dict[str, str]) -> None:
        self.run, self.url, self.strict, self.env = run, url, strict, env
        self.live: list[tuple[subprocess.Popen, float | None]] = []
        self.rng = random.Random(7)

    def step(self) -> None:
        now = time.monotonic()
        for p, kill_at in list(self.live):
            if kill_at is not None and now >= kill_at and p.poll() is None:
                p.send_signal(signal.SIGKILL)
            rc = p.poll()
            if rc is None:
                continue
            self.live.remove((p, kill_at))
            if rc == -signal.SIGKILL:
                self.run.killed += 1
            elif rc == 0:
                self.run.left += 1
            else:
                self.run.errors.append(f"a subscriber process exited with {rc}")
        if len(self.live) < 3:
            kill_at = now + self.rng.uniform(0.3, 1.5) if self.rng.random() < 0.5 else None
            n = self.rng.choice([1000, 20000])
            p = subprocess.Popen([sys.executable, "-c", CHILD, self.url, str(n), "1" if self.strict else "0"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=self.env)
            self.live.append((p, kill_at))
            self.run.joined += 1

    def close(self) -> None:
        for p, _ in self.live:
            p.kill()
            p.wait()
            self.run.killed += 1
        self.live.clear()


def soak(run: Run, seconds: float, pub: Any, sub: Any, *, strict: bool, child_url: str | None,
         churn: Callable[[], None], shm_prefix: str | None = None, pace: float = 0.0,
         make: Callable[[int], Any] = payload) -> None:
    """Publishes from a thread, reads with sub in another, churns in this one, samples twice a second."""
    stop = threading.Event()
    published = threading.Event()

    def publish() -> None:
        try:
            seq = 0
            while not stop.is_set():
                for _ in range(64):
                    assert pub.send(make(seq), timeout=30) == seq
                    seq += 1
                run.sent = seq
                if pace:
                    time.sleep(pace)
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            run.errors.append(f"publisher: {exc!r}")
            stop.set()
        finally:
            published.set()  # run.sent is final

    def survive() -> None:
        last = -1
        try:
            # until the publisher has finished its last batch, then (strict) until all of it came
            while not published.is_set() or (last + 1 < run.sent and strict):
                try:
                    m = sub.recv(timeout=0.5 if not strict else 30)
                except dc.Timeout:
                    continue
                if strict and m.seq != last + 1:
                    raise AssertionError(f"survivor: seq {m.seq} after {last}")
                if m.seq <= last:
                    raise AssertionError(f"survivor: seq {m.seq} after {last}")
                if not payload_ok(m.seq, m.data):
                    raise AssertionError(f"survivor: payload of {m.seq} is not its own")
                last = m.seq
                if run.first < 0:
                    run.first = m.seq
                run.last = last
                run.received += 1
        except Exception as exc:  # noqa: BLE001
            run.errors.append(f"survivor: {exc!r}")
            stop.set()

    env = dict(os.environ, DATACOMMS_BACKEND=dc.backend.name)
    kids = Children(run, child_url, strict, env) if child_url else None
    survivor = None
    if sub is None:
        survivor = subprocess.Popen([sys.executable, "-c", SURVIVOR, child_url], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=env)
        assert survivor.stdout.readline().strip() == "READY"
    threads = [threading.Thread(target=publish)] + ([threading.Thread(target=survive)] if sub else [])
    for t in threads:
        t.start()
    end = time.monotonic() + seconds
    next_churn = 0.0
    try:
        while time.monotonic() < end and not stop.is_set():
            now = time.monotonic()
            if now >= next_churn:
                if kids:
                    kids.step()
                churn()
                run.churned += 1
                next_churn = now + 0.25
            run.samples.append(usage(shm_prefix))
            time.sleep(0.25)
    finally:
        if kids:
            kids.close()
        stop.set()
        for t in threads:
            t.join(60)
        if survivor is not None:
            import json
            try:
                out, _ = survivor.communicate(f"{run.sent}\n", timeout=120)
                got = json.loads(out)
                run.received, run.last, run.first = got["received"], got["last"], 0
            except Exception as exc:  # noqa: BLE001
                run.errors.append(f"survivor process: {exc!r}")
            finally:
                survivor.kill()
                survivor.wait()
    run.lost = sub.stats.lost if sub is not None else got["lost"]
    assert not run.errors, run.errors
    assert run.received > 0
    if strict:
        assert run.received == run.sent and run.lost == 0, (run.received, run.sent, run.lost)


def _seconds(name: str) -> float:
    return max(3.0, TOTAL * SHARE[name])


FIGURES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _print_figures():
    yield
    if FIGURES:
        print("\n\nSoak figures (" + f"{TOTAL:g} s budget, backend {dc.backend.name}):")
        for f in FIGURES:
            print("  " + f)


def test_soak_shm(shm_name):
    run = Run("shm")
    url = f"shm://{shm_name}"

    def churn() -> None:
        with dc.Subscriber(url) as s:
            try:
                s.latest(timeout=1)
            except dc.Timeout:
                pass

    with dc.Publisher(url, on_full="block", capacity=1 << 20) as pub, dc.Subscriber(url) as sub:
        soak(run, _seconds("shm"), pub, sub, strict=True, child_url=url, churn=churn, shm_prefix=shm_name)
    FIGURES.append(run.check_flat(usage(shm_name)))
    assert not any(shm_name in n for n in os.listdir("/dev/shm"))


def test_soak_tcp():
    run = Run("tcp")
    with dc.Publisher("tcp://127.0.0.1:0", on_full="block") as pub, \
            dc.Subscriber(pub.url, backoff_max=0.2) as sub:
        pub.wait_for_subscribers(1, timeout=10)

        def churn() -> None:
            with dc.Subscriber(pub.url) as s:
                try:
                    s.recv(timeout=1)
                except dc.Timeout:
                    pass

        soak(run, _seconds("tcp"), pub, sub, strict=True, child_url=pub.url, churn=churn)
    FIGURES.append(run.check_flat(usage(None)))


def test_soak_udp():
    """Lossy by design: every loss must be counted (received + lost covers every seq
    from the first to the last). Subscribers bind, so the churn is whole pairs."""
    run = Run("udp")

    def churn() -> None:
        with dc.Subscriber("udp://127.0.0.1:0") as s, dc.Publisher(s.url) as p:
            for i in range(50):
                p.send(payload(i))
            try:
                s.recv(timeout=1)
            except dc.Timeout:
                pass

    with dc.Subscriber("udp://127.0.0.1:0") as sub, dc.Publisher(sub.url) as pub:
        soak(run, _seconds("udp"), pub, sub, strict=False, child_url=None, churn=churn, pace=0.0005)
        assert run.received + run.lost == run.last - run.first + 1, run
    FIGURES.append(run.check_flat(usage(None)))


def test_soak_json(tmp_path):
    """Latest value only: the survivor misses versions by design and counts each one."""
    run = Run("json")
    url = f"json://{tmp_path}/state.json"

    def churn() -> None:
        with dc.Subscriber(url) as s:
            s.latest(timeout=1)

    with dc.Publisher(url) as pub, dc.Subscriber(url) as sub:
        soak(run, _seconds("json"), pub, sub, strict=False, child_url=url, churn=churn, pace=0.001,
             make=json_payload)
        assert run.received + run.lost + sub.stats.skipped == run.last - run.first + 1, run
    FIGURES.append(run.check_flat(usage(None)))


def test_soak_hdf5(tmp_path):
    """A lossless recording followed live: the survivor (another process, as HDF5
    wants) gets every message. The in-process churn only opens and closes."""
    run = Run("hdf5")
    url = f"hdf5://{tmp_path}/log.h5"

    def churn() -> None:
        dc.Subscriber(url).close()

    with dc.Publisher(url, on_full="block") as pub:
        soak(run, _seconds("hdf5"), pub, None, strict=True, child_url=url, churn=churn)
    FIGURES.append(run.check_flat(usage(None)))
