"""``python -m training.score``: score every customer at a cutoff with the champions.

Output (Parquet or CSV by the file extension): customer_id, stage, tier, value_score,
p_churn, p_buy_30d, expected_next_order (date), top_items (the cross-sell champion's top
10 unseen items, space-separated). Models are loaded through MLflow's pyfunc interface
from ``models:/<name>@champion``, exactly as a downstream batch job would.

``--log-snapshot`` also logs a *scoring run* holding the serving snapshot at the cutoff
(:mod:`features.stored`, artifact ``snapshot/``, tag ``revival.snapshot=1``; the scores as
``scores.parquet``): service replicas load the newest such run instead of featurising the
log at start-up. ``--snapshot-only`` logs that run without scoring (no champions needed).
``--timezone`` is the zone of the log's wall-clock times, the service's ``default_timezone``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment, default_tracking_uri
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.lifecycle import assign_lifecycle
from features.loaders import Loaded, load_transactions
from features.mapping import add_mapping_option
from features.serving import DEFAULT_TIMEZONE, build_serving
from features.snapshot import build_features
from features.stored import ARTIFACT_PATH, SCHEMA_VERSION, SNAPSHOT_TAG, write_stored
from training.registry import CHAMPION, use_store

DEFAULT_OUT = PROJECT_ROOT / "var" / "scores.parquet"

__all__ = ["log_snapshot_run", "main", "score"]


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


def log_snapshot_run(
    loaded: Loaded,
    experiment_id: str,
    timezone: str = DEFAULT_TIMEZONE,
    cutoff: pd.Timestamp | None = None,
    data_path: str | Path | None = None,
    scores: pd.DataFrame | None = None,
    tags: dict[str, str] | None = None,
    features: pd.DataFrame | None = None,
) -> str:
    """Log a scoring run in ``experiment_id`` of the current tracking store holding the
    serving snapshot of ``loaded`` at ``cutoff`` (default: the day after its last
    transaction), and ``scores`` when given; returns the run id. ``features``: the feature
    snapshot at that cut-off when the caller has built it already (a training run has).

    The run is created as its own run (also under ``mlflow run``, whose run the training
    uses) and tagged ``revival.snapshot=1`` with its cutoff and customer count, which is how
    the service finds the newest one.
    """
    data = build_serving(loaded, timezone, cutoff, data_path, features)
    run_tags = {
        SNAPSHOT_TAG: "1",
        "stage": "scoring",
        "snapshot.cutoff": str(data.cutoff.date()),
        "snapshot.customers": str(len(data.features)),
        **(tags or {}),
    }
    run = MlflowClient().create_run(
        experiment_id, run_name=f"snapshot-{data.cutoff.date()}", tags=run_tags
    )
    with (
        mlflow.start_run(run_id=run.info.run_id),
        tempfile.TemporaryDirectory(prefix="revival-snapshot-") as tmp,
    ):
        folder = Path(tmp) / ARTIFACT_PATH
        meta = write_stored(data, folder)
        mlflow.log_params(_snapshot_params(meta))
        mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
        if scores is not None:
            scores.to_parquet(Path(tmp) / "scores.parquet", index=False)
            mlflow.log_artifact(str(Path(tmp) / "scores.parquet"))
    return run.info.run_id


def _snapshot_params(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "snapshot.schema_version": SCHEMA_VERSION,
        "snapshot.cutoff": meta["cutoff"],
        "snapshot.customers": meta["customers"],
        "snapshot.timezone": meta["timezone"],
        "data.name": meta["data"].get("name", meta["report"]["source"]),
        "data.size": meta["data"].get("size", ""),
    }


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m training.score``."""
    p = argparse.ArgumentParser(prog="python -m training.score", description=__doc__)
    p.add_argument("--data", default="", help=f"default {DEFAULT_DATA}")
    add_mapping_option(p)
    p.add_argument("--cutoff", default=None, help="default: the day after the last transaction")
    p.add_argument(
        "--out",
        default="",
        help=f"output file (.parquet or .csv; default {DEFAULT_OUT})",
    )
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--log-snapshot",
        action="store_true",
        help="also log a scoring run holding the serving snapshot (and the scores)",
    )
    p.add_argument(
        "--snapshot-only",
        action="store_true",
        help="only log the snapshot run: no scoring, no champions needed",
    )
    p.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help=f"zone of the log's wall-clock times, the service's default_timezone "
        f"({DEFAULT_TIMEZONE})",
    )
    p.add_argument("--experiment", default="revival", help="experiment of the snapshot run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.data = args.data or str(DEFAULT_DATA)  # "" (e.g. from MLproject) means the default
    out = Path(args.out or DEFAULT_OUT)
    if out.suffix not in {".parquet", ".csv"}:
        print(f"error: --out {out}: use a .parquet or .csv file name", file=sys.stderr)
        return 2
    try:
        cutoff = parse_cutoff(args.cutoff) if args.cutoff else None
        pd.Timestamp("2000-01-01").tz_localize(args.timezone)
    except (ValueError, KeyError) as exc:
        print(f"error: --cutoff / --timezone: {exc}", file=sys.stderr)
        return 2
    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        loaded = load_transactions(args.data, args.mapping)
    except (DataContractError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tx = loaded.transactions
    if cutoff is None:
        cutoff = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    scores = None
    if not args.snapshot_only:
        try:
            scores = score(tx, cutoff, k=args.k)
        except mlflow.exceptions.MlflowException as exc:
            print(
                f"error: cannot load the champions ({exc}); run `python -m training` first",
                file=sys.stderr,
            )
            return 2
        _write(scores, out)
        print(
            f"scored {len(scores):,} customers at {cutoff.date()} in "
            f"{time.perf_counter() - t0:.1f} s -> {out}"
        )
        print(scores.head(10).to_string(index=False))
    if args.log_snapshot or args.snapshot_only:
        exp_id = use_store(args.tracking_uri, args.experiment)
        run_id = log_snapshot_run(loaded, exp_id, args.timezone, cutoff, args.data, scores)
        print(f"snapshot at {cutoff.date()} logged: run {run_id} in {args.tracking_uri}")
    return 0


def _write(scores: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        scores.to_parquet(out, index=False)
    else:
        scores.to_csv(out, index=False)


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
