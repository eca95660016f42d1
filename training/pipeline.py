"""The training run: backtest every model against its baselines, refit, register, gate.

Protocol (issue #3, on top of :mod:`features.labels`): the last ``horizon`` days of the log
are held out. Models are fitted on stacked cutoffs whose label windows end by the backtest
cutoff and evaluated at it, against baselines, on the same customers, for two populations:
``all`` (every customer seen before the cutoff) and ``active_365d`` (ordered in the 365
days before it). The same recipe is then refitted on cutoffs whose labels end at the end of
the log, and *that* model is registered with the backtest metrics of its recipe as tags
(it is what the service will serve). One MLflow parent run per training, a child run per
model; the champion gate (:mod:`training.registry`) decides whether aliases move.
At its end a run that read its own log also logs a scoring run holding the serving snapshot
of the log (:func:`training.score.log_snapshot_run`), which service replicas load at
start-up; a retraining on an outcome-augmented log (:mod:`training.retrain`) logs none: the
service's snapshot is of the data file, the purchases since come from its store.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.env import DEFAULT_DATA, default_tracking_uri
from core.protocols import CROSS_SELL_SKIPPED
from core.store import open_store
from features.cutoff import parse_cutoff
from features.labels import backtest_cutoff, build_training_frame, training_cutoffs
from features.loaders import Loaded
from features.mapping import LogMapping
from features.serving import DEFAULT_TIMEZONE
from features.snapshot import build_features, model_columns
from features.sources import Source, load_sources
from servable.propensity import ChurnModel, NextPurchaseModel
from training import plots
from training.backtest import backtest_markdown, evaluate_propensity, metric_value
from training.crosssell import (
    ALSRecommender,
    CrossSellResult,
    fit_final,
    log_pyfunc,
    run_backtest,
)
from training.registry import (
    GateDecision,
    champion_gate,
    champion_version,
    log_snapshot_model,
    use_store,
    write_json,
)
from training.score import log_snapshot_run
from training.stages import Measurement, StageLog

__all__ = ["TrainConfig", "TrainResult", "champions_or_explain", "missing_champions", "train"]

GATE_METRICS = {"churn": "auc", "next_purchase": "auc", "cross_sell": "recall@10"}


@dataclass
class TrainConfig:
    """Everything a training run needs; the CLI and MLproject fill it."""

    data: Path = DEFAULT_DATA
    horizon: int = 90
    cutoff: pd.Timestamp | None = None  # backtest cutoff (default: last day − horizon)
    tracking_uri: str = field(default_factory=default_tracking_uri)
    experiment: str = "revival"
    force: bool = False
    force_first: bool = False  # promote regardless of the gate where no champion exists yet
    step_days: int = 30
    max_cutoffs: int = 12
    min_history_days: int = 180
    als_grid: str = "default"  # "small" for quick runs (tests)
    register: bool = True
    # zone of the log's wall-clock times for the stored snapshot (the service's
    # default_timezone); None: log no snapshot run
    snapshot_timezone: str | None = DEFAULT_TIMEZONE
    # several sources (features.sources): further logs as (name, path); ``data`` is the
    # primary source's. ``identities``: a contact-store URL whose identity map (stitched
    # profiles) and erasures apply — logged with the run, never implied.
    sources: tuple[tuple[str, Path], ...] = ()
    primary_source: str = "shop"
    identities: str | None = None
    # ``data`` read through a column mapping (features.mapping); None: a known format
    mapping: LogMapping | None = None

    def __post_init__(self) -> None:
        if self.cutoff is not None:  # a date string from MLproject or a caller: parsed once
            self.cutoff = parse_cutoff(self.cutoff)
        if self.snapshot_timezone:  # checked now, not after the training
            try:
                ZoneInfo(self.snapshot_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"snapshot_timezone: unknown IANA time zone {self.snapshot_timezone!r}"
                ) from None


@dataclass
class TrainResult:
    """What a run produced: metric table, gate decisions, stage timings, run id."""

    run_id: str
    metrics: pd.DataFrame
    decisions: list[GateDecision]
    stages: list[Measurement]
    cutoff: pd.Timestamp
    fingerprint: dict[str, Any]
    snapshot_run: str | None = None  # the scoring run holding the serving snapshot


def _log(msg: str) -> None:
    print(msg, flush=True)


def load_log(cfg: TrainConfig) -> Loaded:
    """The training log: ``data`` and the further ``sources`` on unified customers
    (:func:`features.sources.load_sources`), with the identity map and erasures of the
    ``identities`` store when one is given."""
    identity: dict[str, str] = {}
    erased: set[str] = set()
    if cfg.identities:
        store = open_store(cfg.identities)
        try:
            identity, erased = store.profiles.identity_map(), store.profiles.erased_hashes()
        finally:
            store.close()
        _log(
            f"identities from {cfg.identities}: {len(identity):,} links, {len(erased):,} erased ids"
        )
    more = [Source(name, Path(path)) for name, path in cfg.sources]
    primary = Source(cfg.primary_source, Path(cfg.data), cfg.mapping)
    return load_sources(primary, more, identity, erased)


def _fingerprint(
    loaded: Loaded, cutoff: pd.Timestamp, cutoffs: list[pd.Timestamp], horizon: int
) -> dict[str, Any]:
    r = loaded.report
    return {
        "data.sources": ",".join(r.per_source) or "primary",
        "data.linked_customers": r.linked_customers,
        "data.path": r.source,
        "data.sha256": r.sha256,
        "data.rows_in": r.rows_in,
        "data.rows_kept": r.rows_kept,
        "data.customers": r.customers,
        "data.first_ts": r.first_ts,
        "data.last_ts": r.last_ts,
        "backtest.cutoff": str(cutoff.date()),
        "horizon_days": horizon,
        "train.cutoffs": ",".join(str(c.date()) for c in cutoffs),
    }


def missing_champions(tracking_uri: str, names: tuple[str, ...] = tuple(GATE_METRICS)) -> list[str]:
    """Registered model names without a ``champion`` alias in the given store (cross-sell
    is not missing when the churn champion was trained without items)."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    missing = [n for n in names if champion_version(client, n) is None]
    churn = champion_version(client, "churn")
    if "cross_sell" in missing and churn is not None and CROSS_SELL_SKIPPED in churn.tags:
        missing.remove("cross_sell")  # the champions were trained on a log without items
    return missing


