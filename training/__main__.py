"""``python -m training``: backtest, refit, register and gate every model on a transaction log."""

from __future__ import annotations

import argparse
import sys

from core.env import DEFAULT_DATA, configure_environment, default_tracking_uri
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.mapping import add_mapping_option
from features.serving import DEFAULT_TIMEZONE
from servable.bgnbd import BGNBDFitError
from training.crosssell import VALIDATION_USERS
from training.flags import add_source_options, source_pairs
from training.pipeline import ENGINES, TrainConfig, missing_champions, summary_json, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument(
        "--data",
        default="",
        help=f"transaction log: CSV (.gz ok) or a Parquet file or folder (default {DEFAULT_DATA})",
    )
    p.add_argument("--horizon", type=int, default=90, help="churn horizon in days (90)")
    p.add_argument(
        "--cutoff",
        default=None,
        help="backtest cutoff (default: the day after the log's last day minus the horizon)",
    )
    p.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow tracking URI (default: SQLite under mlflow/)",
    )
    p.add_argument("--experiment", default="revival")
    p.add_argument(
        "--force",
        nargs="?",
        const="true",
        default="false",
        choices=["true", "false"],
        help="move the champion alias even if the gate says no (first deployment)",
    )
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="train only if a model has no champion yet, and then promote it "
        "(the main job's first run)",
    )
    p.add_argument("--max-cutoffs", type=int, default=12)
    p.add_argument(
        "--origins",
        type=int,
        default=4,
        help="rolling-origin backtest: origins one horizon apart, newest first (4)",
    )
    p.add_argument("--als-grid", choices=["default", "small"], default="default")
    p.add_argument(
        "--validation-users",
        type=int,
        default=VALIDATION_USERS,
        help="cross-sell tuning scores each grid point on a stable sample of at most this "
        f"many validation customers ({VALIDATION_USERS}; 0: all)",
    )
    p.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help="zone of the log's wall-clock times for the stored serving snapshot: the "
        f"service's default_timezone ({DEFAULT_TIMEZONE})",
    )
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="log no scoring run with the serving snapshot at the end",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the feature snapshots and training frames are built and the LightGBM "
        "boosters fitted: local (this process, the default) or dask (a Dask cluster, boosters "
        "through lightgbm.dask; needs the dask extra)",
    )
    p.add_argument(
        "--scheduler",
        default="local",
        help="with --engine dask: the scheduler's address (tcp://host:8786), or 'local' for a "
        "LocalCluster started for the run (local)",
    )
    add_mapping_option(p)
    add_source_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.data = args.data or str(DEFAULT_DATA)  # "" (e.g. from MLproject) means the default
    args.force = args.force == "true"
    if args.horizon < 7:
        print("error: --horizon must be at least 7 days", file=sys.stderr)
        return 2
    if args.origins < 1:
        print("error: --origins must be at least 1", file=sys.stderr)
        return 2
    try:
        cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
    except ValueError as exc:
        print(f"error: --cutoff: {exc}", file=sys.stderr)
        return 2
    if args.if_missing:
        missing = missing_champions(args.tracking_uri)
        if not missing:
            print("every model has a champion; not training (drop --if-missing to retrain)")
            return 0
        print(f"no champion for {missing}: training")
    try:
        cfg = TrainConfig(
            force_first=args.if_missing,
            data=args.data,
            horizon=args.horizon,
            cutoff=cutoff,
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            force=args.force,
            max_cutoffs=args.max_cutoffs,
            origins=args.origins,
            als_grid=args.als_grid,
            validation_users=args.validation_users or None,
            snapshot_timezone=None if args.no_snapshot else args.timezone,
            sources=source_pairs(args.source),
            primary_source=args.primary_source,
            identities=args.identities or None,
            mapping=args.mapping,
            engine=args.engine,
            scheduler=args.scheduler,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(cfg)
    except (DataContractError, FileNotFoundError, BGNBDFitError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(summary_json(result))
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
