"""``python -m training.retrain``: the training run with the decision service's outcomes.

One command closes the agent loop (issue #5, item 6):

1. read the contact store's decisions and purchase events, and the transaction log;
2. attribute purchases to decisions (:func:`core.attribution.attribute`, last touch within
   the attribution window) and summarise treated vs hold-out conversions;
3. append the store's purchase events to the training log as orders (order ids
   ``event:<id>``, ``source = events``) so churn and next purchase see them;
4. run the usual training (:func:`training.pipeline.train`: backtests against baselines,
   refits, registration, champion gates; ``--force`` honoured);
5. in the same MLflow parent run, log the attribution summary (``attribution.*`` metrics)
   and the campaign table, and — in a child run ``offer_uplift`` — fit the brand's offer
   uplift (:mod:`training.offer_learning`) when the randomised data suffice, register it as
   ``offer_uplift`` and gate it.

A running service switches to the new champions with ``POST /reload``; ``POST /retrain``
on the service starts this command as a background job. ``--attribution-only`` stops after
step 2 (a quick preview; nothing is trained or registered).

It reads the contact store and the attribution rule from ``core`` (the service's reports
count outcomes with the same code), never from ``service``: the service's job passes its
settings as arguments, and run by hand the defaults are the ``REVIVAL_*`` variables the
service reads (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from core.attribution import (
    DEFAULT_FUTURE_TOLERANCE_SECONDS,
    DEFAULT_MAX_EVENT_ORDER_RATIO,
    DEFAULT_WINDOW,
    MAX_PURCHASE_VALUE,
    attribute,
    load_purchases,
)
from core.env import (
    DEFAULT_DATA,
    PROJECT_ROOT,
    configure_environment,
    project_path,
    resolve_sqlite_url,
    tracking_uri,
)
from core.store import FRAME_MAX, StoreError, open_store
from features.contracts import DataContractError
from features.loaders import Loaded
from features.mapping import add_mapping_option
from training.event_guard import EventPurchasesRefused, check_event_purchases
from training.flags import add_flag, add_source_options, source_pairs
from training.offer_learning import (
    BrandUplift,
    CampaignTable,
    OfferLearningConfig,
    campaign_table,
    decision_snapshots,
    fit_brand_uplift,
    register_brand_uplift,
    snapshot_features,
)
from training.outcomes import attribution_summary, with_event_orders
from training.pipeline import TrainConfig, TrainResult, load_log, train
from training.registry import GateDecision, write_json

__all__ = [
    "Outcomes",
    "RetrainConfig",
    "RetrainResult",
    "attribution_summary",
    "main",
    "read_outcomes",
    "retrain",
    "with_event_orders",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REFUSED = 3  # exit code: the purchase events would poison training (training.event_guard)


@dataclass
class RetrainConfig:
    """A retraining run: the training configuration plus where the outcomes come from."""

    train: TrainConfig
    store_url: str
    timezone: str = "Europe/London"  # the log's wall-clock zone (Settings.default_timezone)
    window: timedelta = DEFAULT_WINDOW
    since: datetime = EPOCH
    until: datetime | None = None  # default: now (windows still open then are left out)
    learning: OfferLearningConfig = field(default_factory=OfferLearningConfig)
    attribution_only: bool = False
    # what the store's purchase events must satisfy (the service's ``events:`` settings)
    max_purchase_value: float = MAX_PURCHASE_VALUE
    future_tolerance: timedelta = timedelta(seconds=DEFAULT_FUTURE_TOLERANCE_SECONDS)
    max_event_order_ratio: float = DEFAULT_MAX_EVENT_ORDER_RATIO


@dataclass
class RetrainResult:
    """What a retraining run did."""

    summary: dict[str, Any]
    table: CampaignTable
    uplift: BrandUplift | None = None
    training: TrainResult | None = None
    offer_decision: GateDecision | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``--json``; the service's job status returns it)."""
        decisions = list(self.training.decisions) if self.training else []
        if self.offer_decision is not None:
            decisions.append(self.offer_decision)
        return {
            "run_id": self.training.run_id if self.training else None,
            "attribution": self.summary,
            "campaign_table": {
                "rows": len(self.table.frame),
                "dropped": self.table.dropped,
                "features": len(self.table.feature_columns),
            },
            "offer_uplift": None
            if self.uplift is None
            else {
                "arms": json.loads(self.uplift.arms.to_json(orient="records")),
                "skipped": self.uplift.skipped,
                "gate_value": None
                if not np.isfinite(self.uplift.gate_value)
                else self.uplift.gate_value,
            },
            "gates": [d.to_dict() for d in decisions],
            "registered": {d.model: d.version for d in decisions},
            "promoted": {d.model: d.promoted for d in decisions},
            "seconds": round(self.seconds, 1),
        }


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Outcomes:
    """What a retraining run reads: the log, the store's decisions and purchases (checked by
    :func:`training.event_guard.check_event_purchases` unless attribution only), and the
    attribution of those purchases."""

    loaded: Loaded
    decisions: pd.DataFrame
    purchases: pd.DataFrame
    attributed: pd.DataFrame
    summary: dict[str, Any]
    until: datetime


