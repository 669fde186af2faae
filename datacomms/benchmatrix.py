"""`datacomms bench`: the throughput and latency matrix (transport × payload ×
backend) beside the peers installed here, with ratios measured in the same run.

It drives the two measuring engines that benchmarks/ also use:
``datacomms.bench`` (shared memory and its same-machine peers) and
``datacomms.netbench`` (TCP and its network peers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import bench as shm_bench
from . import netbench

DATACOMMS_KINDS = {"cython", "python", "cython-zc", "dc-cython", "dc-python", "dc-cython-spin"}


ROUNDS = 5  # throughput bursts per kind, the kinds taking turns; the median is reported


def _rate_row(transport: str, label: str, size: int, kind: str, rates: list[float]) -> dict[str, Any]:
    rate = float(np.median(rates))
    return {"transport": transport, "size": label, "kind": kind, "msg_s": rate, "mb_s": rate * size / 1e6,
            "msg_s_rounds": rates}


def _lat_row(transport: str, what: str, kind: str, mode: str, lat_ns: list[int]) -> dict[str, Any]:
    return {"transport": transport, "what": what, "kind": kind, "mode": mode, **shm_bench.percentiles(lat_ns)}


def _shm(quick: bool, out: dict[str, list[dict[str, Any]]]) -> None:
    sizes = {"64B": 64, "8MiB": 8 << 20} if quick else shm_bench.SIZES
    kinds = ["cython", "python"] + shm_bench.available_peers()
    for label, size in sizes.items():
        group = kinds + (shm_bench.zero_copy_kinds() if size >= (1 << 20) else [])
        rates = shm_bench.throughputs(group, size, rounds=1 if quick else ROUNDS, seconds=0.02 if quick else 0.25)
        out["throughput"] += [_rate_row("shm", label, size, kind, r) for kind, r in rates.items()]
    lat = shm_bench.latencies(shm_bench.latency_kinds(), 300 if quick else 2000, rounds=1 if quick else 4)
    for (kind, mode), ns in lat.items():
        if kind == shm_bench.ECHO:
            out["latency"].append(_lat_row("tcp", "round trip 1 kHz", "socket", mode, ns))
        else:
            out["latency"].append(_lat_row("shm", "one-way at 1 kHz", kind, mode, ns))


def _net(quick: bool, out: dict[str, list[dict[str, Any]]]) -> None:
    sizes = [(64, 20_000 if quick else 100_000), (8 << 20, 20 if quick else 100)]
    for size, count in sizes:
        kinds = [k for k in netbench.PEERS if netbench.available(k) and not (k == "stream" and size < 4096)]
        label = "64B" if size == 64 else "8MiB"
        for kind, rates in netbench.throughputs(kinds, size, count, rounds=1 if quick else ROUNDS).items():
            out["throughput"].append(_rate_row("tcp", label, size, kind, rates))
    for kind in netbench.ONE_WAY_PEERS:
        if not netbench.available(kind):
            continue
        lat = netbench.one_way(kind, 300 if quick else 2000)
        out["latency"].append(_lat_row("tcp", "one-way at 1 kHz", kind,
                                       "busy-poll" if kind.endswith("-spin") else "sleeping",
                                       [int(x * 1000) for x in lat]))
    kinds = [k for k in netbench.RTT_PEERS if netbench.available(k)]
    for placement in netbench.placements() if not quick else [""]:
        for kind, rtt in netbench.round_trips(kinds, 64, 500 if quick else 2000, placement=placement).items():
            out["latency"].append(_lat_row("tcp", "round trip", kind, placement, [int(t * 1e9) for t in rtt]))


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
    judged = targets(result)
    if judged:
        lines += ["", "targets, judged on this run:"]
        lines += [f"  {'met    ' if met else 'NOT met'}  {name}: {figure}" for name, figure, met in judged]
    return "\n".join(lines)


def targets(result: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, bool]]:
    """The project's performance targets (docs: the shm:// and tcp:// issues) judged
    on this run: (target, the figures, met). A target whose rows this run lacks (a
    peer not installed, a transport not measured) is left out."""
    rate = {(r["transport"], r["size"], r["kind"]): r["msg_s"] for r in result["throughput"]}
    lat = {(r["transport"], r["what"], r["kind"], r["mode"]): r for r in result["latency"]}
    out: list[tuple[str, str, bool]] = []

    def ratio(name: str, a: tuple[str, str, str], b: tuple[str, str, str], at_least: float) -> None:
        if a in rate and b in rate:
            x = rate[a] / rate[b]
            out.append((name, f"{x:.2f}x", x >= at_least))

    for r in _with_ratios(result["throughput"]):
        if (r["transport"], r["size"], r["kind"]) == ("shm", "64B", "cython") and "vs_best_peer" in r:
            x = r["vs_best_peer"]
            out.append(("shm 64 B >= 3x the best peer", f"{x:.2f}x", x >= 3))
    ratio("shm 64 B cython >= 5x python", ("shm", "64B", "cython"), ("shm", "64B", "python"), 5)
    busy = lat.get(("shm", "one-way at 1 kHz", "cython", "busy-poll"))
    if busy:
        out.append(("shm busy-poll one-way p50 <= 5 us", f"{busy['p50_us']:.1f} us", busy["p50_us"] <= 5))
        out.append(("shm busy-poll one-way p99 <= 25 us", f"{busy['p99_us']:.1f} us", busy["p99_us"] <= 25))
    sleep = lat.get(("shm", "one-way at 1 kHz", "cython", "sleeping"))
    for what, mode, how in (("round trip 1 kHz", "sleeping", "paced at 1 kHz"), ("round trip", "", "back to back")):
        echo = lat.get(("tcp", what, "socket", mode))
        if sleep and echo:
            half = echo["p50_us"] / 2
            out.append((f"shm sleeping p50 <= half a plain TCP echo's round trip ({how})",
                        f"{sleep['p50_us']:.1f} vs {half:.1f} us", sleep["p50_us"] <= half))
    ratio("shm 8 MiB copy >= iceoryx2 copy", ("shm", "8MiB", "cython"), ("shm", "8MiB", "iceoryx2"), 1)
    ratio("shm 8 MiB zero copy >= iceoryx2 zero copy", ("shm", "8MiB", "cython-zc"), ("shm", "8MiB", "iceoryx2-zc"), 1)
    ratio("tcp 64 B >= 1.5x pyzmq", ("tcp", "64B", "dc-cython"), ("tcp", "64B", "zmq"), 1.5)
    ratio("tcp 8 MiB >= 0.8x a C-speed stream", ("tcp", "8MiB", "dc-cython"), ("tcp", "8MiB", "stream"), 0.8)
    for mode in ("", "same core", "across cores"):
        dc_rtt, echo = lat.get(("tcp", "round trip", "dc-cython", mode)), lat.get(("tcp", "round trip", "socket", mode))
        where = mode or "free"
        if dc_rtt and echo:
            out.append((f"tcp round trip p50 <= a plain TCP echo's ({where})",
                        f"{dc_rtt['p50_us']:.1f} vs {echo['p50_us']:.1f} us", dc_rtt["p50_us"] <= echo["p50_us"]))
        spin = lat.get(("tcp", "round trip", "dc-cython-spin", mode))
        if spin:
            out.append((f"tcp round trip p50 with spin_us <= 30 us ({where})", f"{spin['p50_us']:.1f} us",
                        spin["p50_us"] <= 30))
    return out


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
