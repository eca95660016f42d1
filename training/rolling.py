"""The rolling-origin backtest: every model and baseline refitted and scored at several
origins (:func:`training.protocol.plan_origins`), the numbers per origin and their mean.

At each origin the churn and next-purchase recipes are fitted on that origin's training
cutoffs (labels observed only before it) and scored with :func:`training.backtest.
evaluate_propensity`; cross-sell is tuned and scored with :func:`training.crosssell.
run_backtest`. Model and baselines are always scored on the same customers. The mean over
origins is what the champion gate compares, and :meth:`RollingResult.losses` says on how
many origins the model lost to each baseline (the gate refuses a model that loses on most).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import mlflow
import numpy as np
import pandas as pd

from features.labels import LocalFrames
from features.snapshot import model_columns
from servable.propensity import LOCAL, BoosterTrainer, ChurnModel, NextPurchaseModel
from servable.training_rows import TrainingRows
from training.backtest import evaluate_propensity, metric_value
from training.crosssell import VALIDATION_USERS, TunedCrossSell, run_backtest
from training.protocol import Origin

__all__ = [
    "FeatureFrames",
    "GATE_BASELINES",
    "GATE_METRICS",
    "GATE_MODELS",
    "RollingResult",
    "fit_propensity",
    "log_rolling_metrics",
    "rolling_backtest",
    "rolling_markdown",
]

#: the metric and the model each task's gate compares, and the baselines it must beat (other
#: rows, such as cross-sell's ALS alone — the hybrid with its content term off — are
#: ablations, reported but not gated on)
GATE_METRICS = {"churn": "auc", "next_purchase": "auc", "cross_sell": "recall@10"}
GATE_MODELS = {"churn": "model", "next_purchase": "model", "cross_sell": "hybrid"}
GATE_BASELINES = {
    "churn": ("bgnbd", "recency"),
    "next_purchase": ("bgnbd", "recency"),
    "cross_sell": ("knn", "popularity"),
}
_KEYS = ["task", "model", "population", "metric"]

T = TypeVar("T")
Runner = Callable[[str, Callable[[], T]], T]


class FeatureFrames(Protocol):
    """The snapshots and training frames of a training run, from one engine:
    :class:`features.labels.LocalFrames` (this process) or
    :class:`features.distributed.ClusterFrames` (a Dask cluster's workers)."""

    #: the snapshots read in this process (evaluation, serving), by cutoff
    snapshots: dict[pd.Timestamp, pd.DataFrame]

    def training_frame(
        self,
        cutoffs: Sequence[pd.Timestamp],
        horizon: int,
        observed_until: pd.Timestamp | None = None,
    ) -> pd.DataFrame | TrainingRows:
        """As :func:`features.labels.build_training_frame`, from the run's snapshots."""
        ...

    def keep_only(self, cutoff: pd.Timestamp) -> None:
        """Free every snapshot but ``cutoff``'s: no training frame is built after this."""
        ...


@dataclass
class RollingResult:
    """Per-origin metrics (long, with an ``origin`` column), the arrays behind the plots per
    origin, and the newest origin's tuned cross-sell parameters (the served recipe)."""

    origins: list[Origin]
    by_origin: pd.DataFrame
    arrays: dict[str, dict[str, Any]]
    xs: TunedCrossSell | None

    @property
    def newest(self) -> Origin:
        return self.origins[0]

    @property
    def table(self) -> pd.DataFrame:
        """The mean over origins, in the pipeline's long format (no ``origin`` column)."""
        return self.by_origin.groupby(_KEYS, sort=False, as_index=False)["value"].mean()

    def losses(self, task: str, metric: str, population: str = "all") -> dict[str, tuple[int, int]]:
        """Per baseline of ``task`` (:data:`GATE_BASELINES`): (origins where the gated model did
        not beat it, origins)."""
        sel = self.by_origin[
            (self.by_origin.task == task)
            & (self.by_origin.metric == metric)
            & (self.by_origin.population == population)
        ]
        wide = sel.pivot_table(index="origin", columns="model", values="value")
        model = GATE_MODELS[task]
        if model not in wide.columns:
            return {}
        return {
            b: (int((~(wide[model] > wide[b])).sum()), len(wide))
            for b in GATE_BASELINES[task]
            if b in wide.columns and wide[b].notna().any()
        }


def rolling_backtest(
    tx: pd.DataFrame,
    origins: list[Origin],
    *,
    als_grid: str,
    cross_sell: bool,
    validation_users: int | None = VALIDATION_USERS,
    run: Runner,
    item_text: Mapping[str, str] | None = None,
    frames: FeatureFrames | None = None,
    trainer: BoosterTrainer = LOCAL,
) -> RollingResult:
    """Fit and score every model at every origin, newest first; ``run(stage, fn)`` times and
    prints each stage (:class:`training.stages.StageLog.run`); ``item_text`` (item id →
    description) feeds the cross-sell hybrid's content vectors; ``frames``: the run's
    snapshots and training frames (default: each built here when first read);
    ``trainer``: where the boosters are fitted."""
    frames = LocalFrames(tx, []) if frames is None else frames
    tables, arrays = [], {}
    xs_newest: TunedCrossSell | None = None
    for o in origins:
        frame = run(
            f"origin {o.label}: training frame ({len(o.train_cutoffs)} cutoffs, {o.protocol})",
            lambda o=o: frames.training_frame(o.train_cutoffs, o.horizon, observed_until=o.cutoff),
        )
        churn, nextp = run(
            f"origin {o.label}: fit churn + next purchase",
            lambda frame=frame, o=o: fit_propensity(frame, o.horizon, trainer),
        )
        del frame  # fitted: not held through the cross-sell stage
        table, arr = run(
            f"origin {o.label}: score vs baselines",
            lambda churn=churn, nextp=nextp, o=o: evaluate_propensity(
                churn, nextp, tx, o.cutoff, o.horizon, frames.snapshots
            ),
        )
        parts = [table]
        if cross_sell:
            xs = run(
                f"origin {o.label}: cross-sell tune + score",
                lambda o=o: run_backtest(
                    tx,
                    o.cutoff,
                    o.horizon,
                    grid=als_grid,
                    item_text=item_text,
                    validation_users=validation_users,
                ),
            )
            parts.append(xs.table)
            xs_newest = xs_newest or xs.tuned
            del xs  # its fitted recommenders, before the next origin fits its own
        t = pd.concat(parts, ignore_index=True)
        t.insert(0, "origin", o.label)
        tables.append(t)
        arrays[o.label] = arr
    return RollingResult(origins, pd.concat(tables, ignore_index=True), arrays, xs_newest)


def fit_propensity(
    frame: pd.DataFrame | TrainingRows, horizon: int, trainer: BoosterTrainer = LOCAL
) -> tuple[ChurnModel, NextPurchaseModel]:
    """The churn and next-purchase recipes on a stacked training frame, here or on a
    cluster (the next-purchase model reuses the churn model's BG/NBD fit), boosters fitted
    by ``trainer``."""
    cols = model_columns(frame)
    churn = ChurnModel(horizon=horizon).fit(frame, cols, trainer=trainer)
    nextp = NextPurchaseModel(horizon=horizon).fit(frame, cols, churn.bgnbd, trainer)
    return churn, nextp


#: the table's columns after origin, window and protocol: (header, task, model, metric);
#: predicted and observed buy rate share one cell
_COLUMNS = (
    ("churn AUC", "churn", "model", "auc"),
    ("BG/NBD", "churn", "bgnbd", "auc"),
    ("recency", "churn", "recency", "auc"),
    ("ECE", "churn", "model", "ece"),
    ("buy rate pred / obs", "churn", "model", "predicted_rate"),
    ("", "churn", "model", "positive_rate"),
    ("next-30 d AUC", "next_purchase", "model", "auc"),
    ("BG/NBD", "next_purchase", "bgnbd", "auc"),
    ("ECE", "next_purchase", "model", "ece"),
    ("recall@10 hybrid", "cross_sell", "hybrid", "recall@10"),
    ("ALS", "cross_sell", "als", "recall@10"),
    ("item-kNN", "cross_sell", "knn", "recall@10"),
    ("popularity", "cross_sell", "popularity", "recall@10"),
)
_HEADER = (
    "| origin | label window | protocol | " + " | ".join(c[0] for c in _COLUMNS if c[0]) + " |"
)


def _row(t: pd.DataFrame) -> list[float]:
    """One table row's values, in :data:`_COLUMNS` order."""
    return [metric_value(t, task, model, metric) for _, task, model, metric in _COLUMNS]


def rolling_markdown(result: RollingResult) -> str:
    """The rolling-origin table (population ``all``): one row per origin, then the mean and
    the origins where the model beats BG/NBD."""

    def fmt(vals: list[float]) -> list[str]:
        cells = [f"{v:.4f}" if np.isfinite(v) else "–" for v in vals]
        cells[4:6] = [f"{vals[4]:.3f} / {vals[5]:.3f}" if np.isfinite(vals[4]) else "–"]
        return cells

    lines = [_HEADER, "|---|---|---|" + "---:|" * (len(_COLUMNS) - 1)]
    for o in result.origins:
        t = result.by_origin[result.by_origin.origin == o.label]
        lines.append(
            f"| {o.label} | {o.window} | {o.protocol} | " + " | ".join(fmt(_row(t))) + " |"
        )
    lines.append("| **mean** | | | " + " | ".join(fmt(_row(result.table))) + " |")
    wins = []
    for task, metric in GATE_METRICS.items():  # against each task's first baseline
        base = GATE_BASELINES[task][0]
        if base in (losses := result.losses(task, metric)):
            lost, n = losses[base]
            wins.append(f"{task} beats {base} on {n - lost}/{n}")
    lines.append(f"\norigins won: {', '.join(wins)}")
    return "\n".join(lines)


def _key(r: pd.Series) -> str:
    metric = str(r["metric"]).replace("@", "_at_")
    return f"{r['task']}.{r['model']}.{r['population']}.{metric}"


def log_rolling_metrics(rolling: RollingResult, task: str | None = None) -> None:
    """The mean over origins under ``task.model.population.metric``, and each origin's value
    under the same key + ``.by_origin`` at step 0, 1, … (oldest first: MLflow plots it)."""
    mean, per = rolling.table, rolling.by_origin
    if task is not None:
        mean, per = mean[mean.task == task], per[per.task == task]
    finite = mean[np.isfinite(mean["value"])]
    mlflow.log_metrics({_key(r): float(r["value"]) for _, r in finite.iterrows()})
    for step, o in enumerate(reversed(rolling.origins)):
        rows = per[(per.origin == o.label) & np.isfinite(per["value"])]
        mlflow.log_metrics(
            {_key(r) + ".by_origin": float(r["value"]) for _, r in rows.iterrows()}, step=step
        )
