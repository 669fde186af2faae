"""The `datacomms` command: demo, send, recv, bench, clean.

Errors are one line on stderr and a non-zero exit; --debug shows the traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from . import backend as _backend
from . import errors, report, scenario, url as _url
from .pubsub import Publisher, Subscriber

DEMO_TRANSPORTS = ("shm", "tcp", "udp", "json", "hdf5")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datacomms", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the seed scenario over every local transport and backend")
    d.add_argument("--quick", action="store_true", help="120 messages per run: a quick tour")
    d.add_argument("--rate", type=float, default=300.0, help="publisher rate, Hz (300)")
    d.add_argument("--poll", type=float, default=1000.0, help="subscriber polling rate, Hz (1000)")
    d.add_argument("--count", type=int, default=None, help="messages per run (10000; --quick: 120)")
    d.add_argument("--payload", default="joints", help="joints | bytes:SIZE | array:SHAPE:DTYPE")
    d.add_argument("--transports", default=",".join(DEMO_TRANSPORTS),
                   help=f"comma-separated schemes to run ({','.join(DEMO_TRANSPORTS)})")
    d.add_argument("--backends", default=",".join(_backend.NAMES),
                   help=f"comma-separated backends to run ({','.join(_backend.NAMES)})")
    d.add_argument("--out", default=None, help="folder for the plots (default: a new temporary folder)")
    d.add_argument("--json", default=None, help="write the summary rows as JSON")

    s = sub.add_parser("send", help="publish a stream (machine A)")
    s.add_argument("url", help="where to publish, e.g. tcp://0.0.0.0:8000, udp://HOST:PORT, shm://NAME")
    s.add_argument("--rate", type=float, default=300.0, help="messages per second (300)")
    s.add_argument("--count", type=int, default=10000, help="messages to send (10000)")
    s.add_argument("--payload", default="joints", help="joints | bytes:SIZE | array:SHAPE:DTYPE")
    s.add_argument("--backend", default=None, help="cython or python (default: the live backend)")
    s.add_argument("--wait", type=int, default=0, help="wait for this many subscribers first")

    r = sub.add_parser("recv", help="follow a stream (machine B): live rate, summary, plot")
    r.add_argument("url", help="what to follow, e.g. tcp://machine-a:8000, udp://0.0.0.0:PORT, shm://NAME")
    r.add_argument("--count", type=int, default=None, help="stop after N messages")
    r.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    r.add_argument("--idle", type=float, default=5.0, help="stop after S seconds with no message (5)")
    r.add_argument("--poll", type=float, default=1000.0, help="how often to look for messages, Hz (1000); each look takes all that came")
    r.add_argument("--backend", default=None, help="cython or python (default: the live backend)")
    r.add_argument("--plot", default=None, help="write a rate-over-time PNG here")
    r.add_argument("--json", default=None, help="write the summary as JSON here")

    b = sub.add_parser("bench", help="throughput/latency matrix beside installed peers")
    b.add_argument("--quick", action="store_true", help="two sizes, fewer messages (about 20 s here)")
    b.add_argument("--transports", default="shm,tcp", help="comma-separated: shm, tcp (both)")
    b.add_argument("--json", default=None, help="write the measurements as JSON")
    b.add_argument("--plot", default=None, metavar="DIR", help="write bar charts here")

    c = sub.add_parser("clean", help="remove stale shared-memory segments")
    c.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    return p


def _split(arg: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise errors.DataCommsError(f"unknown {what} {', '.join(bad) or arg!r}; choose from {', '.join(allowed)}")
    return items


def cmd_demo(a: argparse.Namespace) -> int:
    count = a.count or (120 if a.quick else 10000)
    transports = _split(a.transports, DEMO_TRANSPORTS, "transport")
    backends = _split(a.backends, _backend.NAMES, "backend")
    out = a.out or scenario.scratch_dir()
    os.makedirs(out, exist_ok=True)
    print(f"datacomms demo: {count} {a.payload} messages at {a.rate:g} Hz, read at {a.poll:g} Hz; "
          f"live backend {_backend.name}" + (f" ({_backend.fallback_reason})" if _backend.fallback_reason else ""))
    rows: list[scenario.Summary] = []
    for t in transports:
        if t not in _url.TRANSPORTS:
            print(f"  {t}://: not available in this build, skipped")
            continue
        for b in backends:
            tag = f"{t}-{b}"
            prog = report.Progress(count, tag)
            try:
                url = scenario.demo_url(t, out, tag)
                rec = scenario.run_pair(url, b, count, a.rate, a.poll, a.payload, progress_cb=prog.update)
            except (errors.DataCommsError, ImportError, OSError) as exc:
                prog.close()
                print(f"  {tag}: failed: {exc}")
                continue
            prog.close()
            s = scenario.summarize(t, b, count, rec)
            s.plot = report.plot_rate(rec, s, os.path.join(out, f"{tag}.png"))
            rows.append(s)
            print(f"  {tag}: {s.received}/{count} received, longest gap {s.longest_gap_ms:.1f} ms")
    print()
    print(report.table(rows))
    if any(r.plot for r in rows):
        print(f"\nplots: {out}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)
    return 0 if rows and len(rows) == len(transports) * len(backends) else 1


def cmd_send(a: argparse.Namespace) -> int:
    make = scenario.payload_factory(a.payload)
    with Publisher(a.url, backend=a.backend) as pub:
        if a.wait:
            print(f"waiting for {a.wait} subscriber(s) on {a.url} ...", file=sys.stderr)
            pub.wait_for_subscribers(a.wait)
        prog = report.Progress(a.count, f"send {a.url}")
        took = scenario.publish(pub, a.count, a.rate, make, on_sent=prog.update)
        prog.close()
    print(f"sent {a.count} messages in {took:.2f} s ({a.count / took if took else 0:.0f} Hz)")
    return 0


def cmd_recv(a: argparse.Namespace) -> int:
    with Subscriber(a.url, backend=a.backend) as sub:
        last = [time.monotonic(), 0]

        def live(rec: scenario.Recording) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0 and sys.stderr.isatty():
                rate = (len(rec.seq) - last[1]) / (now - last[0])
                print(f"\r{len(rec.seq)} received, {rate:.0f} Hz, lost {sub.stats.lost}   ", end="",
                      file=sys.stderr, flush=True)
                last[0], last[1] = now, len(rec.seq)

        rec = scenario.record(sub, a.count, a.poll, a.idle, on_message=live, duration=a.duration)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if not rec.seq:
        raise errors.Timeout(f"nothing received on {a.url} (waited {a.idle:g} s with no message; is a publisher "
                             "running and reachable?)")
    scheme = _url.parse(a.url).scheme
    s = scenario.summarize(scheme, a.backend or _backend.name, 0, rec)
    s.lost = int(rec.stats.get("lost", 0))
    total = s.received + s.lost
    s.lost_pct = 100.0 * s.lost / total if total else 0.0
    if a.plot:
        s.plot = report.plot_rate(rec, s, a.plot)
    print(report.table([s]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**s.as_dict(), "stats": rec.stats}, f, indent=1)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from . import benchmatrix

    transports = tuple(_split(a.transports, ("shm", "tcp"), "transport"))
    print(f"datacomms bench: live backend {_backend.name}"
          + (f" ({_backend.fallback_reason})" if _backend.fallback_reason else "") + "; measuring ...",
          flush=True)
    result = benchmatrix.run(quick=a.quick, transports=transports)
    print(benchmatrix.format_result(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    if a.plot:
        if report.have_matplotlib():
            os.makedirs(a.plot, exist_ok=True)
            for path in benchmatrix.plot(result, a.plot):
                print(f"plot: {path}")
        else:
            report.tell_no_plots()
    return 0


def cmd_clean(a: argparse.Namespace) -> int:
    try:
        from . import shm
    except ImportError:
        raise errors.DataCommsError("this build has no shm:// transport") from None
    stale = shm.stale()
    if not stale:
        print("no stale shared-memory segments")
        return 0
    if a.dry_run:
        for name in stale:
            print(f"would remove {name}")
        return 0
    # what clean() removed, not what stale() listed: a name a publisher took
    # meanwhile, or one still being made, stays
    removed = shm.clean()
    for name in removed:
        print(f"removed {name}")
    for name in sorted(set(stale) - set(removed)):
        print(f"left {name} (in use again, or a publisher is still making it)")
    return 0


COMMANDS = {"demo": cmd_demo, "send": cmd_send, "recv": cmd_recv, "bench": cmd_bench, "clean": cmd_clean}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (errors.DataCommsError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"datacomms {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
