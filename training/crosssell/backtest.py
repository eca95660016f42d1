"""The cross-sell backtest: tune on the validation split, refit at the backtest cutoff and
score the hybrid (and its ALS alone) against item-kNN and popularity for each population."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.cutoff import rows_before
from servable.crosssell.base import Recommender, interaction_columns, order_lines
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.knn import ItemKNNRecommender
from servable.crosssell.popularity import PopularityRecommender
from training.crosssell.evaluation import cross_sell_targets, customers_before, evaluate
from training.crosssell.tuning import (
    VALIDATION_USERS,
    Grid,
    grids,
    tune_hybrid,
    tune_knn,
    tune_popularity,
)

__all__ = [
    "POPULATIONS",
    "CrossSellResult",
    "TunedCrossSell",
    "long_table",
    "run_backtest",
    "score_populations",
]

#: evaluation populations: customers seen before the cutoff, and those buying in the year before
POPULATIONS: dict[str, int | None] = {"all": None, "active_365d": 365}


@dataclass(frozen=True)
class TunedCrossSell:
    """What a training run keeps of a scored cross-sell backtest: the tuned hybrid's
    ``params`` (refitted on the whole log) and the ``tuning`` table (logged). The fitted
    recommenders are not kept: on a 10-million-line log they held ~0.6 GB to the end of the
    run (docs/results.md, #19)."""

    params: dict[str, Any]
    tuning: pd.DataFrame


@dataclass
class CrossSellResult:
    """What :func:`run_backtest` produced.

    ``params`` are the tuned hybrid's parameters (what :func:`fit_final` takes);
    ``baseline_params`` the tuned item-kNN and popularity ones. ``backtest`` is the wide
    model × population table, ``table`` the same numbers in the training pipeline's long
    format (task, model, population, metric, value).
    """

    hybrid: HybridRecommender  # the served recipe, fitted at the backtest cutoff
    knn: ItemKNNRecommender
    popularity: PopularityRecommender
    params: dict[str, Any]
    baseline_params: dict[str, dict[str, Any]]
    tuning: pd.DataFrame  # every validation grid point of every model, best first per model
    backtest: pd.DataFrame  # model × population at the backtest cutoff
    timings: dict[str, float]  # seconds per stage
    cutoff: pd.Timestamp
    val_cutoff: pd.Timestamp
    horizon_days: int
    targets: dict[str, dict[str, set[str]]] = field(repr=False, default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """Long format: task="cross_sell", model, population, metric, value."""
        return long_table(self.backtest)

    @property
    def tuned(self) -> TunedCrossSell:
        """The tuned parameters and tuning table, without the fitted models."""
        return TunedCrossSell(self.params, self.tuning)

    def meets_target(self, vs_knn: float = 1.2, vs_popularity: float = 1.6) -> bool:
        """Issue #3's acceptance for the served model: recall ≥ 1.2× item-kNN and ≥ 1.6×
        popularity, in every population."""
        served = self.backtest[self.backtest["model"] == "hybrid"]
        return bool(
            (served["recall_vs_knn"] >= vs_knn).all()
            and (served["recall_vs_popularity"] >= vs_popularity).all()
        )


def run_backtest(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | None = None,
    horizon: int = 90,
    *,
    grid: str | Grid | None = "default",
    knn_grid: Grid | None = None,
    popularity_grid: Grid | None = None,
    active_days: int | None = 30,
    k: int = 10,
    item_text: Mapping[str, str] | None = None,
    validation_users: int | None = VALIDATION_USERS,
) -> CrossSellResult:
    """Tune on the validation split, refit at the backtest cutoff, evaluate model × population.

    1. ``val_cutoff = cutoff − horizon``; tuning sees only rows before ``cutoff``.
    2. Popularity's window is tuned first and becomes every model's ``popularity_days`` (the
       fallback, and ALS's blend prior); ``active_days`` (the dead-catalogue rule: only items
       sold in the last ``active_days`` are recommended) is shared as well. Item-kNN and the
       hybrid (ALS + content, :mod:`servable.crosssell.hybrid`; ``item_text`` maps item ids to
       descriptions) are then tuned on their own grids (``grid``: ``"default"``, ``"small"``
       or a hybrid grid).
    3. The tuned models are refitted on the rows before ``cutoff`` and scored on the items
       bought in ``[cutoff, cutoff + horizon)`` and never bought before, for each population in
       :data:`POPULATIONS`. ``als`` is the hybrid's own fit with the content term off — what
       the content adds, measured on the same factors.

    Every grid point is scored on the same stable sample of at most ``validation_users``
    validation customers (:func:`~training.crosssell.evaluation.sample_customers`); the
    backtest itself scores everyone.

    ``cutoff`` defaults to :func:`features.labels.backtest_cutoff` (the day after the log's last day − 90 days).
    """
    from features.labels import backtest_cutoff

    t = backtest_cutoff(transactions) if cutoff is None else cutoff
    val = t - pd.Timedelta(days=horizon)
    chosen = grids(grid, knn_grid, popularity_grid)
    # tuning's rows: only the columns recommenders read (a slice of a log in time order)
    before = rows_before(transactions, t)[interaction_columns(transactions)]
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[stage] = time.perf_counter() - start
        return out

    pop_params, pop_table = timed(
        "tune_popularity_s",
        lambda: tune_popularity(
            before,
            val,
            horizon,
            chosen["popularity"],
            base={"active_days": active_days},
            k=k,
            validation_users=validation_users,
        ),
    )
    shared = {"active_days": active_days, "popularity_days": pop_params["popularity_days"]}
    knn_params, knn_table = timed(
        "tune_knn_s",
        lambda: tune_knn(
            before, val, horizon, chosen["knn"], base=shared, k=k, validation_users=validation_users
        ),
    )
    params, hybrid_table = timed(
        "tune_hybrid_s",
        lambda: tune_hybrid(
            before,
            val,
            horizon,
            chosen["hybrid"],
            base=shared,
            k=k,
            item_text=item_text,
            validation_users=validation_users,
        ),
    )
    models = _fit_tuned(
        before, t, item_text, timed, hybrid=params, knn=knn_params, popularity=pop_params
    )

    start = time.perf_counter()
    backtest, all_targets = score_populations(models, transactions, t, horizon, k)
    timings["backtest_eval_s"] = time.perf_counter() - start
    timings["total_s"] = sum(timings.values())
    return CrossSellResult(
        hybrid=models["hybrid"],  # type: ignore[arg-type]
        knn=models["knn"],  # type: ignore[arg-type]
        popularity=models["popularity"],  # type: ignore[arg-type]
        params=params,
        baseline_params={"knn": knn_params, "popularity": pop_params},
        tuning=pd.concat([pop_table, knn_table, hybrid_table], ignore_index=True),
        backtest=backtest,
        timings=timings,
        cutoff=t,
        val_cutoff=val,
        horizon_days=horizon,
        targets=all_targets,
    )


def _fit_tuned(
    transactions: pd.DataFrame,
    t: pd.Timestamp,
    item_text: Mapping[str, str] | None,
    timed: Any,
    **params: dict[str, Any],
) -> dict[str, Recommender]:
    """The tuned hybrid (and its ALS alone), kNN and popularity fitted on the rows before
    ``t``, all on one :func:`~servable.crosssell.base.order_lines` of them."""
    lines = timed("order_lines_s", lambda: order_lines(transactions, t))
    hybrid = timed(
        "fit_hybrid_s", lambda: HybridRecommender(**params["hybrid"]).fit_lines(lines, item_text)
    )
    models: dict[str, Recommender] = {"hybrid": hybrid, "als": hybrid.als_alone()}
    for name, klass in (("knn", ItemKNNRecommender), ("popularity", PopularityRecommender)):
        models[name] = timed(
            f"fit_{name}_s", lambda k=klass, n=name: k(**params[n]).fit_lines(lines)
        )
    return models


def long_table(backtest: pd.DataFrame) -> pd.DataFrame:
    """A wide model × population table in the pipeline's long format (task="cross_sell")."""
    value_cols = [c for c in backtest.columns if c not in ("model", "population")]
    long = backtest.melt(id_vars=["model", "population"], value_vars=value_cols, var_name="metric")
    long.insert(0, "task", "cross_sell")
    long["value"] = long["value"].astype(float)
    return long


def score_populations(
    models: dict[str, Recommender],
    transactions: pd.DataFrame,
    t: pd.Timestamp,
    horizon: int,
    k: int,
) -> tuple[pd.DataFrame, dict[str, dict[str, set[str]]]]:
    """Model × population metrics at ``t`` with recall ratios to the baselines, and targets."""
    rows = []
    all_targets: dict[str, dict[str, set[str]]] = {}
    for population, days in POPULATIONS.items():
        targets = cross_sell_targets(
            transactions, t, horizon, customers_before(transactions, t, days)
        )
        all_targets[population] = targets
        for name, model in models.items():
            rows.append({"model": name, "population": population, **evaluate(model, targets, k)})
    backtest = pd.DataFrame(rows)
    recall = f"recall@{k}"
    ref = backtest.pivot(index="population", columns="model", values=recall)
    for base_model, column in (("knn", "recall_vs_knn"), ("popularity", "recall_vs_popularity")):
        backtest[column] = backtest[recall] / backtest["population"].map(ref[base_model])
    backtest["n_customers"] = backtest["n_customers"].astype(int)
    return backtest, all_targets
