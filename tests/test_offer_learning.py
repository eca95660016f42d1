"""Learning the brand's offer uplift from attributed decisions: hand-made frames, known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.contracts import validate_transactions
from features.loaders import CleaningReport, Loaded
from features.snapshot import build_features, model_columns
from training.offer_learning import (
    CampaignTable,
    OfferLearningConfig,
    arm_rows,
    campaign_table,
    decision_snapshots,
    fit_brand_uplift,
    snapshot_features,
)
from training.retrain import attribution_summary, with_event_orders

SNAP = pd.Timestamp("2011-09-01 00:00", tz="Europe/London").tz_convert("UTC")
WINDOW = timedelta(days=14)
UNTIL = datetime(2011, 12, 1, tzinfo=UTC)


def log() -> pd.DataFrame:
    rows = [
        ("C1", "o1", "2011-06-01 10:00", "A1", 2, 5.0),
        ("C1", "o2", "2011-08-01 10:00", "A2", 1, 7.0),
        ("C2", "o3", "2011-05-01 11:00", "B1", 3, 2.0),
        ("C3", "o4", "2011-07-15 12:00", "A1", 1, 5.0),
        ("C4", "o5", "2011-08-20 09:00", "B1", 4, 2.0),
        ("C9", "o9", "2011-09-02 09:00", "B1", 4, 2.0),  # after the snapshot: not a feature
    ]
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    )
    return validate_transactions(df.assign(ts=pd.to_datetime(df["ts"])), "hand-made log")


def attributed() -> pd.DataFrame:
    """Decisions as core.attribution.attribute returns them (only the columns used)."""
    at = SNAP + pd.Timedelta(days=5)
    rows = [
        # id, customer, campaign, decided, holdout, revive, contact, offer, converted, revenue
        ("d1", "C1", "life", at, False, True, True, "value_reminder", True, 20.0),
        ("d2", "C2", "life", at, False, True, True, "value_reminder", False, 0.0),
        ("d3", "C3", "life", at, True, True, False, "value_reminder", True, 15.0),
        ("d4", "C4", "life", at, True, True, False, "low_threshold_coupon", False, 0.0),
        ("d5", "C1", "life", at, False, False, False, "value_reminder", False, 0.0),
        ("d6", "C2", "life", at, False, True, False, "value_reminder", False, 0.0),
        ("d7", "C3", "life", SNAP - pd.Timedelta(hours=1), False, True, True, "none", 0, 0.0),
        ("d8", "C4", "life", pd.Timestamp(UNTIL) - pd.Timedelta(days=3), True, True, False,
         "value_reminder", False, 0.0),
        ("d9", "C1", "promo", at, False, True, True, "exclusive_discount", True, 30.0),
        ("d10", "C7", "life", at, False, True, True, "value_reminder", True, 10.0),
    ]  # fmt: skip
    cols = ["decision_id", "customer_id", "campaign_id", "decided_at", "holdout", "revive"]
    cols += ["contact", "offer_type", "converted", "revenue"]
    df = pd.DataFrame(rows, columns=cols)
    return df.assign(converted=df["converted"].astype(bool), orders=df["converted"].astype(int))


def snapshots(a: pd.DataFrame) -> pd.Series:
    return pd.Series([SNAP] * len(a), index=a["decision_id"], name="snapshot_at")


def test_decision_snapshots_come_from_the_payload():
    decisions = pd.DataFrame(
        {
            "decision_id": ["x", "y"],
            "payload": [{"snapshot_at": "2011-08-31T23:00:00Z"}, {}],
        }
    )
    snaps = decision_snapshots(decisions)
    assert snaps["x"] == pd.Timestamp("2011-08-31 23:00", tz="UTC")
    assert pd.isna(snaps["y"])


def test_campaign_table_keeps_treated_and_holdout_with_point_in_time_features():
    tx = log()
    feats = snapshot_features(tx, [SNAP], "Europe/London")
    assert list(feats) == [SNAP]
    expected = build_features(tx, pd.Timestamp("2011-09-01"))
    assert "C9" not in expected.index  # its only order is after the snapshot
    table = campaign_table(
        attributed(), snapshots(attributed()), feats, window=WINDOW, observed_until=UNTIL
    )
    f = table.frame
    assert f["decision_id"].tolist() == ["d1", "d2", "d3", "d4"]
    assert f["treatment"].tolist() == ["value_reminder", "value_reminder", "control", "control"]
    assert f["policy_offer"].tolist() == [
        "value_reminder",
        "value_reminder",
        "value_reminder",
        "low_threshold_coupon",
    ]
    assert f["converted"].tolist() == [1, 0, 1, 0]
    assert table.feature_columns == model_columns(expected)
    cols = table.feature_columns
    pd.testing.assert_frame_equal(
        f[cols].reset_index(drop=True),
        expected.loc[["C1", "C2", "C3", "C4"], cols].reset_index(drop=True),
    )
    assert table.dropped == {
        "not eligible (revive false)": 1,
        "eligible but not contacted (no channel)": 1,
        "decided before its snapshot (features would leak)": 1,
        "attribution window still open": 1,
        "campaign without both treated and hold-out": 1,
        "customer not in its snapshot": 1,
    }
    matched = arm_rows(table, "value_reminder")
    assert matched["decision_id"].tolist() == ["d1", "d2", "d3"]
    assert matched["t"].tolist() == [1, 1, 0]
    assert arm_rows(table, "value_reminder", matched_control=False)["t"].tolist() == [1, 1, 0, 0]


def _synthetic_table(n: int = 800, n_small: int = 30, seed: int = 3) -> CampaignTable:
    """Arm A: converts 0.5 vs 0.2 (control) where x0 > 0, 0.2 vs 0.2 elsewhere; arm B: tiny."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=2 * n + n_small)
    x1 = rng.normal(size=2 * n + n_small)
    treatment = np.array(["A"] * n + ["control"] * n + ["B"] * n_small, dtype=object)
    p = np.where((treatment == "A") & (x0 > 0), 0.5, 0.2)
    converted = (rng.random(len(p)) < p).astype(int)
    policy = np.where(treatment == "B", "B", "A")
    policy[n : n + n_small] = "B"  # a few control rows whose policy offer was B
    frame = pd.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(len(p))],
            "customer_id": [f"c{i}" for i in range(len(p))],
            "campaign_id": "life",
            "treatment": treatment,
            "policy_offer": policy,
            "converted": converted,
            "revenue": converted * 20.0,
            "x0": x0,
            "x1": x1,
        }
    )
    return CampaignTable(frame, ["x0", "x1"], {})


