"""shm:// across processes: throughput per payload size and one-way latency,
cython beside python beside the peers that are installed.

Run: pytest benchmarks/test_shm.py --benchmark-group-by=group
     (or `python -m datacomms.bench` for one table of messages per second)

Each round is one burst: the child publishes n messages flat out, this
process receives them with one recv() per message; a round's time / n is
the cost per message. ``extra_info`` carries msgs_per_s and MB_per_s of the
best round, and the latency tests carry p50/p99/max in microseconds.
"""

from __future__ import annotations

import pytest

from datacomms import bench

KINDS = ["cython", "python"] + bench.available_peers()  # peers that are not installed are left out


def _run(benchmark, kind: str, size: int, spin_us: float = 50.0) -> None:
    n = max(20, bench.burst_size(size, kind) // 2)  # the same n for every kind of a group: the times compare
    with bench.Pump(kind, size, spin_us=spin_us) as pump:
        pump.burst(max(10, n // 10))  # map the ring's pages, warm the caches
        benchmark.pedantic(pump.burst, args=(n,), rounds=3, iterations=1)
    best = benchmark.stats.stats.min
    benchmark.extra_info.update(messages=n, msgs_per_s=n / best, MB_per_s=n * size / best / 1e6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", list(bench.SIZES), ids=list(bench.SIZES))
def test_throughput(benchmark, kind, size):
    """Cross-process stream, one send and one recv per message, lossless (block mode / blocking queues)."""
    benchmark.group = f"throughput {size}"
    _run(benchmark, kind, bench.SIZES[size])


@pytest.mark.parametrize("kind", bench.zero_copy_kinds())
@pytest.mark.parametrize("size", ["1MiB", "8MiB"])
def test_throughput_zero_copy(benchmark, kind, size):
    """Loans on the send side and views on the receive side: no copy of the payload at all
    (ours: pub.loan + recv(copy=False); iceoryx2: loan_slice_uninit + a view of the sample)."""
    benchmark.group = f"throughput {size}"
    _run(benchmark, kind, bench.SIZES[size])


@pytest.mark.parametrize("kind,spin_us,mode", bench.latency_kinds(), ids=[f"{k}-{m}" for k, _, m in bench.latency_kinds()])
def test_latency_1khz(benchmark, kind, spin_us, mode):
    """One-way latency of 64 B messages sent at 1 kHz (receive time - send time, one clock)."""
    benchmark.group = "latency 64B at 1 kHz"
    with bench.Pump(kind, 64, spin_us=spin_us) as pump:
        pump.latencies(100, 1000)
        result: dict = {}

        def once() -> None:
            result.update(bench.percentiles(pump.latencies(1000, 1000)))
        benchmark.pedantic(once, rounds=2, iterations=1)
    benchmark.extra_info.update(result)


def test_tcp_echo_round_trip(benchmark):
    """Reference: 64 B round trip through a plain Python TCP echo child at 1 kHz (the wake-up cost here)."""
    benchmark.group = "latency 64B at 1 kHz"
    result: dict = {}
    benchmark.pedantic(lambda: result.update(bench.tcp_echo_rtt(1000)), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
