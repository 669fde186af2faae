"""tcp:// throughput, one-way latency and round trip, cython beside python, a
plain persistent Python socket, pyzmq (PUSH/PULL, REQ/REP), bare zenoh-python
(a peer pair over tcp/127.0.0.1) and a raw sendall/recv_into stream,
each across two processes on 127.0.0.1 (engine: datacomms/netbench.py).

Run: pytest benchmarks/test_net.py --benchmark-group-by=group --benchmark-columns=median,min,rounds
Each result's extra_info holds msg/s and MB/s (throughput) or p50/p99 in µs (round trip);
`python -m datacomms.netbench` prints the same as a table.
"""

from __future__ import annotations

import pytest

from datacomms import netbench

PEERS = [p for p in netbench.PEERS]
SIZES = {"64B": (64, 20_000), "8MiB": (8 << 20, 20)}


def _skip_absent(kind: str) -> None:
    if not netbench.available(kind):
        pytest.skip(f"{kind} is not installed")


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kind", PEERS)
def test_throughput(benchmark, kind, size):
    """Receive N messages a child process sends as fast as it can (lossless)."""
    _skip_absent(kind)
    nbytes, count = SIZES[size]
    if kind == "stream" and nbytes < 4096:
        pytest.skip("the raw stream is the large-buffer reference only")
    benchmark.group = f"tcp throughput {size} x {count}"
    run, close = netbench.receiver(kind, nbytes, count)
    try:
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        close()
    median = benchmark.stats.stats.median
    benchmark.extra_info["msg_per_s"] = round(count / median)
    benchmark.extra_info["MB_per_s"] = round(count * nbytes / median / 1e6, 1)


@pytest.mark.parametrize("kind", netbench.ONE_WAY_PEERS)
def test_one_way_64B_at_1kHz(benchmark, kind):
    """2000 stamped 64 B messages a child sends at 1 kHz; receive time minus send
    time (one clock), p50/p99 in extra_info (dc-cython-spin: spin_us=netbench.SPIN_US)."""
    _skip_absent(kind)
    benchmark.group = "tcp one-way 64B at 1 kHz"
    lat = benchmark.pedantic(lambda: sorted(netbench.one_way(kind, 2000)), rounds=1, iterations=1)
    benchmark.extra_info["p50_us"] = round(lat[len(lat) // 2], 1)
    benchmark.extra_info["p99_us"] = round(lat[int(len(lat) * 0.99)], 1)


@pytest.mark.parametrize("placement", netbench.placements())
def test_round_trip_64B(benchmark, placement):
    """2000 round trips of 64 B through an echoing child for every peer, the
    peers taking turns (netbench.round_trips), with the processes where the
    scheduler puts them, all on one core, or the children on another core;
    p50/p99 per peer and the dc-cython / plain socket p50 ratios in extra_info
    (dc-cython-spin: both subscribers busy-poll, spin_us=netbench.SPIN_US;
    socket-2conn: a plain echo over one connection each way)."""
    kinds = [k for k in netbench.RTT_PEERS if netbench.available(k)]
    benchmark.group = "tcp round trip 64B"
    rtts = benchmark.pedantic(lambda: netbench.round_trips(kinds, 64, 2000, placement=placement), rounds=1,
                              iterations=1)
    for kind, r in rtts.items():
        r.sort()
        benchmark.extra_info[f"{kind}_p50_us"] = round(r[len(r) // 2] * 1e6, 1)
        benchmark.extra_info[f"{kind}_p99_us"] = round(r[int(len(r) * 0.99)] * 1e6, 1)
    for ref in ("socket", "socket-2conn"):   # one connection both ways; one each way, as pub/sub has
        if ref in rtts and "dc-cython" in rtts:
            benchmark.extra_info[f"dc-cython_over_{ref}_p50"] = round(
                benchmark.extra_info["dc-cython_p50_us"] / benchmark.extra_info[f"{ref}_p50_us"], 2)


@pytest.mark.parametrize("rate,count", [(1000, 10_000), (50, 500)])
@pytest.mark.parametrize("kind", netbench.SEED_PEERS)
def test_seed_scenario(benchmark, kind, rate, count):
    """The seed scenario: joint-state dicts at a fixed rate; lost, longest gap and min Hz in extra_info
    (socket: the same JSON over a plain persistent socket, the machine's own scheduling floor)."""
    benchmark.group = f"seed scenario {rate} Hz x {count}"
    out: dict = {}
    benchmark.pedantic(lambda: out.update(netbench.seed(kind, rate, count)), rounds=1, iterations=1)
    for k in ("received", "lost", "longest_gap_s", "min_hz", "latency_p50_us", "latency_p99_us"):
        benchmark.extra_info[k] = out[k]
