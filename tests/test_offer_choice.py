"""Offer choice by the offer-uplift model or by the rules: hand-made customers, known answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from service.config import OFFER_TYPES, load_settings
from service.engine import (
    HILLSTROM_UPLIFT,
    NO_OFFER_MODEL,
    ContactHistory,
    CustomerView,
    ModelScores,
    decide,
    offer_model_status,
    priorities,
)

LONDON = ZoneInfo("Europe/London")
SNAPSHOT = datetime(2011, 9, 1, tzinfo=LONDON).astimezone(UTC)
NOW = datetime(2011, 9, 5, 10, 0, tzinfo=LONDON).astimezone(UTC)
COLUMNS = ("recency_days", "basket_value")
FEATURES = {
    "recency_days": 100.0,
    "tenure_days": 700.0,
    "purchase_days": 8.0,
    "basket_value": 100.0,
    "monetary_all": 800.0,
    "price_index": 1.0,
    "top_family_share": 0.3,
    "return_rate_value": 0.0,
    "days_since_return": math.nan,
    "usual_hour": math.nan,
    "gap_shrunk": 20.0,
}
E_MAIL_COST = 0.002


@pytest.fixture(scope="module")
def settings():
    return load_settings().model_copy(update={"holdout_share": 0.0})


def tau(**arms: float) -> tuple[float, ...]:
    """Predicted uplift per OFFER_TYPES (NaN where the model has no arm)."""
    return tuple(arms.get(o, math.nan) for o in OFFER_TYPES)


def model(settings, arms=("value_reminder", "low_threshold_coupon", "exclusive_discount")):
    return offer_model_status("7", arms, COLUMNS, settings, list(FEATURES))


def run(settings, stage="sleeping", uplift=None, offer_model=None):
    view = CustomerView(
        customer_id="C1",
        features=FEATURES,
        stage=stage,
        tier="high",
        value_score=500.0,
        snapshot_at=SNAPSHOT,
    )
    scores = ModelScores(
        p_churn=0.7,
        p_buy_30d=0.1,
        expected_days=20.0,
        predicted_value=300.0,
        offer_uplift=uplift,
        offer_model=offer_model,
    )
    return decide(view, scores, [], ContactHistory(), settings, NOW)


# --------------------------------------------------------------------------- applicability


def test_hillstrom_model_does_not_apply_to_the_brand_offers(settings):
    status = offer_model_status(
        "2", ("mens_email", "womens_email"), ("recency", "history"), settings, list(FEATURES)
    )
    assert not status.applies
    assert status.label == (
        "offer_rules: no offer_uplift model for this brand's offers "
        "(champion v2 covers mens_email, womens_email)"
    )


def test_brand_model_applies_when_arms_and_columns_fit(settings):
    status = model(settings)
    assert status.applies and status.label == "offer_uplift_model v7"
    assert status.arms == ("value_reminder", "low_threshold_coupon", "exclusive_discount")


def test_brand_model_needs_its_feature_columns_and_catalogue_offers(settings):
    short = offer_model_status("7", ("value_reminder",), ("recency_days", "eng_sms"), settings, [])
    assert not short.applies and "recency_days, eng_sms" in short.label
    no_coupons = settings.model_copy(
        update={"offers": [o for o in settings.offers if o.type != "exclusive_discount"]}
    )
    outside = model(no_coupons)
    assert not outside.applies and outside.label.startswith("offer_rules: no offer_uplift model")


# --------------------------------------------------------------------------- decide()


def test_the_largest_net_uplift_wins(settings):
    # p0 0.1, basket 100, margin 0.3; net = tau * 30 - cost_rate * 100 * (0.1 + tau):
    # value reminder 0.30, coupon (8%) 1.80 - 1.28 = 0.52, discount (18%) 2.40 - 3.24 < 0
    d = run(
        settings,
        uplift=tau(value_reminder=0.01, low_threshold_coupon=0.06, exclusive_discount=0.08),
        offer_model=model(settings),
    )
    assert d.offer.type == "low_threshold_coupon"
    assert d.economics.uplift == pytest.approx(0.06)
    assert d.economics.incentive_cost == pytest.approx(0.08 * 100 * 0.16)
    assert d.priority == pytest.approx(0.52 - E_MAIL_COST, abs=1e-4)
    assert d.reasons["what"][0] == (
        "offer_uplift_model v7: low_threshold_coupon uplift +0.060 (net +0.52 GBP)"
    )


def test_no_offer_wins_when_nothing_pays(settings):
    d = run(
        settings,
        uplift=tau(value_reminder=-0.01, low_threshold_coupon=0.01, exclusive_discount=0.02),
        offer_model=model(settings),
    )
    assert d.offer.type == "none"
    assert d.offer.discount_pct == 0 and d.economics.incentive_cost == 0
    # "none" has no arm: a plain reminder is valued by the rule (m = 1)
    assert d.economics.uplift == pytest.approx(HILLSTROM_UPLIFT * 0.9, abs=1e-6)
    assert d.reasons["what"][0] == (
        "offer_uplift_model v7: no offer pays (best value_reminder uplift -0.010, "
        "net -0.30 GBP); no offer: plain reminder"
    )


def test_rules_choose_without_a_model_or_an_arm_for_the_intent(settings):
    uplift = tau(value_reminder=0.2, exclusive_discount=0.3)
    rules = run(settings)
    assert rules.offer.type == "value_reminder"
    assert NO_OFFER_MODEL.label == "offer_rules: no offer_uplift champion"
    assert rules.reasons["what"][0] == NO_OFFER_MODEL.label
    hill = offer_model_status("2", ("mens_email",), (), settings, list(FEATURES))
    ignored = run(settings, uplift=uplift, offer_model=hill)
    assert ignored.offer.type == "value_reminder"
    assert ignored.economics.uplift == pytest.approx(HILLSTROM_UPLIFT * 0.9, abs=1e-6)
    assert ignored.reasons["what"][0] == hill.label
    # an active customer's intent (replenishment) has no arm in this model: rules
    arms = ("value_reminder", "exclusive_discount")
    active = run(settings, "active", uplift, model(settings, arms))
    assert active.offer.type == "replenishment_reminder"
    assert active.reasons["what"][0] == (
        "offer_rules: offer_uplift_model v7 has no arm for intent replenishment "
        "(covers value_reminder, exclusive_discount)"
    )


# --------------------------------------------------------------------------- priorities()


def test_vectorised_priorities_choose_the_same_offers(settings):
    cases = [
        ("sleeping", tau(value_reminder=0.01, low_threshold_coupon=0.06, exclusive_discount=0.08)),
        ("sleeping", tau(value_reminder=-0.01, low_threshold_coupon=0.01, exclusive_discount=0.02)),
        ("active", tau(value_reminder=0.2, exclusive_discount=0.3)),
    ]
    snapshot = pd.DataFrame(
        [FEATURES | {"stage": stage} for stage, _ in cases], index=["A", "B", "C"]
    )
    scores = pd.DataFrame({"p_buy_30d": [0.1, 0.1, 0.1]}, index=snapshot.index)
    pr = priorities(snapshot, scores, settings, offer_uplift=np.array([u for _, u in cases]))
    assert [OFFER_TYPES[o] for o in pr.offer] == [
        "low_threshold_coupon",
        "none",
        "replenishment_reminder",
    ]
    assert pr.offer_by_model.tolist() == [True, True, False]
    status = model(settings)
    for i, (stage, uplift) in enumerate(cases):
        d = run(settings, stage, uplift, status)
        assert d.offer.type == OFFER_TYPES[pr.offer[i]]
        assert pr.priority[i] == pytest.approx(d.priority, abs=1e-4)
    rules = priorities(snapshot, scores, settings)
    assert [OFFER_TYPES[o] for o in rules.offer] == [
        "value_reminder",
        "value_reminder",
        "replenishment_reminder",
    ]
    assert not rules.offer_by_model.any()