def champions_or_explain(tracking_uri: str) -> bool:
    """True if every model has a champion; else say on stderr how to train one (for CLIs)."""
    missing = missing_champions(tracking_uri)
    if missing:
        print(
            f"no champion for {missing} in {tracking_uri}: run `make run` or "
            "`python -m training --if-missing` first",
            file=sys.stderr,
        )
    return not missing


def train(cfg: TrainConfig, loaded: Loaded | None = None) -> TrainResult:
    """Run the whole training (see module docstring); prints progress per stage.

    ``loaded``: an already loaded (e.g. outcome-augmented, :mod:`training.retrain`) log to
    train on instead of reading ``cfg.data``.
    """
    stages = StageLog()
    experiment_id = use_store(cfg.tracking_uri, cfg.experiment)
    client = MlflowClient()

    own_log = loaded is None
    if loaded is None:
        loaded = stages.run("load + clean log", lambda: load_log(cfg))
    tx = loaded.transactions
    _log(loaded.report.to_text())
    cutoff = cfg.cutoff if cfg.cutoff is not None else backtest_cutoff(tx, cfg.horizon)
    cfg, protocol, why = choose_protocol(tx, cutoff, cfg)
    _log(f"protocol: {protocol} ({why})")
    bt_cutoffs = training_cutoffs(tx, cutoff, **_cutoff_kw(cfg))
    fp = _fingerprint(loaded, cutoff, bt_cutoffs, cfg.horizon)
    fp |= {
        "protocol": protocol,
        "protocol.min_history_days": cfg.min_history_days,
        "protocol.step_days": cfg.step_days,
    }
    if cfg.mapping is not None:  # how the export was read is part of what was trained on
        fp["data.mapping"] = json.dumps(
            {"file": cfg.mapping.source, "columns": dict(cfg.mapping.columns)}, sort_keys=True
        )
    table, arrays, xs = _backtest(stages, cfg, tx, cutoff, bt_cutoffs)
    _log(
        f"\nbacktest (cutoff {cutoff.date()}, horizon {cfg.horizon} d)\n"
        f"{backtest_markdown(table)}\n"
    )
    fitted = _refit(stages, cfg, tx, table, arrays, xs)
    run_id, decisions = stages.run(
        "mlflow: log, register, champion gate",
        lambda: _log_to_mlflow(cfg, client, fp, loaded, fitted),
    )
    for d in decisions:
        _log(
            f"gate {d.model} v{d.version}: {'PROMOTED' if d.promoted else 'kept champion'}"
            f" — {d.reason}"
        )
    snapshot_run = None
    if own_log and cfg.snapshot_timezone:
        zone = cfg.snapshot_timezone
        snapshot_run = stages.run(
            "serving snapshot: build + log (scoring run)",
            lambda: log_snapshot_run(
                loaded, experiment_id, zone, data_path=cfg.data, tags={"training.run": run_id}
            ),
        )
        _log(f"serving snapshot logged: run {snapshot_run}")
    return TrainResult(run_id, table, decisions, stages.done, cutoff, fp, snapshot_run)


