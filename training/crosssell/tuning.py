"""Hyper-parameter grids and grid search on a validation split whose labels end at the
backtest cutoff (so tuning never reads the backtest window)."""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.cutoff import rows_before
from servable.crosssell.als import ALSRecommender
from servable.crosssell.base import Interactions, Recommender, interactions, order_lines
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.knn import ItemKNNRecommender
from servable.crosssell.popularity import PopularityRecommender
from training.crosssell.evaluation import (
    cross_sell_targets,
    customers_before,
    evaluate,
    sample_customers,
    sample_rows,
)

__all__ = [
    "DEFAULT_ALS_GRID",
    "DEFAULT_GRIDS",
    "DEFAULT_HYBRID_GRID",
    "DEFAULT_KNN_GRID",
    "DEFAULT_POPULARITY_GRID",
    "SMALL_GRIDS",
    "TUNING_CUSTOMERS",
    "VALIDATION_USERS",
    "Grid",
    "grids",
    "tune",
    "tune_als",
    "tune_hybrid",
    "tune_knn",
    "tune_popularity",
]

#: a grid: parameter name -> candidate values (their product is searched), or a list of points
Grid = Mapping[str, Sequence] | Sequence[Mapping[str, Any]]

#: popularity window (days); the winner is also every model's fallback and ALS's blend prior
DEFAULT_POPULARITY_GRID: dict[str, tuple] = {"popularity_days": (3, 7, 14, 30, 90)}
#: implicit item-kNN BM25: neighbours per item, recency decay of the customer's history
DEFAULT_KNN_GRID: dict[str, tuple] = {"K": (20, 50, 100), "half_life_days": (None, 180)}
#: ALS: 8 fits; ``popularity_blend`` only changes scoring, so it costs evaluations, not fits
DEFAULT_ALS_GRID: dict[str, tuple] = {
    "factors": (64, 128),
    "regularization": (0.05,),
    "iterations": (10,),
    "weighting": ("bm25", "log"),
    "half_life_days": (60, 120),
    "popularity_blend": (0.0, 0.25, 0.5, 1.0),
}
#: the hybrid: the ALS grid and the weight of the content term (0 = plain ALS); both blends
#: only change scoring. No popularity blend and a content weight of 0.5 came last on the
#: newest origin's validation split of the shared log (docs/results.md): left out, 48
#: evaluations instead of 128.
DEFAULT_HYBRID_GRID: dict[str, tuple] = {
    **DEFAULT_ALS_GRID,
    "popularity_blend": (0.5, 1.0),
    "content_weight": (0.0, 0.1, 0.25),
}


#: customers scored per grid point (a stable sample, :func:`sample_customers`): at 1× the
#: shared log has about 1,500 with targets, so only larger logs are sampled
VALIDATION_USERS = 5000

#: customers whose rows every grid point is fitted on (a stable sample as well): the fits'
#: cost stops growing with the customer base too. The shared log has about 5,000 before its
#: newest validation cutoff, so 1× is fitted on everyone; at 4× the hybrid's tuning ran
#: 1.8× faster with the same winner (docs/results.md)
TUNING_CUSTOMERS = 10_000


def _combinations(grid: Grid) -> list[dict]:
    if isinstance(grid, Mapping):
        names = list(grid)
        return [
            dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())
        ]
    return [dict(g) for g in grid]


