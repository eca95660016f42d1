"""``python -m benchmarks.features``: wall time and peak RSS of the feature pipeline on the real log.

Prints a table: loading the log, the snapshot for every customer at the backtest cutoff (in
one piece and in 16 customer partitions), and the stacked training frame of the backtest
protocol (all training cutoffs). Peak RSS
as :func:`training.stages.measure` samples it. Targets from issue #2: snapshot
< 5 s, stacked frame < 30 s, peak RSS < 2 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse

from core.env import configure_environment
from training.stages import Measurement, measure, print_table

__all__ = ["main", "run"]


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
    for partitions in (1, 16):  # one piece, and per customer partition (issue #19)
        best: Measurement | None = None
        for _ in range(repeats):
            label = f"snapshot at {cutoff.date()}, {partitions} partition(s) (best of {repeats})"
            with measure(label) as m:
                feats = build_features(tx, cutoff, partitions=partitions)
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

    p = argparse.ArgumentParser(prog="python -m benchmarks.features", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print_table("features: wall time and peak RSS", run(args.data, args.repeats))
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
