"""``python -m benchmarks.crosssell``: cross-sell tuning on a tiled log, on every customer vs
stable samples of them (issue #19: tuning that does not grow with the customer base).

The shared log is tiled ``--factor`` times (:func:`benchmarks.startup.tile_log`) and the
hybrid's default grid is tuned at the newest origin's validation split three times, in one
run: fitted on and scoring every customer; fitted on every customer, scoring at most
``--users`` (:func:`training.crosssell.evaluation.sample_customers`); fitted on the rows of at
most ``--fit-customers`` customers and scoring at most ``--users`` of them
(:func:`training.crosssell.evaluation.sample_rows`; the training default). Printed per run:
customers scored, seconds (fits and evaluations), the winning grid point, and that winner's
recall@10 over *every* validation customer (read from the full run's table), so the table
shows what a sample costs in model quality as well as what it saves in time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.startup import tile_log
from core.env import DEFAULT_DATA, configure_environment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from features.labels import backtest_cutoff
    from features.loaders import load_online_retail
    from training.crosssell import (
        DEFAULT_HYBRID_GRID,
        TUNING_CUSTOMERS,
        VALIDATION_USERS,
        HybridRecommender,
        tune_hybrid,
    )

    p = argparse.ArgumentParser(prog="python -m benchmarks.crosssell", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--factor", type=int, default=8, help="tiling factor (8)")
    p.add_argument("--users", type=int, default=VALIDATION_USERS)
    p.add_argument("--fit-customers", type=int, default=TUNING_CUSTOMERS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "tiled.csv.gz"
        print(f"[{args.factor}×] tiling and loading the log", file=sys.stderr, flush=True)
        tile_log(Path(args.data), data, args.factor)
        loaded = load_online_retail(data)
    tx, horizon = loaded.transactions, 90
    cutoff = backtest_cutoff(tx)
    before = tx[tx["ts"] < cutoff]
    val = cutoff - pd.Timedelta(days=horizon)
    grid = list(DEFAULT_HYBRID_GRID)
    scoring = HybridRecommender.scoring_params
    runs = {}
    configs = (
        ("every customer", None, None),
        (f"fit on all, score {args.users:,}", args.users, None),
        (f"fit on {args.fit_customers:,}, score {args.users:,}", args.users, args.fit_customers),
    )
    for label, users, fit_customers in configs:
        print(f"[{args.factor}×] tune_hybrid, {label}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        best, table = tune_hybrid(
            before,
            val,
            horizon,
            base={"active_days": 30, "popularity_days": 14},
            item_text=loaded.item_text,
            validation_users=users,
            tuning_customers=fit_customers,
        )
        runs[label] = (best, table, time.perf_counter() - start)
    full = runs["every customer"][1].set_index(grid)
    print(f"\ncross-sell tuning, {args.factor}× log ({tx['customer_id'].nunique():,} customers)")
    print(
        "| tuning | customers scored | wall | fits | evaluations | winner | its recall@10 (all) |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for label, (best, table, wall) in runs.items():
        point = tuple(best[g] for g in grid)
        fits = table.drop_duplicates([g for g in grid if g not in scoring])
        winner = ", ".join(f"{g}={best[g]}" for g in grid if len(DEFAULT_HYBRID_GRID[g]) > 1)
        print(
            f"| {label} | {int(table['n_customers'].iloc[0]):,} | {wall:.0f} s "
            f"| {fits['fit_s'].sum():.0f} s | {table['eval_s'].sum():.0f} s | {winner} "
            f"| {full.loc[point, 'recall@10']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
