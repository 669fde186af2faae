"""The command line, run as a user would: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datacomms.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_demo_quick_runs_table_json_and_plots(tmp_path):
    out = tmp_path / "plots"
    summary = tmp_path / "summary.json"
    r = run("demo", "--quick", "--count", "120", "--out", str(out), "--json", str(summary))
    assert r.returncode == 0, r.stdout + r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("transport"))
    for col in ("transport", "backend", "received", "lost %", "failed reads", "min Hz", "longest gap ms",
                "p50 us", "p99 us"):
        assert col in header
    rows = json.loads(summary.read_text())
    assert {(x["transport"], x["backend"]) for x in rows} == {
        (t, b) for t in ("shm", "tcp", "udp", "json", "hdf5") for b in ("cython", "python")}
    for x in rows:
        assert x["failed_reads"] == 0 and x["received"] > 0
        if x["transport"] in ("shm", "tcp", "hdf5"):  # lossless streams at this rate
            assert x["received"] == 120 and x["lost"] == 0, x
    pytest.importorskip("matplotlib")
    assert all(is_png(x["plot"]) for x in rows)


def test_send_then_recv_over_a_file(tmp_path):
    url = f"hdf5://{tmp_path / 'log.h5'}"
    out = tmp_path / "recv.json"
    recv = subprocess.Popen([sys.executable, "-m", "datacomms.cli", "recv", url, "--count", "200", "--json",
                             str(out), "--idle", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    s = run("send", url, "--rate", "500", "--count", "200")
    assert s.returncode == 0 and "sent 200 messages" in s.stdout, s.stderr
    stdout, stderr = recv.communicate(timeout=60)
    assert recv.returncode == 0, stderr
    got = json.loads(out.read_text())
    assert got["received"] == 200 and got["lost"] == 0 and got["stats"]["received"] == 200


@pytest.mark.parametrize("args,msg", [
    (("recv", "carrier://x"), "unknown URL scheme"),
    (("send", "nonsense"), "bad URL"),
    (("send", "json:///nonexistent-dir/x/y.json", "--count", "1"), "No such file"),
    (("demo", "--transports", "pigeon"), "unknown transport"),
    (("send", "json://x.json", "--payload", "cake"), "bad --payload"),
])
def test_errors_are_one_line_and_nonzero(args, msg, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run("--debug", "recv", "carrier://x", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize("scheme", ["json", "tcp"])
def test_recv_with_nothing_published_says_so(tmp_path, scheme):
    url = f"json://{tmp_path / 'none.json'}" if scheme == "json" else "tcp://127.0.0.1:1"  # nobody listens on 1
    r = run("recv", url, "--idle", "0.5")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nothing received" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("send", f"tcp://127.0.0.1:{port}", "--count", "1")
    assert r.returncode == 1 and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in r.stderr   # says which address


def test_bench_quick_writes_a_matrix(tmp_path):
    out = tmp_path / "bench.json"
    r = run("bench", "--quick", "--transports", "shm", "--json", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    kinds = {(x["size"], x["kind"]) for x in result["throughput"]}
    assert {("64B", "cython"), ("64B", "python"), ("64B", "mpqueue")} <= kinds
    assert all(x["msg_s"] > 0 and x["msg_s_rounds"] for x in result["throughput"])
    assert "vs best peer" in r.stdout and "targets, judged on this run:" in r.stdout
    lat = {(x["kind"], x["mode"]): x for x in result["latency"]}
    # the wake-up reference of the sleeping figures: a plain TCP echo paced like them
    echo = [x for x in result["latency"] if x["what"] == "round trip 1 kHz"]
    assert [(x["transport"], x["kind"], x["mode"]) for x in echo] == [("tcp", "socket", "sleeping")]
    assert 0 < echo[0]["p50_us"] <= echo[0]["max_us"]
    # the floor of the method, measured beside the rest: a flag in shared memory the receiver spins on
    assert lat[("spin-flag", "busy-poll")]["p50_us"] > 0 and ("cython", "busy-poll") in lat
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("datacomms-bench-flag-")]


def test_clean_lists_and_removes_a_killed_publishers_segment(tmp_path, shm_name):
    code = (f"import datacomms as dc, os, signal; p = dc.Publisher('shm://{shm_name}'); p.send(1); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert any(shm_name in n for n in os.listdir("/dev/shm"))
    r = run("clean", "--dry-run")
    assert r.returncode == 0 and shm_name in r.stdout and "would remove" in r.stdout
    assert any(shm_name in n for n in os.listdir("/dev/shm"))
    r = run("clean")
    assert r.returncode == 0 and shm_name in r.stdout
    assert not any(shm_name in n for n in os.listdir("/dev/shm"))


def test_clean_reports_what_it_removed_not_what_it_listed(shm_name):
    """`datacomms clean` printed "removing" for every stale name, then let clean()
    skip some (a publisher's temporary segment younger than 10 s): it claimed to
    remove what it left."""
    path = f"/dev/shm/dc-.tmp-{shm_name}"
    with open(path, "wb") as f:
        f.write(bytes(4096))
    try:
        r = run("clean")
        assert r.returncode == 0 and f"removed .tmp-{shm_name}" not in r.stdout
        assert f"left .tmp-{shm_name}" in r.stdout and os.path.exists(path)
    finally:
        os.unlink(path)


def test_round_trip_references_echo_over_one_and_two_connections():
    """The plain-socket references of the round-trip benchmark: one connection both
    ways, and one each way (the topology a publisher and a subscriber on each side have)."""
    from datacomms import netbench
    rtts = netbench.round_trips(["socket", "socket-2conn", "dc-cython" if netbench.available("dc-cython")
                                 else "dc-python"], 64, 40, rounds=2)
    assert [len(v) for v in rtts.values()] == [40, 40, 40]
    assert all(0 < t < 5 for v in rtts.values() for t in v)


def test_benchmark_kinds_take_turns() -> None:
    """Every kind is measured once per round, so that the machine's drift falls alike
    on all of them, and each round starts one kind later, so that none keeps one place."""
    from datacomms.netbench import taking_turns
    calls: list[str] = []
    out = taking_turns({k: (lambda k=k: calls.append(k) or len(calls)) for k in "abc"}, 4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert out == {"a": [1, 6, 8, 10], "b": [2, 4, 9, 11], "c": [3, 5, 7, 12]}


def test_paced_round_trips_sleep_between_trips() -> None:
    from datacomms import netbench
    echo = netbench.Echo("socket", 64)
    try:
        t0 = time.perf_counter()
        rtts = echo.trips(30, hz=100)
        took = time.perf_counter() - t0
    finally:
        echo.close()
    assert len(rtts) == 30 and all(0 < t < 5 for t in rtts)
    assert took >= 0.3   # 30 trips, each after 10 ms asleep


def test_bench_judges_the_targets_on_its_own_run() -> None:
    """Each target is judged from the rows of the same run; one whose rows are missing
    (a peer not installed) is left out rather than guessed."""
    from datacomms.benchmatrix import targets

    def lat(transport, what, kind, mode, p50, p99=0.0):
        return {"transport": transport, "what": what, "kind": kind, "mode": mode, "p50_us": p50, "p99_us": p99}
    result = {
        "throughput": [{"transport": "shm", "size": "64B", "kind": k, "msg_s": v} for k, v in
                       (("cython", 3e6), ("python", 1e5), ("zmq-ipc", 8e5), ("mpqueue", 1e5))],
        "latency": [lat("shm", "one-way at 1 kHz", "cython", "busy-poll", 3.0, 40.0),
                    lat("shm", "one-way at 1 kHz", "cython", "sleeping", 21.0),
                    lat("tcp", "round trip 1 kHz", "socket", "sleeping", 60.0),
                    lat("tcp", "round trip", "socket", "", 40.0),
                    lat("tcp", "round trip", "dc-cython", "", 44.0),
                    lat("tcp", "round trip", "dc-cython-spin", "", 25.0)]}
    judged = {name: (figure, met) for name, figure, met in targets(result)}
    assert judged["shm 64 B >= 3x the best peer"] == ("3.75x", True)
    assert judged["shm 64 B cython >= 5x python"] == ("30.00x", True)
    assert judged["shm busy-poll one-way p50 <= 5 us"][1] and not judged["shm busy-poll one-way p99 <= 25 us"][1]
    assert judged["shm sleeping p50 <= half a plain TCP echo's round trip (paced at 1 kHz)"] == ("21.0 vs 30.0 us", True)
    assert judged["shm sleeping p50 <= half a plain TCP echo's round trip (back to back)"] == ("21.0 vs 20.0 us", False)
    assert judged["tcp round trip p50 <= a plain TCP echo's (free)"] == ("44.0 vs 40.0 us", False)
    assert judged["tcp round trip p50 with spin_us <= 30 us (free)"] == ("25.0 us", True)
    assert not [n for n in judged if "iceoryx2" in n or "pyzmq" in n or "same core" in n]   # no rows, no verdict


def test_bench_ratios_compare_like_with_like() -> None:
    """A copying datacomms row is compared with the best copying peer, a zero-copy one with
    the best zero-copy peer (a copy against a loan is no comparison)."""
    from datacomms.benchmatrix import _with_ratios
    rows = [{"transport": "shm", "size": "8MiB", "kind": k, "msg_s": v} for k, v in
            (("cython", 1200.0), ("iceoryx2", 800.0), ("zmq-ipc", 300.0), ("cython-zc", 2e5), ("iceoryx2-zc", 1e5))]
    by_kind = {r["kind"]: r for r in _with_ratios(rows)}
    assert (by_kind["cython"]["best_peer"], by_kind["cython"]["vs_best_peer"]) == ("iceoryx2", 1.5)
    assert (by_kind["cython-zc"]["best_peer"], by_kind["cython-zc"]["vs_best_peer"]) == ("iceoryx2-zc", 2.0)
    assert "vs_best_peer" not in by_kind["iceoryx2"]
