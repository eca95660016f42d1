"""``python -m features.bench``: wall time and peak RSS of the feature pipeline on the real log.

Prints a table: loading the log, the snapshot for every customer at the backtest cutoff,
and the stacked training frame of the backtest protocol (all training cutoffs). Peak RSS
is the process's resident set size sampled every 5 ms during the step (it includes what
earlier steps keep alive, i.e. what a real run needs). Targets from issue #2: snapshot
< 5 s, stacked frame < 30 s, peak RSS < 2 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from core.env import configure_environment

__all__ = ["Measurement", "measure", "print_table", "main"]


@dataclass
class Measurement:
    """One benchmark step: wall seconds and peak resident memory (MiB)."""

    name: str
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    note: str = ""


@contextmanager
def measure(name: str, note: str = "") -> Iterator[Measurement]:
    """Time the block and sample this process's RSS every 5 ms to find its peak."""
    proc = psutil.Process()
    m = Measurement(name, note=note)
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - t0
        stop.set()
        th.join()
        m.peak_rss_mib = max(peak[0], proc.memory_info().rss) / 2**20


def print_table(title: str, rows: list[Measurement]) -> None:
    """Print measurements as an aligned text table."""
    print(f"\n{title}")
    print(f"{'step':<44} {'wall s':>8} {'peak RSS MiB':>13}  note")
    for r in rows:
        print(f"{r.name:<44} {r.seconds:>8.2f} {r.peak_rss_mib:>13.0f}  {r.note}")


def run(data: str, repeats: int = 3) -> list[Measurement]:
    """Measure the loader, the snapshot (best of ``repeats``) and the stacked frame."""
    from features.labels import backtest_cutoff, build_training_frame, training_cutoffs
    from features.loaders import load_transactions
    from features.snapshot import build_features

    rows: list[Measurement] = []
    with measure("load + clean log") as m:
        loaded = load_transactions(data)
    m.note = f"{loaded.report.rows_in:,} rows in, {loaded.report.rows_kept:,} kept"
    rows.append(m)
    tx = loaded.transactions
    cutoff = backtest_cutoff(tx)
    best: Measurement | None = None
    for _ in range(repeats):
        with measure(f"snapshot at {cutoff.date()} (best of {repeats})") as m:
            feats = build_features(tx, cutoff)
        best = m if best is None or m.seconds < best.seconds else best
    assert best is not None
    best.note = f"{len(feats):,} customers × {feats.shape[1]} features; target < 5 s"
    rows.append(best)
    cutoffs = training_cutoffs(tx, cutoff)
    with measure(f"stacked training frame ({len(cutoffs)} cutoffs)") as m:
        frame = build_training_frame(tx, cutoffs, observed_until=cutoff)
    m.note = f"{len(frame):,} rows; target < 30 s, RSS < 2048 MiB"
    rows.append(m)
    return rows


def main(argv: list[str] | None = None) -> int:
    from core.env import DEFAULT_DATA

    p = argparse.ArgumentParser(prog="python -m features.bench", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print_table("features: wall time and peak RSS", run(args.data, args.repeats))
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