def test_brand_uplift_fits_arms_with_enough_rows_and_skips_the_others():
    table = _synthetic_table()
    result = fit_brand_uplift(table, OfferLearningConfig(n_splits=2))
    arms = result.arms.set_index("arm")
    assert result.skipped == {"B": "30 treated / 30 control rows, below the minimum 200 / 200"}
    assert arms.loc["B", "reason"].startswith("skipped") and not arms.loc["B", "fitted"]
    assert result.offer is not None and result.offer.arms == ["A"]
    f = table.frame
    t = f[f.treatment == "A"]
    c = f[(f.treatment == "control") & (f.policy_offer == "A")]
    assert arms.loc["A", "treated"] == len(t) and arms.loc["A", "control"] == len(c)
    observed = t["converted"].mean() - c["converted"].mean()
    assert arms.loc["A", "observed_uplift"] == pytest.approx(observed)
    assert arms.loc["A", "predicted_uplift"] == pytest.approx(observed, abs=0.05)
    assert result.gate_value == pytest.approx(arms.loc["A", "qini_mean"])
    assert result.gate_value > 0  # the learner ranks by the real heterogeneity
    u = result.offer.predict(pd.DataFrame({"x0": [1.5, -1.5], "x1": [0.0, 0.0]}))
    assert u["uplift_A"].iloc[0] > u["uplift_A"].iloc[1] + 0.1


# --------------------------------------------------------------------------- retrain helpers


def test_attribution_summary_counts_treated_and_holdout():
    a = attributed().iloc[:4]
    purchases = pd.DataFrame({"source": ["events", "events", "log"]})
    s = attribution_summary(a, purchases)
    assert (s["decisions"], s["treated"], s["holdout"]) == (4, 2, 2)
    assert (s["treated_conversions"], s["holdout_conversions"]) == (1, 1)
    assert s["treated_conversion_rate"] == 0.5 and s["observed_uplift"] == 0.0
    assert (s["purchases_from_events"], s["purchases_from_log"]) == (2, 1)


def test_event_purchases_become_marked_orders_of_the_training_log():
    tx = log()
    report = CleaningReport(source="hand-made", rows_in=len(tx), rows_kept=len(tx), sha256="ab")
    loaded = Loaded(tx, report, pd.DataFrame(columns=["item_id", "name"]))
    purchases = pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "ts": pd.to_datetime(
                ["2011-09-10 09:00Z", "2011-09-11 12:30Z", "2011-09-12 08:00Z"], utc=True
            ),
            "value": [25.0, 12.5, 99.0],
            "order_id": ["k1", None, "o4"],
            "source": ["events", "events", "log"],
        }
    )
    out = with_event_orders(loaded, purchases, "Europe/London")
    tr = out.transactions
    assert len(tr) == len(tx) + 2
    ev = tr[tr["source"] == "events"]
    assert ev["order_id"].tolist() == ["event:k1", "event:C2@2011-09-11T13:30:00"]
    assert ev["ts"].tolist() == [pd.Timestamp("2011-09-10 10:00"), pd.Timestamp("2011-09-11 13:30")]
    assert ev["unit_price"].tolist() == [25.0, 12.5] and (ev["quantity"] == 1).all()
    assert ev["item_id"].isna().all()
    assert (tr["source"] == "log").sum() == len(tx)
    assert out.report.sha256 != "ab" and out.report.rows_kept == len(tr)
    feats = build_features(tr, pd.Timestamp("2011-09-12"))
    assert feats.loc["C1", "orders_all"] == 3  # the event counts as an order
