"""Churn / next-purchase models: calibration, purged time split, persistence, learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.labels import build_labels, build_training_frame, training_cutoffs
from features.snapshot import build_features, model_columns
from servable.propensity import (
    BG_FEATURES,
    ChurnModel,
    GBMParams,
    NextPurchaseModel,
    _split_by_time,
    bgnbd_inputs,
    fit_platt,
    load_model,
)
from training.metrics import roc_auc

FAST = GBMParams(max_rounds=200, early_stopping=20)


def test_bgnbd_inputs_known_answer():
    f = pd.DataFrame(
        {"purchase_days": [1.0, 3.0], "tenure_days": [14.0, 70.0], "recency_days": [14.0, 7.0]}
    )
    x, t_x, big_t = bgnbd_inputs(f)
    np.testing.assert_allclose(x, [0.0, 2.0])
    np.testing.assert_allclose(t_x, [0.0, 9.0])  # (70 - 7) / 7 weeks
    np.testing.assert_allclose(big_t, [2.0, 10.0])


def test_platt_recovers_a_known_logistic_map():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.02, 0.98, 50_000)
    z = np.log(raw / (1 - raw))
    y = (rng.uniform(size=raw.size) < 1 / (1 + np.exp(-(2.0 * z - 0.5)))).astype(float)
    a, b = fit_platt(raw, y)
    assert a == pytest.approx(2.0, abs=0.08)
    assert b == pytest.approx(-0.5, abs=0.05)


def test_temperature_scaling_keeps_the_base_rate_of_the_raw_score():
    """Without an intercept only the slope is fitted: an over-confident score (true slope
    0.5) is flattened, and the fold's own base rate is not imposed (b stays 0)."""
    rng = np.random.default_rng(2)
    raw = rng.uniform(0.02, 0.98, 50_000)
    z = np.log(raw / (1 - raw))
    y = (rng.uniform(size=raw.size) < 1 / (1 + np.exp(-(0.5 * z + 1.0)))).astype(float)
    a, b = fit_platt(raw, y, intercept=False)
    assert b == 0.0
    assert 0.3 < a < 0.7


def test_split_is_time_ordered_and_purged():
    cut = pd.to_datetime(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01", "2021-05-01"])
    frame = pd.DataFrame({"cutoff": np.repeat(cut, 2)})
    tr, va = _split_by_time(frame, horizon=90)
    assert va.tolist() == [False] * 8 + [True] * 2
    # only cutoffs whose 90-day label window ends by 2021-05-01 train (2021-01-01 → 04-01;
    # 2021-02-01 + 90 d = 2021-05-02 overlaps the validation window)
    assert tr.tolist() == [True] * 2 + [False] * 8
    with pytest.raises(ValueError, match="label window"):
        _split_by_time(frame.iloc[6:], horizon=90)


@pytest.fixture(scope="module")
def trained(synthetic_tx):
    cutoff = pd.Timestamp("2021-03-01")
    cutoffs = training_cutoffs(synthetic_tx, cutoff, horizon=60, step_days=20, max_cutoffs=8)
    frame = build_training_frame(synthetic_tx, cutoffs, horizon=60, observed_until=cutoff)
    churn = ChurnModel(horizon=60, params=FAST).fit(frame, model_columns(frame))
    nextp = NextPurchaseModel(horizon=60, params=FAST).fit(
        frame, model_columns(frame), bgnbd=churn.bgnbd
    )
    return churn, nextp, cutoff


def test_churn_model_learns_the_signal_and_is_calibrated(trained, synthetic_tx):
    churn, _, cutoff = trained
    feats = build_features(synthetic_tx, cutoff)
    y = build_labels(synthetic_tx, cutoff, feats.index, 60)["churn"].to_numpy()
    p = churn.predict(feats)
    assert p.shape == (len(feats),)
    assert ((p > 0) & (p < 1)).all()
    assert roc_auc(y, p) > 0.8
    assert abs(p.mean() - y.mean()) < 0.15
    assert churn.feature_names[-len(BG_FEATURES) :] == BG_FEATURES
    assert "orders_all" not in churn.feature_names  # all-time totals are not model inputs


def test_next_purchase_outputs(trained, synthetic_tx):
    _, nextp, cutoff = trained
    out = nextp.predict(build_features(synthetic_tx, cutoff))
    assert list(out.columns) == ["p_buy_30d", "expected_days"]
    assert out["expected_days"].between(0, 60).all()
    assert out["p_buy_30d"].between(0, 1).all()


def test_save_load_round_trip_is_identical(trained, synthetic_tx, tmp_path):
    churn, nextp, cutoff = trained
    feats = build_features(synthetic_tx, cutoff)
    c2 = load_model(churn.save(tmp_path / "churn"))
    n2 = load_model(nextp.save(tmp_path / "np"))
    np.testing.assert_array_equal(c2.predict(feats), churn.predict(feats))
    pd.testing.assert_frame_equal(n2.predict(feats), nextp.predict(feats))


def test_missing_snapshot_column_is_a_clear_error(trained, synthetic_tx):
    churn, _, cutoff = trained
    feats = build_features(synthetic_tx, cutoff).drop(columns=["gap_shrunk"])
    with pytest.raises(ValueError, match="gap_shrunk"):
        churn.predict(feats)
