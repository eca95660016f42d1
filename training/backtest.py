"""The propensity backtest table: churn and next purchase against their baselines (BG/NBD,
recency, the customer's own cycle), every metric on the same customers, for all customers
and for those active in the 365 days before the cutoff; and its markdown rendering.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.labels import Snapshots, build_labels, snapshot_at
from servable.propensity import ChurnModel, NextPurchaseModel, bgnbd_inputs, fit_bgnbd
from training.metrics import binary_report, mae

__all__ = ["backtest_markdown", "evaluate_propensity", "metric_value"]


def _populations(feats: pd.DataFrame) -> dict[str, np.ndarray]:
    return {"all": np.ones(len(feats), bool), "active_365d": feats["orders_365d"].to_numpy() > 0}


def _rows(model: str, task: str, population: str, values: dict[str, float]) -> list[dict]:
    return [
        {"task": task, "model": model, "population": population, "metric": k, "value": float(v)}
        for k, v in values.items()
    ]


def evaluate_propensity(
    churn: ChurnModel,
    nextp: NextPurchaseModel,
    tx: pd.DataFrame,
    cutoff: pd.Timestamp,
    horizon: int,
    snapshots: Snapshots | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Backtest metrics of the churn and next-purchase models and their baselines.

    Churn metrics are on the buy-again orientation (positive = ordered within the horizon;
    score = 1 − P(churn)): AUC is the same either way, lifts are more telling. Baselines:
    BG/NBD fitted on the same snapshot (expected purchases in the horizon / in 30 days) and
    plain recency. Returns a long metric table and arrays for the plots. The snapshot at
    ``cutoff`` comes from ``snapshots`` when it holds it.
    """
    feats = snapshot_at(tx, cutoff, snapshots)
    labels = build_labels(tx, cutoff, feats.index, horizon)
    bg = fit_bgnbd(feats)
    x, t_x, big_t = bgnbd_inputs(feats)
    p_churn = churn.predict(feats)
    nxt = nextp.predict(feats)
    buy = 1 - labels["churn"].to_numpy()
    b30 = labels["buy_30d"].to_numpy()
    scores = {
        "churn": {
            "model": (1 - p_churn, 1 - p_churn),
            "bgnbd": (bg.expected_purchases(horizon / 7.0, x, t_x, big_t), None),
            "recency": (-feats["recency_days"].to_numpy(), None),
        },
        "next_purchase": {
            "model": (nxt["p_buy_30d"].to_numpy(), nxt["p_buy_30d"].to_numpy()),
            "bgnbd": (bg.expected_purchases(30 / 7.0, x, t_x, big_t), None),
            "recency": (-feats["recency_days"].to_numpy(), None),
        },
    }
    days = labels["days_to_next"].to_numpy()
    came_back = labels["next_observed"].to_numpy() & (days < horizon)
    cycle_guess = np.clip(
        feats["gap_shrunk"].to_numpy() - feats["recency_days"].to_numpy(), 0.0, horizon
    )
    rows: list[dict] = []
    for pop, mask in _populations(feats).items():
        for task, y in (("churn", buy), ("next_purchase", b30)):
            for model, (s, p) in scores[task].items():
                rep = binary_report(y[mask], s[mask], None if p is None else p[mask])
                rows += _rows(model, task, pop, rep)
        m = mask & came_back
        rows += _rows(
            "model",
            "next_purchase",
            pop,
            {"mae_days": mae(days[m], nxt["expected_days"].to_numpy()[m])},
        )
        rows += _rows("own_cycle", "next_purchase", pop, {"mae_days": mae(days[m], cycle_guess[m])})
    arrays = {"buy": buy, "b30": b30, "scores": scores, "n_customers": len(feats)}
    return pd.DataFrame(rows), arrays


def metric_value(
    table: pd.DataFrame, task: str, model: str, metric: str, population: str = "all"
) -> float:
    sel = table[
        (table.task == task)
        & (table.model == model)
        & (table.metric == metric)
        & (table.population == population)
    ]
    return float(sel["value"].iloc[0]) if len(sel) else float("nan")


_SHOWN = (
    "auc",
    "pr_auc",
    "brier",
    "ece",
    "top_decile_lift",
    "lift_quality",
    "mae_days",
    "recall@10",
    "ndcg@10",
    "hit_rate@10",
    "n",
    "n_customers",
)


def backtest_markdown(table: pd.DataFrame) -> str:
    """The backtest as markdown: one table per task, rows model × population."""
    out = []
    for task, sub in table.groupby("task", sort=False):
        wide = sub.pivot_table(
            index=["model", "population"], columns="metric", values="value", sort=False
        )
        cols = [c for c in _SHOWN if c in wide.columns and wide[c].notna().any()]
        out.append(f"**{task}**\n")
        out.append("| model | population | " + " | ".join(cols) + " |")
        out.append("|---|---|" + "---:|" * len(cols))
        for (model, pop), row in wide[cols].iterrows():
            vals = " | ".join(
                "" if pd.isna(v) else (f"{v:,.0f}" if c in ("n", "n_customers") else f"{v:.4f}")
                for c, v in zip(cols, row.to_numpy(), strict=True)
            )
            out.append(f"| {model} | {pop} | {vals} |")
        out.append("")
    return "\n".join(out)
