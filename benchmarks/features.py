"""``python -m benchmarks.features``: wall time and peak RSS of the feature pipeline on the real log.

Prints a table: loading the log, the snapshot for every customer at the backtest cutoff (in
one piece on text ids, in one piece on integer-coded ids — :func:`features.snapshot.coded_ids`,
as a training run builds its snapshots — and in 16 customer partitions), and the stacked
training frame of the backtest protocol (all training cutoffs). ``--tiles N`` runs it on the
shared log tiled N times (:func:`benchmarks.startup.tile_log`). Peak RSS
as :func:`training.stages.measure` samples it. Targets from issue #2: snapshot
< 5 s, stacked frame < 30 s, peak RSS < 2 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from core.env import configure_environment
from training.stages import Measurement, measure, print_table

__all__ = ["main", "run"]


def run(data: str, repeats: int = 3) -> list[Measurement]:
    """Measure the loader, the snapshot (best of ``repeats``) and the stacked frame."""
    from features.labels import backtest_cutoff, build_training_frame, training_cutoffs
    from features.loaders import load_transactions
    from features.snapshot import build_features, coded_ids

    rows: list[Measurement] = []
    with measure("load + clean log") as m:
        loaded = load_transactions(data)
    m.note = f"{loaded.report.rows_in:,} rows in, {loaded.report.rows_kept:,} kept"
    rows.append(m)
    tx = loaded.transactions
    cutoff = backtest_cutoff(tx)
    with measure("code the ids (once per training run)") as m:
        coded = coded_ids(tx)
    rows.append(m)
    # one piece on text and on coded ids, and per customer partition (issue #19)
    for ids, frame, partitions in (("text", tx, 1), ("coded", coded, 1), ("text", tx, 16)):
        best: Measurement | None = None
        for _ in range(repeats):
            label = (
                f"snapshot at {cutoff.date()}, {ids} ids, {partitions} partition(s) "
                f"(best of {repeats})"
            )
            with measure(label) as m:
                feats = build_features(frame, cutoff, partitions=partitions)
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
    p.add_argument("--tiles", type=int, default=1, help="tile the log N times (1: as it is)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.tiles > 1:
            from benchmarks.startup import tile_log

            data = str(Path(tmp) / f"tiled{args.tiles}.csv.gz")
            tile_log(Path(args.data), Path(data), args.tiles)
        title = f"features: wall time and peak RSS ({args.tiles}× log)"
        print_table(title, run(data, args.repeats))
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