def read_outcomes(cfg: RetrainConfig) -> Outcomes:
    """Read and attribute the outcomes; raise :class:`EventPurchasesRefused` (before any
    training) when the purchase events would poison it (:mod:`training.event_guard`)."""
    until = cfg.until or datetime.now(UTC)
    loaded = load_log(cfg.train)
    store = open_store(cfg.store_url)
    try:
        decisions = store.decisions_between(cfg.since, until)
        purchases = load_purchases(
            store,
            cfg.since,
            until,
            loaded.transactions,
            log_timezone=cfg.timezone,
            max_value=cfg.max_purchase_value,
        )
        later = store.events_between(until, FRAME_MAX, event="purchase")
    finally:
        store.close()
    if not cfg.attribution_only:
        events = pd.concat(
            [
                purchases.loc[purchases["source"] == "events", ["customer_id", "ts", "order_id"]],
                later[["customer_id", "ts"]].assign(order_id=later["dedup_key"]),
            ],
            ignore_index=True,
        )
        check_event_purchases(
            events,
            loaded.transactions,
            until=until,
            tolerance=cfg.future_tolerance,
            max_ratio=cfg.max_event_order_ratio,
            timezone=cfg.timezone,
        )
    attributed = attribute(decisions, purchases, cfg.window)
    summary = attribution_summary(attributed, purchases)
    return Outcomes(loaded, decisions, purchases, attributed, summary, until)


def retrain(cfg: RetrainConfig) -> RetrainResult:
    """Attribute, train with the outcomes, fit the brand offer uplift (module docstring)."""
    t0 = time.perf_counter()
    o = read_outcomes(cfg)
    loaded, decisions, purchases, attributed, summary, until = (
        o.loaded,
        o.decisions,
        o.purchases,
        o.attributed,
        o.summary,
        o.until,
    )
    snaps = decision_snapshots(decisions)
    feats = snapshot_features(loaded.transactions, snaps.dropna().unique(), cfg.timezone)
    table = campaign_table(attributed, snaps, feats, window=cfg.window, observed_until=until)
    _print(
        f"attribution ({cfg.window.days} d window, decisions {cfg.since:%Y-%m-%d}.."
        f"{until:%Y-%m-%d}): " + json.dumps(summary)
    )
    _print(f"campaign table: {len(table.frame):,} rows; dropped {table.dropped}")
    result = RetrainResult(summary, table)
    if cfg.attribution_only:
        result.seconds = time.perf_counter() - t0
        return result
    augmented = with_event_orders(loaded, purchases, cfg.timezone)
    result.training = train(cfg.train, loaded=augmented)
    result.uplift = fit_brand_uplift(table, cfg.learning)
    for arm, reason in result.uplift.skipped.items():
        _print(f"offer uplift: arm {arm} skipped — {reason}")
    result.offer_decision = _log_outcomes(cfg, result, attributed, until)
    if result.offer_decision is not None:
        d = result.offer_decision
        _print(
            f"gate {d.model} v{d.version}: {'PROMOTED' if d.promoted else 'not promoted'}"
            f" — {d.reason}"
        )
    result.seconds = time.perf_counter() - t0
    return result


