"""asyncio receive against the blocking API and against zmq.asyncio, in one run
(engine: datacomms/aiobench.py). A child process sends with plain blocking code;
this process receives with recv() ("sync"), await arecv() on asyncio, or on uvloop;
pyzmq PUSH/PULL with zmq.Context / zmq.asyncio.Context over ipc:// and tcp://.
test_send_throughput_64B is the other way round: this process sends in block mode
with send() or await asend() (zmq: PUSH send), a child receives.

Run: pytest benchmarks/test_aio.py --benchmark-group-by=group --benchmark-columns=median,rounds
Each result's extra_info holds p50/p99 in µs (latency) or msg/s (throughput);
`python -m datacomms.aiobench` prints the same as a table.
"""

from __future__ import annotations

import pytest

from datacomms import aiobench

LINKS = [f"{engine}/{link}" for engine, link in aiobench.LINKS]


def _args(link: str, mode: str) -> tuple[str, str]:
    engine, kind = link.split("/")
    if not aiobench.available(engine, mode):
        pytest.skip(f"{engine} with {mode} is not installed (pip install '.[bench,test]')")
    return engine, kind


@pytest.mark.parametrize("mode", aiobench.MODES)
@pytest.mark.parametrize("link", LINKS)
def test_latency_64B_at_1kHz(benchmark, link, mode):
    """One-way latency of 2000 64 B messages paced at 1 kHz (each one wakes a sleeping receiver)."""
    engine, kind = _args(link, mode)
    benchmark.group = "asyncio latency 64B at 1 kHz"
    out: dict = {}
    benchmark.pedantic(lambda: out.update(aiobench.run(engine, kind, mode, 2000, 1000.0)), rounds=1, iterations=1)
    benchmark.extra_info["p50_us"] = out["p50_us"]
    benchmark.extra_info["p99_us"] = out["p99_us"]


@pytest.mark.parametrize("mode", aiobench.MODES)
@pytest.mark.parametrize("link", LINKS)
def test_throughput_64B(benchmark, link, mode):
    """Receive 50,000 64 B messages a child sends as fast as it can (lossless)."""
    engine, kind = _args(link, mode)
    benchmark.group = "asyncio throughput 64B x 50000"
    rates: list[float] = []
    benchmark.pedantic(lambda: rates.append(aiobench.run(engine, kind, mode, 50_000, 0.0)["msg_per_s"]),
                       rounds=3, iterations=1)
    benchmark.extra_info["msg_per_s"] = sorted(rates)[len(rates) // 2]   # median of the rounds


@pytest.mark.parametrize("mode", aiobench.MODES)
@pytest.mark.parametrize("link", LINKS)
def test_send_throughput_64B(benchmark, link, mode):
    """Send 50,000 64 B messages as fast as possible in block mode, with send() or
    await asend(), to a child that receives them (the sender waits for room)."""
    engine, kind = _args(link, mode)
    benchmark.group = "asyncio send throughput 64B x 50000, block mode"
    rates: list[float] = []
    benchmark.pedantic(lambda: rates.append(aiobench.send_run(engine, kind, mode, 50_000)["msg_per_s"]),
                       rounds=3, iterations=1)
    benchmark.extra_info["msg_per_s"] = sorted(rates)[len(rates) // 2]   # median of the rounds
