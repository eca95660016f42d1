"""Lifecycle stage and value tier, judged against each customer's *own* purchase cycle.

A fixed "90 days without an order" rule is wrong for almost everyone: a weekly buyer
silent for a month is in trouble, a twice-a-year buyer silent for three months is fine.
Stages therefore use ``recency_ratio`` = recency / the customer's shrunk inter-purchase
gap (see :mod:`features.snapshot`), i.e. how many of their own cycles they are late.

Rules (first match wins; thresholds in :class:`LifecycleRules`):

1. ``new``      — one purchase day, first bought within ``new_days`` (90) days.
2. ``lost``     — silent more than ``lost_days`` (365), or more than ``lost_ratio`` (12)
   own cycles *and* more than ``lost_min_days`` (180) days.
3. ``sleeping`` — more than ``sleeping_ratio`` (6) own cycles late.
4. ``at_risk``  — more than ``at_risk_ratio`` (1.5) cycles late, or still on cycle but
   declining: 90-day spending trend ≤ ``declining_trend`` (−0.5) with ≥ 2 orders in 180 d.
5. ``loyal``    — on cycle with ≥ ``loyal_orders`` (6) orders in the last 365 days and a
   tenure of at least 365 days.
6. ``active``   — everyone else on cycle.

Examples: a weekly buyer (cycle 7 d) silent 30 days is 4.3 cycles late → ``at_risk``
(from 11 days of silence; ``sleeping`` after 6 weeks, ``lost`` after 6 months); a
twice-yearly buyer (cycle 180 d) silent 90 days is 0.5 cycles late → ``active`` (at risk
only after 270 days, lost after a year).

Value tier: the customer's value score is their annualised historic spend net of returns
(spend × (1 − returned share) over max(tenure, 1 year)), averaged with predicted value when a prediction is given; ``high``
is the top ``1 − high_quantile`` (20%), ``low`` the bottom ``low_quantile`` (40%), of the
customers in the same snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "STAGES",
    "TIERS",
    "LifecycleRules",
    "assign_lifecycle",
    "stage_after",
    "value_score",
]

STAGES = ("new", "active", "loyal", "at_risk", "sleeping", "lost")
TIERS = ("high", "mid", "low")


@dataclass(frozen=True)
class LifecycleRules:
    """Thresholds of the lifecycle rules (see module docstring)."""

    new_days: float = 90.0
    lost_days: float = 365.0
    lost_ratio: float = 12.0
    lost_min_days: float = 180.0
    sleeping_ratio: float = 6.0
    at_risk_ratio: float = 1.5
    declining_trend: float = -0.5
    loyal_orders: float = 6.0
    high_quantile: float = 0.8
    low_quantile: float = 0.4


def value_score(features: pd.DataFrame, predicted_value: pd.Series | None = None) -> pd.Series:
    """Annualised historic spend net of returns, averaged with predicted annual value when given."""
    years = np.maximum(features["tenure_days"].to_numpy(), 365.0) / 365.0
    kept = 1.0 - np.clip(features["return_rate_value"].to_numpy(), 0.0, 1.0)
    hist = pd.Series(features["monetary_all"].to_numpy() * kept / years, index=features.index)
    if predicted_value is None:
        return hist
    return 0.5 * hist + 0.5 * predicted_value.reindex(features.index).fillna(hist)


def assign_lifecycle(
    features: pd.DataFrame,
    rules: LifecycleRules | None = None,
    predicted_value: pd.Series | None = None,
    tier_thresholds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Stage and value tier per customer of a feature snapshot.

    ``tier_thresholds`` (low, high) fixes the value cut points (e.g. those of the training
    snapshot, so a single customer scored online gets the same tier); by default they are
    the snapshot's own quantiles. Returns ``stage``, ``tier``, ``value_score`` columns.
    """
    r = rules or LifecycleRules()
    rec = features["recency_days"].to_numpy()
    ratio = features["recency_ratio"].to_numpy()
    one_day = features["purchase_days"].to_numpy() <= 1
    tenure = features["tenure_days"].to_numpy()
    declining = (features["trend_90d"].to_numpy() <= r.declining_trend) & (
        features["orders_180d"].to_numpy() >= 2
    )
    conditions = [
        one_day & (tenure <= r.new_days),
        (rec > r.lost_days) | ((ratio > r.lost_ratio) & (rec > r.lost_min_days)),
        ratio > r.sleeping_ratio,
        (ratio > r.at_risk_ratio) | declining,
        (features["orders_365d"].to_numpy() >= r.loyal_orders) & (tenure >= 365.0),
    ]
    stage = np.select(conditions, ["new", "lost", "sleeping", "at_risk", "loyal"], "active")
    score = value_score(features, predicted_value)
    if tier_thresholds is None:
        lo, hi = np.quantile(score, [r.low_quantile, r.high_quantile]) if len(score) else (0.0, 0.0)
    else:
        lo, hi = tier_thresholds
    tier = np.where(score >= hi, "high", np.where(score < lo, "low", "mid"))
    return pd.DataFrame(
        {
            "stage": pd.Categorical(stage, categories=STAGES),
            "tier": pd.Categorical(tier, categories=TIERS),
            "value_score": score.to_numpy(),
        },
        index=features.index,
    )


def stage_after(
    features: pd.DataFrame, days: float, rules: LifecycleRules | None = None
) -> np.ndarray:
    """Each customer's stage ``days`` after the snapshot if they buy nothing meanwhile: the
    recency-driven columns age (recency and tenure grow by ``days``, the recency ratio with
    recency over the customer's own cycle); window counts are kept as they were, so only
    the recency rules move a customer on (active → at_risk → sleeping → lost). What the
    journeys' ``stage_entered`` trigger compares between two moments."""
    rec = features["recency_days"].to_numpy(float)
    ratio = features["recency_ratio"].to_numpy(float)
    cycle = np.divide(rec, ratio, out=np.full_like(rec, np.inf), where=ratio > 0)
    aged = features[
        ["recency_days", "recency_ratio", "purchase_days", "tenure_days", "trend_90d"]
        + ["orders_180d", "orders_365d", "monetary_all", "return_rate_value"]
    ].copy()
    aged["recency_days"] = rec + days
    aged["tenure_days"] = features["tenure_days"].to_numpy(float) + days
    aged["recency_ratio"] = np.where(np.isfinite(cycle), (rec + days) / cycle, ratio)
    return assign_lifecycle(aged, rules, tier_thresholds=(0.0, 0.0))["stage"].to_numpy(str)
