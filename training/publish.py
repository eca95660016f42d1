"""A training run in MLflow: one parent run, a child run per model, registration, the gate.

:func:`log_run` logs what :func:`training.pipeline.train` fitted (:class:`Fitted`): the data
fingerprint, the cleaning report and the backtest tables on the parent run; per model a
child run with its parameters, backtest metrics, lift and calibration plots and the
registered model; then the champion gate (:mod:`training.registry`) on the mean backtest
metric over origins decides whether the ``champion`` alias moves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.protocols import CROSS_SELL_SKIPPED
from features.loaders import Loaded
from servable.propensity import ChurnModel, NextPurchaseModel
from training import plots
from training.backtest import backtest_markdown, metric_value
from training.crosssell import (
    TUNING_CUSTOMERS,
    HybridRecommender,
    TunedCrossSell,
    log_pyfunc,
    no_items_reason,
)
from training.registry import (
    GateDecision,
    champion_gate,
    champion_version,
    log_snapshot_model,
    write_json,
)
from training.rolling import (
    GATE_BASELINES,
    GATE_METRICS,
    GATE_MODELS,
    RollingResult,
    log_rolling_metrics,
    rolling_markdown,
)

if TYPE_CHECKING:
    from training.pipeline import TrainConfig

__all__ = ["Fitted", "log_run"]


@dataclass
class Fitted:
    """What a run logs and registers: the backtest and the models refitted for serving."""

    rolling: RollingResult  # the rolling-origin backtest of every task
    churn: ChurnModel
    nextp: NextPurchaseModel
    recommender: HybridRecommender | None
    snapshot: pd.DataFrame  # the features at the end of the log (what the service serves)

    @property
    def example(self) -> pd.DataFrame:
        """Five snapshot rows: the input example of the snapshot models."""
        return self.snapshot.head(5)

    @property
    def table(self) -> pd.DataFrame:
        """Mean backtest metrics over origins (long format)."""
        return self.rolling.table

    @property
    def xs(self) -> TunedCrossSell | None:
        """The newest origin's cross-sell backtest (None: a log without items)."""
        return self.rolling.xs


def log_run(
    cfg: TrainConfig, client: MlflowClient, fp: dict[str, Any], loaded: Loaded, fitted: Fitted
) -> tuple[str, list[GateDecision]]:
    """One parent run (data, backtest) with a child run per model; returns the parent run's
    id and the gate decisions."""
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
        fitted.rolling.by_origin.to_csv(out / "backtest_by_origin.csv", index=False)
        (out / "rolling_origin.md").write_text(rolling_markdown(fitted.rolling))
        for f in (
            "cleaning_report.txt",
            "cleaning_report.json",
            "backtest.csv",
            "backtest.md",
            "backtest_by_origin.csv",
            "rolling_origin.md",
        ):
            mlflow.log_artifact(str(out / f))
        log_rolling_metrics(fitted.rolling)
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
    out: Path, cfg: TrainConfig, client: MlflowClient, fp: dict[str, Any], fitted: Fitted
) -> list[GateDecision]:
    """Child runs of the churn and next-purchase models: params, metrics, plots, registration."""
    children = {"churn": fitted.churn, "next_purchase": fitted.nextp}
    decisions = []
    for name, model in children.items():
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.log_params({f"gbm.{k}": v for k, v in model.params.__dict__.items()})
            mlflow.log_params({f"fit.{k}": v for k, v in model.info.items()})
            mlflow.log_params({f"bgnbd.{k}": round(v, 6) for k, v in model.bgnbd.params_.items()})
            log_rolling_metrics(fitted.rolling, task=name)
            _plots(out / name, name, fitted.rolling, model)
            mlflow.log_artifacts(str(out / name), artifact_path="plots")
            info = log_snapshot_model(
                model, name, fitted.example, registered_model_name=name if cfg.register else None
            )
            if cfg.register:
                decisions.append(_gate(client, name, info, fitted.rolling, cfg, fp))
    return decisions


def _log_cross_sell(
    out: Path,
    cfg: TrainConfig,
    client: MlflowClient,
    fp: dict[str, Any],
    loaded: Loaded,
    fitted: Fitted,
) -> list[GateDecision]:
    """Child run of the cross-sell model: tuned params, metrics, tuning table, registration."""
    xs, recommender = fitted.xs, fitted.recommender
    assert xs is not None and recommender is not None  # the caller skips a log without items
    with mlflow.start_run(run_name="cross_sell", nested=True):
        mlflow.log_params({f"hybrid.{k}": v for k, v in xs.params.items()})
        mlflow.log_param("tuning.validation_users", cfg.validation_users)
        mlflow.log_param("tuning.customers", TUNING_CUSTOMERS)
        log_rolling_metrics(fitted.rolling, task="cross_sell")
        if xs.tuning is not None:
            xs.tuning.to_csv(out / "cross_sell_tuning.csv", index=False)
            mlflow.log_artifact(str(out / "cross_sell_tuning.csv"))
        info = log_pyfunc(
            recommender,
            name="cross_sell",
            item_names=loaded.items,
            registered_model_name="cross_sell" if cfg.register else None,
        )
        if not cfg.register:
            return []
        return [_gate(client, "cross_sell", info, fitted.rolling, cfg, fp)]


def _gate(
    client: MlflowClient,
    name: str,
    info: Any,
    rolling: RollingResult,
    cfg: TrainConfig,
    fp: dict,
) -> GateDecision:
    """The champion gate on the mean over origins, refusing a model that loses to a
    baseline on most origins."""
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "data.sha256", fp["data.sha256"])
    client.set_model_version_tag(name, version, "backtest.cutoff", fp["backtest.cutoff"])
    client.set_model_version_tag(name, version, "backtest.origins", fp["backtest.origins"])
    client.set_model_version_tag(name, version, "data.last_ts", fp["data.last_ts"])
    metric, table = GATE_METRICS[name], rolling.table
    value = metric_value(table, name, GATE_MODELS[name], metric)
    baselines = {m: metric_value(table, name, m, metric) for m in GATE_BASELINES[name]}
    force = cfg.force or (cfg.force_first and champion_version(client, name) is None)
    return champion_gate(
        client,
        name,
        version,
        metric,
        value,
        baselines,
        force=force,
        origin_losses=rolling.losses(name, metric),
    )


def _plots(folder: Path, task: str, rolling: RollingResult, model: Any) -> None:
    """Lift and calibration at the newest origin, calibration at every origin, importances."""
    folder.mkdir(parents=True, exist_ok=True)

    def label(arrays: dict) -> Any:
        return arrays["buy"] if task == "churn" else arrays["b30"]

    newest = rolling.arrays[rolling.newest.label]
    scores = newest["scores"][task]
    plots.lift_chart(label(newest), {k: v[0] for k, v in scores.items()}, folder / "lift.png")
    plots.calibration_curve(
        label(newest), {"model": scores["model"][1]}, folder / "calibration.png"
    )
    plots.calibration_curves(
        {
            o.label: (
                label(rolling.arrays[o.label]),
                rolling.arrays[o.label]["scores"][task]["model"][1],
            )
            for o in rolling.origins
        },
        folder / "calibration_by_origin.png",
    )
    imp = model.importance()
    col = imp.columns[0]
    plots.feature_importance(
        imp.index.tolist(), imp[col].to_numpy(), folder / "feature_importance.png"
    )
    imp.to_csv(folder / "feature_importance.csv")