# Fewer training cutoffs than this under the standard protocol: the short-history protocol
SHORT_HISTORY_BELOW = 4
SHORT_HISTORY = {"min_history_days": 90, "step_days": 14}


def choose_protocol(
    tx: pd.DataFrame, cutoff: pd.Timestamp, cfg: TrainConfig
) -> tuple[TrainConfig, str, str]:
    """The training protocol for this log: its settings, its name and why (printed and
    logged, never silent). The standard protocol stacks training cutoffs every
    ``step_days`` with ``min_history_days`` of history before the first; a log too short
    for ``SHORT_HISTORY_BELOW`` of them (12–18 months with a 90-day horizon) gets the
    short-history protocol: 90 days of history and a cutoff every 14 days, so that enough
    labelled cutoffs fit before the backtest's. The horizon is the caller's, unchanged."""

    def fitting(c: TrainConfig) -> int:
        try:
            return len(training_cutoffs(tx, cutoff, **_cutoff_kw(c)))
        except ValueError:
            return 0

    span = (tx["ts"].max() - tx["ts"].min()).days
    n = fitting(cfg)
    short = replace(
        cfg,
        min_history_days=min(cfg.min_history_days, SHORT_HISTORY["min_history_days"]),
        step_days=min(cfg.step_days, SHORT_HISTORY["step_days"]),
    )
    n_short = fitting(short)
    if n >= SHORT_HISTORY_BELOW or n_short <= n:
        return (
            cfg,
            "standard",
            f"{span} d of log: {n} training cutoffs every {cfg.step_days} d after "
            f"{cfg.min_history_days} d of history, horizon {cfg.horizon} d",
        )
    return (
        short,
        "short history",
        f"{span} d of log: the standard protocol fits {n} training cutoffs, fewer than "
        f"{SHORT_HISTORY_BELOW}; {n_short} cutoffs every {short.step_days} d after "
        f"{short.min_history_days} d of history, horizon {cfg.horizon} d",
    )


def _cutoff_kw(cfg: TrainConfig) -> dict[str, int]:
    return {
        "horizon": cfg.horizon,
        "step_days": cfg.step_days,
        "max_cutoffs": cfg.max_cutoffs,
        "min_history_days": cfg.min_history_days,
    }


def _backtest(
    stages: StageLog,
    cfg: TrainConfig,
    tx: pd.DataFrame,
    cutoff: pd.Timestamp,
    bt_cutoffs: list[pd.Timestamp],
) -> tuple[pd.DataFrame, dict[str, Any], CrossSellResult | None]:
    """Fit on the backtest cutoffs, score every model and baseline at ``cutoff``
    (cross-sell: None for a log without items)."""
    frame = stages.run(
        f"features: backtest frame ({len(bt_cutoffs)} cutoffs)",
        lambda: build_training_frame(tx, bt_cutoffs, cfg.horizon, observed_until=cutoff),
    )
    churn_bt = stages.run(
        "churn: fit (backtest)",
        lambda: ChurnModel(horizon=cfg.horizon).fit(frame, model_columns(frame)),
    )
    next_bt = stages.run(
        "next purchase: fit (backtest)",
        lambda: NextPurchaseModel(horizon=cfg.horizon).fit(
            frame, model_columns(frame), bgnbd=churn_bt.bgnbd
        ),
    )
    table, arrays = stages.run(
        "churn + next purchase: backtest vs baselines",
        lambda: evaluate_propensity(churn_bt, next_bt, tx, cutoff, cfg.horizon),
    )
    if no_items_reason(tx) is not None:
        _log(f"cross-sell: skipped ({no_items_reason(tx)})")
        return table, arrays, None
    xs = stages.run(
        "cross-sell: tune + backtest vs baselines",
        lambda: run_backtest(tx, cutoff, cfg.horizon, grid=cfg.als_grid),
    )
    return pd.concat([table, xs.table], ignore_index=True), arrays, xs


