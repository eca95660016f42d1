"""Tests for features.lifecycle: stages against the customer's own cycle, and value tiers.

Feature rows are hand-made (only the columns the rules read); the expected stage of each
row follows from the rules in the module docstring, first match wins:
new -> lost -> sleeping -> at_risk -> loyal -> active.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.contracts import validate_transactions
from features.lifecycle import STAGES, TIERS, LifecycleRules, assign_lifecycle, value_score
from features.snapshot import GAP_PRIOR_WEIGHT, build_features

# an unremarkable on-cycle customer: 5 purchase days, 4 orders this year, tenure > 1 year
BASE = {
    "recency_days": 10.0,
    "recency_ratio": 0.5,
    "purchase_days": 5.0,
    "tenure_days": 400.0,
    "trend_90d": 0.0,
    "orders_180d": 3.0,
    "orders_365d": 4.0,
    "monetary_all": 1000.0,
    "return_rate_value": 0.0,
}


def frame(rows: dict[str, dict]) -> pd.DataFrame:
    df = pd.DataFrame([{**BASE, **kw} for kw in rows.values()], index=list(rows))
    df.index.name = "customer_id"
    return df


def stages(rows: dict[str, dict]) -> dict[str, str]:
    return assign_lifecycle(frame(rows))["stage"].astype(str).to_dict()


CASES = {
    # name: (feature overrides, expected stage)
    "plain": ({}, "active"),
    "new": (
        {"purchase_days": 1, "tenure_days": 30, "recency_days": 30, "recency_ratio": 10},
        "new",
    ),
    "new_at_90_days": ({"purchase_days": 1, "tenure_days": 90, "recency_days": 90}, "new"),
    "one_day_91_days_ago": (
        {
            "purchase_days": 1,
            "tenure_days": 91,
            "recency_days": 91,
            "recency_ratio": 1.0,
            "orders_180d": 1,
            "orders_365d": 1,
        },
        "active",
    ),
    "new_beats_declining": (
        {"purchase_days": 1, "tenure_days": 20, "trend_90d": -1, "orders_180d": 2},
        "new",
    ),
    "silent_366_days": ({"recency_days": 366, "recency_ratio": 0.5}, "lost"),
    "silent_365_days": ({"recency_days": 365, "recency_ratio": 0.5}, "active"),
    "12.5_cycles_181_days": ({"recency_days": 181, "recency_ratio": 12.5}, "lost"),
    "12.5_cycles_180_days": ({"recency_days": 180, "recency_ratio": 12.5}, "sleeping"),
    "12_cycles_200_days": ({"recency_days": 200, "recency_ratio": 12.0}, "sleeping"),
    "6.01_cycles": ({"recency_days": 50, "recency_ratio": 6.01}, "sleeping"),
    "6_cycles": ({"recency_days": 50, "recency_ratio": 6.0}, "at_risk"),
    "1.51_cycles": ({"recency_ratio": 1.51}, "at_risk"),
    "1.5_cycles": ({"recency_ratio": 1.5}, "active"),
    "declining": ({"recency_ratio": 1.0, "trend_90d": -0.5, "orders_180d": 2}, "at_risk"),
    "declining_one_order": ({"trend_90d": -0.5, "orders_180d": 1}, "active"),
    "mild_decline": ({"trend_90d": -0.49, "orders_180d": 5}, "active"),
    "loyal": ({"orders_365d": 6, "tenure_days": 365}, "loyal"),
    "loyal_too_young": ({"orders_365d": 6, "tenure_days": 364}, "active"),
    "five_orders": ({"orders_365d": 5, "tenure_days": 500}, "active"),
    "loyal_but_late": ({"orders_365d": 10, "recency_ratio": 2.0}, "at_risk"),
    "loyal_but_declining": ({"orders_365d": 10, "trend_90d": -1.0, "orders_180d": 3}, "at_risk"),
    "loyal_but_sleeping": ({"orders_365d": 10, "recency_days": 60, "recency_ratio": 7}, "sleeping"),
}


def test_rules_case_by_case():
    got = stages({name: kw for name, (kw, _) in CASES.items()})
    assert got == {name: stage for name, (_, stage) in CASES.items()}


def weekly(silent: float) -> dict:
    """A weekly buyer (own cycle 7 d) with a year of history, silent for ``silent`` days."""
    return {
        "recency_days": silent,
        "recency_ratio": silent / 7,
        "purchase_days": 60,
        "tenure_days": 420,
        "orders_180d": 20,
        "orders_365d": 50,
    }


def twice_yearly(silent: float) -> dict:
    """A twice-a-year buyer (own cycle 180 d), silent for ``silent`` days."""
    return {
        "recency_days": silent,
        "recency_ratio": silent / 180,
        "purchase_days": 4,
        "tenure_days": 720,
        "orders_180d": 1,
        "orders_365d": 2,
    }


def test_docstring_examples_own_cycle_not_fixed_threshold():
    got = stages(
        {
            "weekly_10": weekly(10),  # 1.43 cycles: still on cycle
            "weekly_11": weekly(11),  # 1.57 cycles
            "weekly_30": weekly(30),  # 4.3 cycles
            "weekly_42": weekly(42),  # 6.0 cycles: not yet more than 6
            "weekly_43": weekly(43),
            "weekly_180": weekly(180),  # 25.7 cycles but not more than 180 days
            "weekly_181": weekly(181),
            "twice_90": twice_yearly(90),  # 0.5 cycles
            "twice_270": twice_yearly(270),  # 1.5 cycles
            "twice_271": twice_yearly(271),
            "twice_366": twice_yearly(366),  # 2 cycles, but more than a year
        }
    )
    assert got == {
        "weekly_10": "loyal",
        "weekly_11": "at_risk",
        "weekly_30": "at_risk",
        "weekly_42": "at_risk",
        "weekly_43": "sleeping",
        "weekly_180": "sleeping",
        "weekly_181": "lost",
        "twice_90": "active",
        "twice_270": "active",
        "twice_271": "at_risk",
        "twice_366": "lost",
    }


def test_weekly_and_twice_yearly_buyers_from_a_log():
    """End to end: the same 30/90 days of silence mean different things."""
    t = pd.Timestamp("2021-06-01")
    rows = [("weekly", f"w{i}", t - pd.Timedelta(days=30 + 7 * i), 1, 10.0) for i in range(53)]
    rows += [("twice", f"t{i}", t - pd.Timedelta(days=90 + 180 * i), 1, 50.0) for i in range(4)]
    tx = validate_transactions(
        pd.DataFrame(rows, columns=["customer_id", "order_id", "ts", "quantity", "unit_price"])
    )
    feats = build_features(tx, t)
    # by hand: 52 gaps of 7 d and 3 gaps of 180 d; prior = mean of the two mean log-gaps
    k = GAP_PRIOR_WEIGHT
    prior = (math.log(7) + math.log(180)) / 2
    weekly_cycle = math.exp((52 * math.log(7) + k * prior) / (52 + k))
    twice_cycle = math.exp((3 * math.log(180) + k * prior) / (3 + k))
    assert feats.loc["weekly", "recency_ratio"] == pytest.approx(30 / weekly_cycle)
    assert feats.loc["twice", "recency_ratio"] == pytest.approx(90 / twice_cycle)
    assert 1.5 < 30 / weekly_cycle <= 6
    assert 90 / twice_cycle <= 1.5
    lc = assign_lifecycle(feats)
    assert lc.loc["weekly", "stage"] == "at_risk"
    assert lc.loc["twice", "stage"] == "active"


def test_custom_rules():
    rows = {"a": {"recency_ratio": 1.2}, "b": {"recency_days": 200, "recency_ratio": 0.5}}
    lc = assign_lifecycle(frame(rows), rules=LifecycleRules(at_risk_ratio=1.0, lost_days=180))
    assert lc["stage"].astype(str).to_dict() == {"a": "at_risk", "b": "lost"}


def test_output_frame():
    feats = frame({"x": {}, "y": {"recency_days": 400}})
    lc = assign_lifecycle(feats)
    assert list(lc.columns) == ["stage", "tier", "value_score"]
    assert lc.index.equals(feats.index)
    assert list(lc["stage"].cat.categories) == list(STAGES)
    assert list(lc["tier"].cat.categories) == list(TIERS)


# --------------------------------------------------------------------------- value tiers


def tier_frame() -> pd.DataFrame:
    # tenure of one year: value score = monetary_all = 100, 200, ..., 1000
    return frame(
        {f"c{i:02d}": {"monetary_all": 100.0 * i, "tenure_days": 365} for i in range(1, 11)}
    )


def test_tiers_by_snapshot_quantiles():
    lc = assign_lifecycle(tier_frame())
    # linear quantiles of 100..1000: 40% -> 100 + 0.4 * 900 = 460, 80% -> 820
    assert lc["tier"].astype(str).tolist() == ["low"] * 4 + ["mid"] * 4 + ["high"] * 2
    assert lc["value_score"].tolist() == pytest.approx([100.0 * i for i in range(1, 11)])


def test_value_score_is_annualised_and_blends_prediction():
    feats = frame(
        {
            "two_years": {"monetary_all": 1000, "tenure_days": 730},
            "young": {"monetary_all": 300, "tenure_days": 100},  # not scaled up to a year
            "predicted": {"monetary_all": 400, "tenure_days": 365},
        }
    )
    assert value_score(feats).tolist() == pytest.approx([500, 300, 400])
    pred = pd.Series({"predicted": 800.0, "stranger": 5.0})
    assert value_score(feats, pred).tolist() == pytest.approx([500, 300, 600])
    lc = assign_lifecycle(feats, predicted_value=pred)
    assert lc["value_score"].tolist() == pytest.approx([500, 300, 600])


def test_value_score_is_net_of_returns():
    feats = frame(
        {
            "returned_a_quarter": {"monetary_all": 1000, "return_rate_value": 0.25},
            # returned more than bought in the window (old purchases): worth nothing, not less
            "returned_everything": {"monetary_all": 1000, "return_rate_value": 1.7},
        }
    )
    assert value_score(feats).tolist() == pytest.approx([750 * 365 / 400, 0.0])


def test_tiers_with_fixed_thresholds():
    feats = frame(
        {
            "a": {"monetary_all": 299.0, "tenure_days": 365},
            "b": {"monetary_all": 300.0, "tenure_days": 365},
            "c": {"monetary_all": 699.0, "tenure_days": 365},
            "d": {"monetary_all": 700.0, "tenure_days": 365},
        }
    )
    lc = assign_lifecycle(feats, tier_thresholds=(300.0, 700.0))
    assert lc["tier"].astype(str).to_dict() == {"a": "low", "b": "mid", "c": "mid", "d": "high"}


def test_one_customer_scored_online_keeps_the_snapshot_tier():
    snapshot = tier_frame()
    one = snapshot.loc[["c05"]]  # score 500: mid in the snapshot (460 <= 500 < 820)
    assert assign_lifecycle(snapshot).loc["c05", "tier"] == "mid"
    assert assign_lifecycle(one, tier_thresholds=(460.0, 820.0)).loc["c05", "tier"] == "mid"
    # alone, its own quantiles make it "high": why the thresholds can be fixed
    assert assign_lifecycle(one).loc["c05", "tier"] == "high"
