"""``python -m training.score``: score every customer at a cutoff with the champions.

Output (Parquet or CSV by the file extension): customer_id, stage, tier, value_score,
p_churn, p_buy_30d, expected_next_order (date), top_items (the cross-sell champion's top
10 unseen items, space-separated). Models are loaded through MLflow's pyfunc interface
from ``models:/<name>@champion``, exactly as a downstream batch job would.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

import mlflow
from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment, default_tracking_uri
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.lifecycle import assign_lifecycle
from features.loaders import load_transactions
from features.snapshot import build_features
from training.registry import CHAMPION

DEFAULT_OUT = PROJECT_ROOT / "var" / "scores.parquet"

__all__ = ["score", "main"]


def _inputs(model: mlflow.pyfunc.PyFuncModel, feats: pd.DataFrame) -> pd.DataFrame:
    names = model.metadata.get_input_schema().input_names()
    return feats.reindex(columns=names).reset_index(drop=True)


def score(
    transactions: pd.DataFrame, cutoff: pd.Timestamp, k: int = 10, alias: str = CHAMPION
) -> pd.DataFrame:
    """One row per customer with an order before ``cutoff`` (see module docstring)."""
    feats = build_features(transactions, cutoff)
    churn = mlflow.pyfunc.load_model(f"models:/churn@{alias}")
    nextp = mlflow.pyfunc.load_model(f"models:/next_purchase@{alias}")
    xsell = mlflow.pyfunc.load_model(f"models:/cross_sell@{alias}")
    life = assign_lifecycle(feats)
    out = pd.DataFrame({"customer_id": feats.index.to_numpy()})
    out["stage"] = life["stage"].astype(str).to_numpy()
    out["tier"] = life["tier"].astype(str).to_numpy()
    out["value_score"] = life["value_score"].round(2).to_numpy()
    out["p_churn"] = churn.predict(_inputs(churn, feats))["p_churn"].to_numpy()
    nxt = nextp.predict(_inputs(nextp, feats))
    out["p_buy_30d"] = nxt["p_buy_30d"].to_numpy()
    out["expected_next_order"] = (
        (cutoff + pd.to_timedelta(nxt["expected_days"].to_numpy(), unit="D")).normalize().date
    )
    recs = xsell.predict(pd.DataFrame({"customer_id": out["customer_id"]}), params={"k": k})
    top = recs.sort_values(["customer_id", "rank"]).groupby("customer_id")["item_id"].agg(" ".join)
    out["top_items"] = out["customer_id"].map(top).fillna("")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.score", description=__doc__)
    p.add_argument("--data", default="", help=f"default {DEFAULT_DATA}")
    p.add_argument("--cutoff", default=None, help="default: the day after the last transaction")
    p.add_argument(
        "--out",
        default="",
        help=f"output file (.parquet or .csv; default {DEFAULT_OUT})",
    )
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    args.data = args.data or str(DEFAULT_DATA)  # "" (e.g. from MLproject) means the default
    out = Path(args.out or DEFAULT_OUT)
    if out.suffix not in {".parquet", ".csv"}:
        print(f"error: --out {out}: use a .parquet or .csv file name", file=sys.stderr)
        return 2
    try:
        cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
    except ValueError as exc:
        print(f"error: --cutoff: {exc}", file=sys.stderr)
        return 2
    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        tx = load_transactions(args.data).transactions
    except (DataContractError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cutoff is None:
        cutoff = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    try:
        scores = score(tx, cutoff, k=args.k)
    except mlflow.exceptions.MlflowException as exc:
        print(
            f"error: cannot load the champions ({exc}); run `python -m training` first",
            file=sys.stderr,
        )
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        scores.to_parquet(out, index=False)
    else:
        scores.to_csv(out, index=False)
    print(
        f"scored {len(scores):,} customers at {cutoff.date()} in "
        f"{time.perf_counter() - t0:.1f} s -> {out}"
    )
    print(scores.head(10).to_string(index=False))
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