def tune(
    klass: type[Recommender],
    transactions: pd.DataFrame,
    val_cutoff: pd.Timestamp,
    horizon_days: int,
    grid: Grid | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    k: int = 10,
    item_text: Mapping[str, str] | None = None,
    validation_users: int | None = VALIDATION_USERS,
    tuning_customers: int | None = TUNING_CUSTOMERS,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid-search one recommender class on the validation split; best by recall@k.

    ``grid`` maps parameter names to candidate values (their product is searched) or is a list
    of parameter dicts; default the class's entry of :data:`DEFAULT_GRIDS`. ``base`` holds
    fixed parameters (e.g. the shared ``active_days`` / ``popularity_days``). The caller passes
    ``val_cutoff = backtest_cutoff − horizon_days`` so the validation labels end where the
    backtest starts. ``item_text`` (item id → description) feeds the content vectors.
    Returns ``(best_params, table)``; the table has one row per grid point, best first.

    Every grid point is fitted before ``val_cutoff`` and scored on ``[val_cutoff, +H)``.

    Rows at or after ``val_cutoff + H`` are dropped first, so nothing here can read the
    backtest window when the caller passes ``val_cutoff = backtest_cutoff − H``.
    Only the rows of at most ``tuning_customers`` customers are read, and at most
    ``validation_users`` of them are scored (stable samples, :func:`sample_rows` and
    :func:`sample_customers`; ``None``: all).
    """
    t = val_cutoff
    tx = rows_before(transactions, t + pd.Timedelta(days=horizon_days))
    tx = sample_rows(tx, tuning_customers)
    targets = cross_sell_targets(tx, t, horizon_days, customers_before(tx, t))
    targets = sample_customers(targets, validation_users)
    grid = grid or DEFAULT_GRIDS[klass.kind]
    base = dict(base or {})
    fit_points: dict[str, dict] = {}
    for combo in _combinations(grid):
        params = {**base, **combo}
        fit_part = {n: v for n, v in params.items() if n not in klass.scoring_params}
        score_part = {n: v for n, v in params.items() if n in klass.scoring_params}
        key = json.dumps(fit_part, sort_keys=True, default=str)
        fit_points.setdefault(key, {"fit": fit_part, "score": []})["score"].append(score_part)
    lines = order_lines(rows_before(tx, t), t)
    cache: dict[tuple, Interactions] = {}
    rows = []
    for point in fit_points.values():
        model = klass(**point["fit"])
        data_key = (model.half_life_days, model.popularity_days, model.active_days)
        if data_key not in cache:
            cache[data_key] = interactions(lines, *data_key, item_text)
        start = time.perf_counter()
        model.fit_interactions(cache[data_key])
        fit_s = time.perf_counter() - start
        for score_part in point["score"]:
            start = time.perf_counter()
            model.set_scoring_params(**score_part)
            metrics = evaluate(model, targets, k=k)
            rows.append(
                {
                    **point["fit"],
                    **score_part,
                    **metrics,
                    "fit_s": fit_s,
                    "eval_s": time.perf_counter() - start,
                }
            )
    table = pd.DataFrame(rows)
    order = np.lexsort((-table[f"ndcg@{k}"].to_numpy(), -table[f"recall@{k}"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "model", klass.kind)
    best = {**base, **{n: _plain(table.loc[0, n]) for n in _combinations(grid)[0]}}
    return best, table


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


# the three searches the backtest runs, each with its class's default grid
tune_als = functools.partial(tune, ALSRecommender)
tune_hybrid = functools.partial(tune, HybridRecommender)
tune_knn = functools.partial(tune, ItemKNNRecommender)
tune_popularity = functools.partial(tune, PopularityRecommender)


#: quick grids for tests and smoke runs (``grid="small"``)
SMALL_GRIDS: dict[str, dict[str, tuple]] = {
    "popularity": {"popularity_days": (7, 30)},
    "knn": {"K": (20, 100)},
    "als": {
        "factors": (32,),
        "iterations": (6,),
        "weighting": ("bm25",),
        "half_life_days": (120,),
        "popularity_blend": (0.0, 0.5),
    },
    "hybrid": {
        "factors": (32,),
        "iterations": (6,),
        "weighting": ("bm25",),
        "half_life_days": (120,),
        "popularity_blend": (0.5,),
        "content_weight": (0.0, 0.25),
    },
}
DEFAULT_GRIDS: dict[str, dict[str, tuple]] = {
    "popularity": DEFAULT_POPULARITY_GRID,
    "knn": DEFAULT_KNN_GRID,
    "als": DEFAULT_ALS_GRID,
    "hybrid": DEFAULT_HYBRID_GRID,
}


def grids(
    grid: str | Grid | None, knn_grid: Grid | None, popularity_grid: Grid | None
) -> dict[str, Grid]:
    """The grid of each model: a preset (``"default"``, ``"small"``) or a hybrid grid, with
    optional item-kNN and popularity grids overriding the defaults."""
    if grid is None or isinstance(grid, str):
        presets = {"default": DEFAULT_GRIDS, "small": SMALL_GRIDS}
        if (grid or "default") not in presets:
            raise ValueError(f"grid must be 'default', 'small' or a grid, got {grid!r}")
        out = dict(presets[grid or "default"])
    else:
        out = {**DEFAULT_GRIDS, "hybrid": grid}
    if knn_grid is not None:
        out["knn"] = knn_grid
    if popularity_grid is not None:
        out["popularity"] = popularity_grid
    return out
