"""``python -m features``: load a transaction log, print the cleaning report and the
lifecycle stage × value tier table at a cutoff (default: the end of the log)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from core.env import DEFAULT_DATA, configure_environment
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.lifecycle import STAGES, TIERS, assign_lifecycle
from features.loaders import load_transactions
from features.mapping import add_mapping_option
from features.snapshot import build_features


def stage_tier_table(features: pd.DataFrame) -> pd.DataFrame:
    """Customers per lifecycle stage (rows) and value tier (columns), with totals."""
    lc = assign_lifecycle(features)
    table = pd.crosstab(lc["stage"], lc["tier"], margins=True, margins_name="total")
    order = [s for s in STAGES if s in table.index] + ["total"]
    cols = [t for t in TIERS if t in table.columns] + ["total"]
    return table.reindex(index=order, columns=cols, fill_value=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m features", description=__doc__)
    p.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="transaction log: CSV (.gz ok) or a Parquet file or folder",
    )
    add_mapping_option(p)
    p.add_argument(
        "--cutoff", default=None, help="snapshot date (default: the day after the last transaction)"
    )
    p.add_argument("--export", default=None, help="also write the clean rows here (Parquet)")
    p.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="dask: --data is a contract Parquet dataset (see --export), built on a cluster",
    )
    p.add_argument(
        "--scheduler", default="local", help="Dask scheduler address, or 'local' (LocalCluster)"
    )
    args = p.parse_args(argv)
    try:
        given = parse_cutoff(args.cutoff) if args.cutoff else None
    except ValueError as exc:
        print(f"error: --cutoff: {exc}", file=sys.stderr)
        return 2
    if args.engine == "dask":
        if given is None:
            print("error: --cutoff: required with --engine dask", file=sys.stderr)
            return 2
        return _on_dask(args.data, given, args.scheduler)
    try:
        loaded = load_transactions(args.data, args.mapping)
    except (DataContractError, FileNotFoundError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(loaded.report.to_text())
    tx = loaded.transactions
    if args.export:
        from features.distributed import export_contract

        print(f"\nexported to {export_contract(tx, Path(args.export))}")
    cutoff = given if given is not None else tx["ts"].max().normalize() + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    feats = build_features(tx, cutoff)
    _print_snapshot(feats, cutoff, time.perf_counter() - t0)
    return 0


def _on_dask(data: str, cutoff: pd.Timestamp, scheduler: str) -> int:
    """The snapshot of a contract Parquet dataset built on a Dask cluster."""
    from features.distributed import build_features_dask, connect

    try:
        with connect(scheduler) as client:
            print(f"dask: {len(client.nthreads())} workers at {client.scheduler.address}")
            t0 = time.perf_counter()
            feats = build_features_dask(data, cutoff, client)
            _print_snapshot(feats, cutoff, time.perf_counter() - t0)
    except (DataContractError, ValueError) as exc:  # ValueError: no Dask, no scheduler
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_snapshot(feats: pd.DataFrame, cutoff: pd.Timestamp, took: float) -> None:
    print(f"\nsnapshot at {cutoff.date()}: {len(feats):,} customers ({took:.2f} s)")
    print("\nlifecycle stage × value tier")
    print(stage_tier_table(feats).to_string())


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
