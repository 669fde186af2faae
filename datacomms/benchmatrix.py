"""`datacomms bench`: the throughput and latency matrix (transport × payload ×
backend) beside the peers installed here, with ratios measured in the same run.

It drives the two measuring engines that benchmarks/ also use:
``datacomms.bench`` (shared memory and its same-machine peers) and
``datacomms.netbench`` (TCP and its network peers)."""

from __future__ import annotations

import time
from typing import Any

from . import bench as shm_bench
from . import netbench

DATACOMMS_KINDS = {"cython", "python", "cython-zc", "dc-cython", "dc-python", "dc-cython-spin"}


def _shm(quick: bool, out: dict[str, list[dict[str, Any]]]) -> None:
    sizes = {"64B": 64, "8MiB": 8 << 20} if quick else shm_bench.SIZES
    kinds = ["cython", "python"] + shm_bench.available_peers()
    for label, size in sizes.items():
        for kind in kinds + (shm_bench.zero_copy_kinds() if size >= (1 << 20) else []):
            n = shm_bench.burst_size(size, kind) // (10 if quick else 1)
            if kind in ("python", "mpqueue"):
                n //= 4
            n = max(n, 10)
            with shm_bench.Pump(kind, size, spin_us=50) as pump:
                pump.throughput(max(10, n // 10))
                rate = max(pump.throughput(n) for _ in range(1 if quick else 3))
            out["throughput"].append({"transport": "shm", "size": label, "kind": kind, "msg_s": rate,
                                      "mb_s": rate * size / 1e6})
    count = 300 if quick else 2000
    for kind, spin, mode in shm_bench.latency_kinds():
        with shm_bench.Pump(kind, 64, spin_us=spin) as pump:
            pump.latencies(50, 1000)
            p = shm_bench.percentiles(pump.latencies(count, 1000))
        out["latency"].append({"transport": "shm", "what": "one-way at 1 kHz", "kind": kind, "mode": mode, **p})


def _net(quick: bool, out: dict[str, list[dict[str, Any]]]) -> None:
    sizes = [(64, 20_000 if quick else 100_000), (8 << 20, 20 if quick else 100)]
    for size, count in sizes:
        for kind in netbench.PEERS:
            if not netbench.available(kind) or (kind == "stream" and size < 4096):
                continue
            run, close = netbench.receiver(kind, size, count)
            try:
                run()
                best = 0.0
                for _ in range(1 if quick else 3):
                    t0 = time.perf_counter()
                    run()
                    best = max(best, count / (time.perf_counter() - t0))
            finally:
                close()
            out["throughput"].append({"transport": "tcp", "size": "64B" if size == 64 else "8MiB", "kind": kind,
                                      "msg_s": best, "mb_s": best * size / 1e6})
    for kind in netbench.ONE_WAY_PEERS:
        if not netbench.available(kind):
            continue
        lat = sorted(netbench.one_way(kind, 300 if quick else 2000))
        out["latency"].append({"transport": "tcp", "what": "one-way at 1 kHz", "kind": kind,
                               "mode": "busy-poll" if kind.endswith("-spin") else "sleeping",
                               "p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)], "max_us": lat[-1]})
    kinds = [k for k in netbench.RTT_PEERS if netbench.available(k)]
    for placement in netbench.placements() if not quick else [""]:
        for kind, rtt in netbench.round_trips(kinds, 64, 500 if quick else 2000, placement=placement).items():
            rtt.sort()
            out["latency"].append({"transport": "tcp", "what": "round trip", "kind": kind, "mode": placement,
                                   "p50_us": rtt[len(rtt) // 2] * 1e6, "p99_us": rtt[int(len(rtt) * 0.99)] * 1e6,
                                   "max_us": rtt[-1] * 1e6})


def run(quick: bool = False, transports: tuple[str, ...] = ("shm", "tcp")) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"throughput": [], "latency": []}
    if "shm" in transports:
        _shm(quick, out)
    if "tcp" in transports:
        _net(quick, out)
    return out


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each datacomms row gains its ratio to the best peer of the same transport and size
    that moves data the same way: copying rows against copying peers, zero-copy ("-zc")
    rows against zero-copy ones."""
    def key(r: dict[str, Any]) -> tuple[str, str, bool]:
        return r["transport"], r["size"], r["kind"].endswith("-zc")

    best: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for r in rows:
        if r["kind"] not in DATACOMMS_KINDS:
            if key(r) not in best or r["msg_s"] > best[key(r)]["msg_s"]:
                best[key(r)] = r
    for r in rows:
        peer = best.get(key(r))
        if r["kind"] in DATACOMMS_KINDS and peer:
            r["vs_best_peer"] = r["msg_s"] / peer["msg_s"]
            r["best_peer"] = peer["kind"]
    return rows


def format_result(result: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"{'transport':<10}{'size':>6}  {'kind':<16}{'msg/s':>12}{'MB/s':>10}  vs best peer"]
    for r in _with_ratios(result["throughput"]):
        ratio = f"{r['vs_best_peer']:.2f}x {r['best_peer']}" if "vs_best_peer" in r else ""
        lines.append(f"{r['transport']:<10}{r['size']:>6}  {r['kind']:<16}{r['msg_s']:>12,.0f}{r['mb_s']:>10,.0f}"
                     f"  {ratio}")
    lines += ["", f"{'transport':<10}{'measure':<18}{'kind':<16}{'mode':<10}{'p50 us':>9}{'p99 us':>9}{'max us':>10}"]
    for r in result["latency"]:
        lines.append(f"{r['transport']:<10}{r['what']:<18}{r['kind']:<16}{r['mode']:<10}{r['p50_us']:>9.1f}"
                     f"{r['p99_us']:>9.1f}{r['max_us']:>10.1f}")
    return "\n".join(lines)


def plot(result: dict[str, list[dict[str, Any]]], folder: str) -> list[str]:
    """One bar chart of throughput per transport and size; returns the files written."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["throughput"]:
        groups.setdefault((r["transport"], r["size"]), []).append(r)
    for (transport, size), rows in groups.items():
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        kinds = [r["kind"] for r in rows]
        colors = ["tab:blue" if k in DATACOMMS_KINDS else "tab:gray" for k in kinds]
        ax.barh(kinds, [r["msg_s"] for r in rows], color=colors)
        ax.set_xlabel("messages/s")
        ax.set_title(f"{transport}, {size} payloads (datacomms in blue)", fontsize=10)
        fig.tight_layout()
        path = os.path.join(folder, f"bench-{transport}-{size}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
