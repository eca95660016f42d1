"""Command line of ``python -m training.uplift`` (arguments in, :func:`train_and_register`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.env import HILLSTROM_DATA
from training.flags import add_flag
from training.uplift.design import MODEL_NAME
from training.uplift.learners import UpliftParams
from training.uplift.train import train_and_register

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.uplift",
        description="Hillstrom offer-uplift experiment; logs to MLflow and registers "
        f"{MODEL_NAME!r} behind the champion gate.",
    )
    p.add_argument("--data", default="", help=f"Hillstrom CSV(.gz) (default {HILLSTROM_DATA})")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under mlflow/)"
    )
    p.add_argument("--experiment", default="revival")
    add_flag(p, "--force", "promote even if the gate says no")
    p.add_argument("--learner", choices=["x_learner", "two_model"], default="x_learner")
    p.add_argument("--splits", type=int, default=5, help="repeated 50/50 splits (5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed split (0)")
    p.add_argument("--rounds", type=int, default=UpliftParams.num_rounds, help="boosting rounds")
    p.add_argument(
        "--min-leaf",
        type=int,
        default=UpliftParams.min_data_in_leaf,
        help="LightGBM min_data_in_leaf (lower it for small campaign tables)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.data = args.data or str(HILLSTROM_DATA)  # "" (e.g. from MLproject): the default
    args.tracking_uri = args.tracking_uri or None
    if min(args.splits, args.rounds, args.min_leaf) < 1:
        print("error: --splits, --rounds and --min-leaf must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.data).exists():
        print(f"error: --data: no such file {args.data}", file=sys.stderr)
        return 2
    result = train_and_register(
        data=args.data,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        force=args.force,
        learner=args.learner,
        n_splits=args.splits,
        seed=args.seed,
        params=UpliftParams(num_rounds=args.rounds, min_data_in_leaf=args.min_leaf),
    )
    print(f"run {result.run_id}; total {result.seconds:.1f} s")
    return 0