def _log_outcomes(
    cfg: RetrainConfig, result: RetrainResult, attributed: pd.DataFrame, until: datetime
) -> GateDecision | None:
    """Attribution metrics, campaign table and the offer-uplift child run, logged into the
    training's parent run."""
    assert result.training is not None and result.uplift is not None
    client = MlflowClient()
    uplift, table = result.uplift, result.table
    with (
        mlflow.start_run(run_id=result.training.run_id),
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(tmp)
        mlflow.log_params(
            {
                "outcomes.store": cfg.store_url[:250],
                "outcomes.window_days": cfg.window.total_seconds() / 86400.0,
                "outcomes.since": cfg.since.isoformat(),
                "outcomes.until": until.isoformat(),
            }
        )
        mlflow.log_metrics(
            {
                f"attribution.{k}": float(v)
                for k, v in result.summary.items()
                if isinstance(v, int | float)
            }
        )
        attributed.to_csv(out / "attribution.csv", index=False)
        table.frame.to_csv(out / "campaign_table.csv", index=False)
        table.counts().to_csv(out / "campaign_counts.csv", index=False)
        write_json(out / "attribution_summary.json", result.summary | {"dropped": table.dropped})
        for f in ("attribution.csv", "campaign_table.csv", "campaign_counts.csv"):
            mlflow.log_artifact(str(out / f), artifact_path="outcomes")
        mlflow.log_artifact(str(out / "attribution_summary.json"), artifact_path="outcomes")
        decision = None
        with mlflow.start_run(run_name="offer_uplift", nested=True):
            lp = cfg.learning
            mlflow.log_params(
                {
                    "learner": "x_learner",
                    "outcome": "converted",
                    "min_treated": lp.min_treated,
                    "min_control": lp.min_control,
                    "matched_control": lp.matched_control,
                    "n_splits": lp.n_splits,
                    "features": ",".join(table.feature_columns)[:500],
                    **{f"gbm.{k}": v for k, v in lp.params.__dict__.items()},
                }
            )
            uplift.arms.to_csv(out / "offer_arms.csv", index=False)
            mlflow.log_artifact(str(out / "offer_arms.csv"))
            for r in uplift.arms.itertuples():
                for m in ("treated", "control", "observed_uplift", "qini_mean", "auuc_mean"):
                    value = float(getattr(r, m))
                    if np.isfinite(value):
                        mlflow.log_metric(f"offer.{r.arm}.{m}", value)
            if uplift.offer is None:
                mlflow.set_tag("offer_uplift", "not fitted: no arm with enough randomised rows")
                _print("offer uplift: no arm with enough randomised rows; nothing registered")
                return None
            campaigns = sorted(set(table.frame["campaign_id"]))
            trained_on = (
                f"brand decisions: campaigns {','.join(campaigns)}; "
                f"{len(table.frame)} rows {table.frame['decided_at'].min():%Y-%m-%d}.."
                f"{table.frame['decided_at'].max():%Y-%m-%d}; data {cfg.train.data}"
            )[:500]
            decision = register_brand_uplift(
                uplift, table, client, trained_on=trained_on, force=cfg.train.force
            )
            write_json(out / "offer_gate.json", decision.to_dict())
            mlflow.log_artifact(str(out / "offer_gate.json"))
        state = "promoted" if decision.promoted else "kept"
        mlflow.set_tag(f"gate.{decision.model}", f"{state}: {decision.reason}"[:5000])
    return decision


# --------------------------------------------------------------------------- CLI


def _when(text: str | None, option: str) -> datetime | None:
    if not text:
        return None
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ValueError(f"{option}: cannot parse {text!r} as a date/time") from None
    return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()


# Defaults when run by hand: the variables the decision service reads, else its defaults.
# (The service's own policy file is not read here: the service passes its values.)
_ENV_DEFAULTS = {
    "data": ("REVIVAL_DATA_PATH", str(DEFAULT_DATA)),
    "store_url": ("REVIVAL_STORE_URL", f"sqlite:///{PROJECT_ROOT / 'var' / 'revival.db'}"),
    "window_days": ("REVIVAL_ATTRIBUTION_WINDOW_DAYS", f"{DEFAULT_WINDOW.days}"),
    "timezone": ("REVIVAL_DEFAULT_TIMEZONE", RetrainConfig.timezone),
    "max_purchase_value": ("REVIVAL_EVENTS__MAX_PURCHASE_VALUE", f"{MAX_PURCHASE_VALUE:g}"),
    "future_tolerance_seconds": (
        "REVIVAL_EVENTS__FUTURE_TOLERANCE_SECONDS",
        f"{DEFAULT_FUTURE_TOLERANCE_SECONDS:g}",
    ),
    "max_event_order_ratio": (
        "REVIVAL_EVENTS__MAX_EVENT_ORDER_RATIO",
        f"{DEFAULT_MAX_EVENT_ORDER_RATIO:g}",
    ),
}


def _env_default(name: str) -> str:
    variable, fallback = _ENV_DEFAULTS[name]
    return os.environ.get(variable) or fallback


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.retrain",
        description="Retrain with the decision service's outcomes (attribution, purchase "
        "events as orders, brand offer uplift) in one MLflow run. Where the service keeps its "
        "data, store and MLflow store is passed by the service's /retrain job; run by hand, "
        "the defaults are the REVIVAL_* variables the service reads (its policy file is not "
        "read).",
    )
    p.add_argument(
        "--data",
        default="",
        help="transaction log (default: env REVIVAL_DATA_PATH, else the "
        "shared online_retail_II.csv.gz)",
    )
    p.add_argument(
        "--store-url",
        default="",
        help="contact store URL (default: env REVIVAL_STORE_URL, "
        "else sqlite:///var/revival.db under the project)",
    )
    p.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow tracking URI (default: env "
        "REVIVAL_MLFLOW_TRACKING_URI, else MLFLOW_TRACKING_URI, else mlflow/mlflow.db)",
    )
    p.add_argument("--experiment", default="revival")
    add_flag(p, "--force", "promote even if a gate says no")
    p.add_argument("--horizon", type=int, default=90)
    p.add_argument("--max-cutoffs", type=int, default=12)
    p.add_argument("--als-grid", choices=["default", "small"], default="default")
    p.add_argument(
        "--window-days",
        type=float,
        default=None,
        help="attribution window in days (default: env REVIVAL_ATTRIBUTION_WINDOW_DAYS, else 14)",
    )
    p.add_argument(
        "--timezone",
        default="",
        help="wall-clock zone of the transaction log (default: env "
        "REVIVAL_DEFAULT_TIMEZONE, else Europe/London)",
    )
    p.add_argument("--since", default=None, help="first decision time (UTC if no zone)")
    p.add_argument("--until", default=None, help="end of the outcome period (default: now)")
    p.add_argument("--min-treated", type=int, default=OfferLearningConfig.min_treated)
    p.add_argument("--min-control", type=int, default=OfferLearningConfig.min_control)
    p.add_argument("--min-leaf", type=int, default=50, help="LightGBM min_data_in_leaf (50)")
    p.add_argument("--splits", type=int, default=OfferLearningConfig.n_splits)
    p.add_argument(
        "--all-holdout-control",
        action="store_true",
        help="compare each arm with every hold-out decision of its campaigns, not only the "
        "hold-out decisions whose policy offer was that arm",
    )
    p.add_argument(
        "--max-purchase-value",
        type=float,
        default=None,
        help="purchase events valued outside [0, this] are left out (default: env "
        f"REVIVAL_EVENTS__MAX_PURCHASE_VALUE, else {MAX_PURCHASE_VALUE:g})",
    )
    p.add_argument(
        "--future-tolerance-seconds",
        type=float,
        default=None,
        help="refuse when a purchase event is later than --until (now) plus this (default: "
        f"env REVIVAL_EVENTS__FUTURE_TOLERANCE_SECONDS, else {DEFAULT_FUTURE_TOLERANCE_SECONDS:g})",
    )
    p.add_argument(
        "--max-event-order-ratio",
        type=float,
        default=None,
        help="refuse when a week's purchase events exceed this x its reference orders (that "
        "week's log orders; after the log's end its median weekly orders) (default: env "
        f"REVIVAL_EVENTS__MAX_EVENT_ORDER_RATIO, else {DEFAULT_MAX_EVENT_ORDER_RATIO:g})",
    )
    add_mapping_option(p)
    add_source_options(p)
    add_flag(p, "--attribution-only", "attribute, print, stop")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("--summary-out", default="", help="also write the JSON summary here")
    return p


