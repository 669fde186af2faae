"""Summary tables and rate-over-time plots for the command line.

Plots need the `plot` extra (matplotlib); without it every command still
prints its table and says once how to get plots."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from .scenario import Recording, Summary

COLUMNS = [("transport", "transport", "{}"), ("backend", "backend", "{}"), ("received", "received", "{}"),
           ("lost %", "lost_pct", "{:.2f}"), ("failed reads", "failed_reads", "{}"), ("min Hz", "min_hz", "{:.0f}"),
           ("longest gap ms", "longest_gap_ms", "{:.1f}"), ("p50 us", "p50_us", "{:.0f}"),
           ("p99 us", "p99_us", "{:.0f}")]

_told = False


def table(rows: Sequence[Summary]) -> str:
    cells = [[h for h, _, _ in COLUMNS]]
    for r in rows:
        d = r.as_dict()
        cells.append([fmt.format(d[key]) for _, key, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def tell_no_plots() -> None:
    global _told
    if not _told:
        _told = True
        print("(plots need matplotlib: pip install 'datacomms[plot]')", file=sys.stderr)


def plot_rate(rec: Recording, summary: Summary, path: str) -> str | None:
    """Read rate over time as a scatter, lost messages marked; returns the path or None without matplotlib."""
    if not have_matplotlib():
        tell_no_plots()
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(rec.recv_ns, dtype=np.int64)
    seq = np.asarray(rec.seq, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    if t.size > 1:
        secs = (t - t[0]) / 1e9
        rate = 1e9 / np.maximum(np.diff(t), 1)
        ax.scatter(secs[1:], rate, s=2, alpha=0.5, label="instantaneous read rate")
        gaps = np.nonzero((np.diff(seq) > 1) & (seq[1:] >= 0))[0]
        if gaps.size:
            ax.scatter(secs[1:][gaps], rate[gaps], s=30, marker="x", color="red",
                       label=f"after lost messages ({gaps.size} gaps)")
        ax.set_yscale("log")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("time since first message (s)")
    ax.set_ylabel("rate (Hz)")
    ax.set_title(f"{summary.transport}/{summary.backend}: min {summary.min_hz:.0f} Hz, longest gap "
                 f"{summary.longest_gap_ms:.1f} ms, lost {summary.lost_pct:.2f}%", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class Progress:
    """A progress line: rich when installed, else plain text on a terminal, silent otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self._rich: Any = None
        self._last = -1
        try:
            from rich.progress import Progress as RichProgress

            if sys.stderr.isatty():
                self._rich = RichProgress(transient=True)
                self._task = self._rich.add_task(label, total=total)
                self._rich.start()
        except ImportError:
            pass

    def update(self, n: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=n)
        elif sys.stderr.isatty() and (n * 20 // max(self.total, 1)) != self._last:
            self._last = n * 20 // max(self.total, 1)
            print(f"\r{self.label}: {n}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif sys.stderr.isatty():
            print("\r" + " " * (len(self.label) + 30) + "\r", end="", file=sys.stderr, flush=True)