def no_items_reason(tx: pd.DataFrame) -> str | None:
    """Why cross-sell cannot train on ``tx`` (a log without item ids), or None."""
    if "item_id" not in tx.columns or not tx["item_id"].notna().any():
        return "the log has no item ids"
    return None


@dataclass
class _Fitted:
    """What a run logs and registers: the backtest and the models refitted for serving."""

    table: pd.DataFrame  # long backtest metrics of every task
    arrays: dict[str, Any]  # labels and scores of the propensity backtest (plots)
    xs: CrossSellResult | None  # the cross-sell backtest (None: a log without items)
    churn: ChurnModel
    nextp: NextPurchaseModel
    recommender: ALSRecommender | None
    example: pd.DataFrame  # five snapshot rows: the input example of the snapshot models


def _refit(
    stages: StageLog,
    cfg: TrainConfig,
    tx: pd.DataFrame,
    table: pd.DataFrame,
    arrays: dict[str, Any],
    xs: CrossSellResult | None,
) -> _Fitted:
    """Refit the backtested recipes on the newest cutoffs (labels end at the log's end)."""
    end = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    final_cutoffs = training_cutoffs(tx, end, **_cutoff_kw(cfg))
    final_frame = stages.run(
        f"features: serving frame ({len(final_cutoffs)} cutoffs)",
        lambda: build_training_frame(tx, final_cutoffs, cfg.horizon),
    )
    churn = stages.run(
        "churn: refit on the newest cutoffs",
        lambda: ChurnModel(horizon=cfg.horizon).fit(final_frame, model_columns(final_frame)),
    )
    nextp = stages.run(
        "next purchase: refit on the newest cutoffs",
        lambda: NextPurchaseModel(horizon=cfg.horizon).fit(
            final_frame, model_columns(final_frame), bgnbd=churn.bgnbd
        ),
    )
    recommender = (
        None
        if xs is None
        else stages.run(
            "cross-sell: refit ALS on the whole log", lambda: fit_final(tx, end, xs.params)
        )
    )
    example = build_features(tx, end).head(5)
    return _Fitted(table, arrays, xs, churn, nextp, recommender, example)