def config_from_args(args: argparse.Namespace) -> RetrainConfig:
    """A :class:`RetrainConfig` from CLI arguments; unset ones from the ``REVIVAL_*``
    variables (see :func:`parser`). Raises ValueError naming a bad option."""
    for name in ("horizon", "max_cutoffs", "min_treated", "min_control", "min_leaf", "splits"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    window = args.window_days
    if window is None:
        try:
            window = float(_env_default("window_days"))
        except ValueError:
            raise ValueError(
                f"REVIVAL_ATTRIBUTION_WINDOW_DAYS is not a number: {_env_default('window_days')!r}"
            ) from None
    if not 0 < window <= 365:
        raise ValueError(f"--window-days must be in (0, 365], got {window}")
    # REVIVAL_DATA_PATH is relative to the project, as the service resolves it
    data = Path(args.data) if args.data else project_path(_env_default("data"))
    if not data.exists():
        raise ValueError(f"--data: no such file {data}")
    # a relative sqlite:/// URL is relative to the project, as the service resolves it
    store_url = resolve_sqlite_url(args.store_url or _env_default("store_url"))
    db = store_url.split("///", 1)[1].split("?")[0] if store_url.startswith("sqlite") else ""
    if db and db != ":memory:" and not Path(db).exists():  # do not create an empty store
        raise ValueError(f"--store-url: no such SQLite file {db}")
    timezone = args.timezone or _env_default("timezone")
    try:
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"--timezone: unknown time zone {timezone!r}") from None
    params = OfferLearningConfig().params
    params.min_data_in_leaf = args.min_leaf
    max_value = _number(args, "max_purchase_value", 0.0, 1e12)
    tolerance = _number(args, "future_tolerance_seconds", 0.0, 86_400.0)
    ratio = _number(args, "max_event_order_ratio", 0.0, 1000.0)
    return RetrainConfig(
        train=TrainConfig(
            data=data,
            horizon=args.horizon,
            tracking_uri=args.tracking_uri or tracking_uri(),
            experiment=args.experiment,
            force=args.force,
            max_cutoffs=args.max_cutoffs,
            als_grid=args.als_grid,
            sources=source_pairs(args.source),
            primary_source=args.primary_source,
            # the service's own store: its stitched profiles and erasures (logged with the run)
            identities=args.identities or store_url,
            mapping=args.mapping,
        ),
        store_url=store_url,
        timezone=timezone,
        window=timedelta(days=window),
        since=_when(args.since, "--since") or EPOCH,
        until=_when(args.until, "--until"),
        learning=OfferLearningConfig(
            min_treated=args.min_treated,
            min_control=args.min_control,
            matched_control=not args.all_holdout_control,
            n_splits=args.splits,
            params=params,
        ),
        attribution_only=args.attribution_only,
        max_purchase_value=max_value,
        future_tolerance=timedelta(seconds=tolerance),
        max_event_order_ratio=ratio,
    )


def _number(args: argparse.Namespace, name: str, low: float, high: float) -> float:
    """Option ``name`` (else its ``REVIVAL_*`` default) as a number in ``(low, high]``
    (``[low, high]`` for a tolerance); ValueError naming the option and the range."""
    value = getattr(args, name)
    option = "--" + name.replace("_", "-")
    if value is None:
        text = _env_default(name)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{_ENV_DEFAULTS[name][0]} is not a number: {text!r}") from None
    closed = name == "future_tolerance_seconds"
    if not (low <= value <= high if closed else low < value <= high):
        bracket = "[" if closed else "("
        raise ValueError(f"{option} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        result = retrain(cfg)
    except EventPurchasesRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return REFUSED
    except (DataContractError, FileNotFoundError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    payload = json.dumps(result.to_dict(), indent=2, default=str)
    if args.summary_out:
        Path(args.summary_out).write_text(payload)
    if args.json:
        print(payload)
    print(f"retrain done in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