def _log_to_mlflow(
    cfg: TrainConfig, client: MlflowClient, fp: dict[str, Any], loaded: Loaded, fitted: _Fitted
) -> tuple[str, list[GateDecision]]:
    """One parent run (data, backtest) with a child run per model; returns the gate decisions."""
    table = fitted.table
    with (
        mlflow.start_run(run_name=f"train-{fp['data.last_ts'][:10]}") as parent,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(tmp)
        mlflow.log_params({k: v for k, v in fp.items() if k != "train.cutoffs"})
        mlflow.log_param("train.cutoffs", fp["train.cutoffs"][:500])
        mlflow.set_tags({"data.sha256": fp["data.sha256"], "stage": "training"})
        (out / "cleaning_report.txt").write_text(loaded.report.to_text())
        write_json(out / "cleaning_report.json", loaded.report.to_dict())
        table.to_csv(out / "backtest.csv", index=False)
        (out / "backtest.md").write_text(backtest_markdown(table))
        for f in ("cleaning_report.txt", "cleaning_report.json", "backtest.csv", "backtest.md"):
            mlflow.log_artifact(str(out / f))
        for _, r in table.iterrows():
            mlflow.log_metric(_key(r), r["value"])
        decisions = _log_snapshot_models(out, cfg, client, fp, fitted)
        if fitted.xs is None:
            why = no_items_reason(loaded.transactions) or "not trained"
            mlflow.set_tag(CROSS_SELL_SKIPPED, why)
            for d in decisions:
                client.set_model_version_tag(d.model, d.version, CROSS_SELL_SKIPPED, why)
        else:
            decisions += _log_cross_sell(out, cfg, client, fp, loaded, fitted)
        write_json(out / "gate.json", [d.to_dict() for d in decisions])
        mlflow.log_artifact(str(out / "gate.json"))
        for d in decisions:
            mlflow.set_tag(
                f"gate.{d.model}", f"{'promoted' if d.promoted else 'kept'}: {d.reason}"[:5000]
            )
        return parent.info.run_id, decisions


def _log_snapshot_models(
    out: Path, cfg: TrainConfig, client: MlflowClient, fp: dict[str, Any], fitted: _Fitted
) -> list[GateDecision]:
    """Child runs of the churn and next-purchase models: params, metrics, plots, registration."""
    table = fitted.table
    children = {
        "churn": (
            fitted.churn,
            "churn",
            {
                "bgnbd": metric_value(table, "churn", "bgnbd", "auc"),
                "recency": metric_value(table, "churn", "recency", "auc"),
            },
        ),
        "next_purchase": (
            fitted.nextp,
            "next_purchase",
            {
                "bgnbd": metric_value(table, "next_purchase", "bgnbd", "auc"),
                "recency": metric_value(table, "next_purchase", "recency", "auc"),
            },
        ),
    }
    decisions = []
    for name, (model, task, baselines) in children.items():
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.log_params({f"gbm.{k}": v for k, v in model.params.__dict__.items()})
            mlflow.log_params({f"fit.{k}": v for k, v in model.info.items()})
            mlflow.log_params({f"bgnbd.{k}": round(v, 6) for k, v in model.bgnbd.params_.items()})
            sub = table[table.task == task]
            for _, r in sub.iterrows():
                mlflow.log_metric(_key(r), r["value"])
            _plots(out / name, task, fitted.arrays, model)
            mlflow.log_artifacts(str(out / name), artifact_path="plots")
            info = log_snapshot_model(
                model, name, fitted.example, registered_model_name=name if cfg.register else None
            )
            if cfg.register:
                value = metric_value(table, task, "model", GATE_METRICS[name])
                decisions.append(_gate(client, name, info, value, baselines, cfg, fp))
    return decisions


def _log_cross_sell(
    out: Path,
    cfg: TrainConfig,
    client: MlflowClient,
    fp: dict[str, Any],
    loaded: Loaded,
    fitted: _Fitted,
) -> list[GateDecision]:
    """Child run of the cross-sell model: tuned params, metrics, tuning table, registration."""
    xs, recommender = fitted.xs, fitted.recommender
    assert xs is not None and recommender is not None  # the caller skips a log without items
    with mlflow.start_run(run_name="cross_sell", nested=True):
        mlflow.log_params({f"als.{k}": v for k, v in xs.params.items()})
        for _, r in xs.table.iterrows():
            mlflow.log_metric(_key(r), r["value"])
        if xs.tuning is not None:
            xs.tuning.to_csv(out / "als_tuning.csv", index=False)
            mlflow.log_artifact(str(out / "als_tuning.csv"))
        info = log_pyfunc(
            recommender,
            name="cross_sell",
            item_names=loaded.items,
            registered_model_name="cross_sell" if cfg.register else None,
        )
        if not cfg.register:
            return []
        value = metric_value(xs.table, "cross_sell", "als", "recall@10")
        baselines = {
            m: metric_value(xs.table, "cross_sell", m, "recall@10")
            for m in xs.table["model"].unique()
            if m != "als"
        }
        return [_gate(client, "cross_sell", info, value, baselines, cfg, fp)]


def _key(r: pd.Series) -> str:
    metric = str(r["metric"]).replace("@", "_at_")
    return f"{r['task']}.{r['model']}.{r['population']}.{metric}"


def _gate(
    client: MlflowClient,
    name: str,
    info: Any,
    value: float,
    baselines: dict[str, float],
    cfg: TrainConfig,
    fp: dict,
) -> GateDecision:
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "data.sha256", fp["data.sha256"])
    client.set_model_version_tag(name, version, "backtest.cutoff", fp["backtest.cutoff"])
    client.set_model_version_tag(name, version, "data.last_ts", fp["data.last_ts"])
    force = cfg.force or (cfg.force_first and champion_version(client, name) is None)
    return champion_gate(client, name, version, GATE_METRICS[name], value, baselines, force=force)


def _plots(folder: Path, task: str, arrays: dict, model: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    y = arrays["buy"] if task == "churn" else arrays["b30"]
    scores = arrays["scores"][task]
    plots.lift_chart(y, {k: v[0] for k, v in scores.items()}, folder / "lift.png")
    plots.calibration_curve(y, {"model": scores["model"][1]}, folder / "calibration.png")
    imp = model.importance()
    col = imp.columns[0]
    plots.feature_importance(
        imp.index.tolist(), imp[col].to_numpy(), folder / "feature_importance.png"
    )
    imp.to_csv(folder / "feature_importance.csv")


def summary_json(result: TrainResult) -> str:
    """Machine-readable run summary (printed with ``--json``)."""
    return json.dumps(
        {
            "run_id": result.run_id,
            "snapshot_run": result.snapshot_run,
            "cutoff": str(result.cutoff.date()),
            "decisions": [d.to_dict() for d in result.decisions],
            "stages": [m.__dict__ for m in result.stages],
        },
        indent=2,
    )
