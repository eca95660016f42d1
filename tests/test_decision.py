"""Unit tests of the decision engine on hand-made customers with known answers."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from core.store import ContactRecord, Engagement
from service.config import CHANNELS, OFFER_TYPES, Campaign, load_settings
from service.engine import (
    DEFAULT_PARAMS,
    HILLSTROM_UPLIFT,
    ContactHistory,
    CustomerView,
    Decision,
    JourneyAsk,
    ModelScores,
    PriorityInputs,
    Profile,
    RowEconomics,
    UnknownCampaign,
    count_contacts,
    decide_data,
    economics_matrix,
    encode_decision,
    holdout_draw,
    in_holdout,
    priorities,
    row_economics,
)
from service.messages import sms_length

LONDON = ZoneInfo("Europe/London")
SNAPSHOT = datetime(2011, 9, 1, tzinfo=LONDON).astimezone(UTC)
NOW = datetime(2011, 9, 5, 10, 0, tzinfo=LONDON).astimezone(UTC)  # Monday 10:00 London
DAY_S = 86400.0


@pytest.fixture(scope="module")
def settings():
    """The packaged policy with the hold-out off (hold-out tests set their own share)."""
    return load_settings().model_copy(update={"holdout_share": 0.0})


def features(**over) -> dict[str, float]:
    base = {
        "recency_days": 100.0,
        "tenure_days": 700.0,
        "purchase_days": 8.0,
        "basket_value": 100.0,
        "monetary_all": 800.0,
        "price_index": 1.0,
        "top_family_share": 0.3,
        "return_rate_value": 0.0,
        "return_orders": 0.0,
        "days_since_return": math.nan,
        "usual_hour": math.nan,
        "gap_shrunk": 20.0,
    }
    base.update(over)
    return base


def view(stage="sleeping", *, feats=None, bought=None, returned=None, profile=None, **kw):
    return CustomerView(
        customer_id=kw.pop("customer_id", "C1"),
        features=feats or features(),
        stage=stage,
        tier="high",
        value_score=500.0,
        snapshot_at=SNAPSHOT,
        bought=bought or {},
        returned=returned or {},
        profile=profile or Profile(),
        **kw,
    )


def scores(p_buy=0.1, days=20.0, p_churn=0.7) -> ModelScores:
    return ModelScores(p_churn=p_churn, p_buy_30d=p_buy, expected_days=days, predicted_value=300)


def run(settings, v=None, s=None, candidates=(), history=None, now=NOW, **kw):
    """decide(), checking on every scenario that the served encoding of the plain data
    (``encode_decision(decide_data(...))``) is the validated Decision's JSON, byte for byte."""
    data = decide_data(
        v or view(),
        s or scores(),
        list(candidates),
        history or ContactHistory(),
        settings,
        now,
        **kw,
    )
    decision = Decision.model_validate(data)
    assert encode_decision(data) == decision.model_dump_json().encode()
    return decision


def contact(channel: str, at: datetime) -> ContactRecord:
    return ContactRecord("C1", channel, at, "event")


def days_ago(n: float, at: datetime = NOW) -> float:
    return at.timestamp() - n * DAY_S


ALL_CONSENTS = Profile(
    consents={c: True for c in CHANNELS},
    identifiers={"phone": "+447700900000", "wechat_openid": "o-abc"},
)


# --------------------------------------------------------------------------- priority


def test_priority_is_the_documented_formula(settings):
    d = run(settings)
    # p0 = 0.1, basket 100, margin 0.3, e-mail at the base rate, value reminder (m = 1)
    uplift = HILLSTROM_UPLIFT * 1.0 * 1.0 * (1 - 0.1)
    expected = uplift * 0.3 * 100 - 0.0 - settings.channel("email").cost
    assert d.economics.uplift == pytest.approx(uplift, abs=1e-6)
    assert d.priority == pytest.approx(expected, abs=1e-4)
    assert d.economics.p_buy_with_contact == pytest.approx(0.1 + uplift, abs=1e-5)
    assert d.revive and d.contact and d.channel == "email"
    assert d.offer.type == "value_reminder"  # coupons pay their discount to the sure things
    assert d.currency == "GBP"


def test_one_customer_economics_keep_the_vectorised_nan_and_edge_semantics(settings):
    """Unknown purchase probability (NaN) stays NaN, a lost customer (reach 0) gains
    nothing, and rows the offer-uplift model decides are refused by the float path."""
    rows = PriorityInputs(
        index=np.array(["nan", "lost", "plain"]),
        stage=np.array([4, 4, 0], np.int8),
        p0=np.array([np.nan, 0.2, 0.05]),
        basket=np.array([50.0, 80.0, 120.0]),
        recency=np.array([100.0, 2000.0, 10.0]),
        purchase_days=np.array([3.0, 5.0, 1.0]),
        price_index=np.array([1.0, 0.7, 1.2]),
        top_family_share=np.array([0.2, 0.9, 0.4]),
        return_rate_value=np.zeros(3),
        days_since_return=np.full(3, np.nan),
    )
    q = np.array([[0.05, 0.2, 0.0, 1.0]] * 3)
    reach = np.array([1.0, 0.0, 0.8])
    mat = economics_matrix(
        rows, settings, DEFAULT_PARAMS, q, np.array([1, 3, 0]), np.array([0, 2, 5]), reach=reach
    )
    for pos, (cause, intent) in enumerate([(1, 0), (3, 2), (0, 5)]):
        fast = row_economics(
            rows.take(slice(pos, pos + 1)),
            settings,
            DEFAULT_PARAMS,
            q[pos].tolist(),
            cause,
            intent,
            reach[pos],
        )
        slow = RowEconomics.of(mat, pos)
        for field in ("priority", "uplift", "incentive", "contact", "offer_ok", "pref"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
        assert fast.value == slow.value
    nan_row = row_economics(rows.take(slice(0, 1)), settings, DEFAULT_PARAMS, [0.1] * 4, 1, 0, 1.0)
    assert all(math.isnan(u) for per_offer in nan_row.uplift for u in per_offer)
    lost = row_economics(rows.take(slice(1, 2)), settings, DEFAULT_PARAMS, [0.1] * 4, 3, 2, 0.0)
    assert all(u == 0.0 for per_offer in lost.uplift for u in per_offer)
    modelled = replace(rows.take(slice(2, 3)), offer_uplift=np.zeros((1, len(OFFER_TYPES))))
    with pytest.raises(ValueError, match="rules only"):
        row_economics(modelled, settings, DEFAULT_PARAMS, [0.1] * 4, 0, 5, 1.0)


def test_coupon_wins_only_where_few_would_buy_anyway(settings):
    price_sensitive = features(price_index=0.6, basket_value=200.0, recency_days=200.0)
    few = run(settings, view(feats=price_sensitive), scores(p_buy=0.001))
    many = run(settings, view(feats=price_sensitive), scores(p_buy=0.3))
    assert few.why_asleep.primary == "price_sensitivity"
    assert few.offer.type in ("low_threshold_coupon", "exclusive_discount")
    assert few.economics.incentive_cost > 0
    assert many.offer.type == "value_reminder"


def test_vectorised_priorities_match_single_decisions(settings):
    rng = np.random.default_rng(3)
    n = 60
    stages = rng.choice(["new", "active", "loyal", "at_risk", "sleeping", "lost"], n)
    frame = pd.DataFrame(
        {
            "recency_days": rng.uniform(1, 600, n),
            "tenure_days": rng.uniform(400, 700, n),
            "purchase_days": rng.integers(1, 20, n).astype(float),
            "basket_value": rng.uniform(5, 900, n),
            "monetary_all": rng.uniform(10, 9000, n),
            "price_index": rng.uniform(0.5, 1.3, n),
            "top_family_share": rng.uniform(0.1, 1.0, n),
            "return_rate_value": rng.choice([0.0, 0.0, 0.4], n),
            "days_since_return": rng.choice([np.nan, 20.0, 200.0], n),
            "usual_hour": 14.0,
            "gap_shrunk": 30.0,
            "stage": stages,
        },
        index=[f"C{i}" for i in range(n)],
    )
    sc = pd.DataFrame({"p_buy_30d": rng.uniform(0, 0.9, n)}, index=frame.index)
    pr = priorities(frame, sc, settings)
    for i, cid in enumerate(frame.index):
        row = frame.iloc[i]
        v = view(
            str(row["stage"]),
            feats={k: float(x) for k, x in row.items() if k != "stage"},
            customer_id=cid,
        )
        d = run(settings, v, scores(p_buy=float(sc.iat[i, 0])))
        assert d.priority == pytest.approx(pr.priority[i], abs=2e-4), cid
        assert d.offer.type == OFFER_TYPES[pr.offer[i]], cid
        assert d.channel == CHANNELS[pr.channel[i]], cid
        assert d.revive == bool(pr.revive[i]), cid


def test_vectorised_ranking_prefers_bigger_baskets(settings):
    frame = pd.DataFrame(
        {"basket_value": [10.0, 100.0, 1000.0], "recency_days": 200.0, "stage": "sleeping"},
        index=["a", "b", "c"],
    )
    pr = priorities(frame, pd.DataFrame({"p_buy_30d": [0.05] * 3}, index=frame.index), settings)
    assert list(np.argsort(-pr.priority)) == [2, 1, 0]


# --------------------------------------------------------------------------- why asleep


@pytest.mark.parametrize(
    ("over", "history", "cause", "intent"),
    [
        (
            {"days_since_return": 10.0, "return_rate_value": 0.3, "return_orders": 2.0},
            None,
            "returns",
            "service_recovery",
        ),
        (
            {},
            ContactHistory(engagement={"email": Engagement(sends=6, opens=0)}),
            "message_fatigue",
            "win_back",
        ),
        ({"price_index": 0.7}, None, "price_sensitivity", "win_back"),
        ({"top_family_share": 0.9, "purchase_days": 2.0}, None, "need_met", "new_arrivals"),
        ({}, None, "forgotten", "win_back"),
    ],
)
def test_why_asleep_names_the_cause_with_evidence(settings, over, history, cause, intent):
    d = run(settings, view(feats=features(**over)), history=history)
    assert d.why_asleep.primary == cause
    assert d.intent == intent
    top = d.why_asleep.causes[0]
    assert top.cause == cause and top.evidence
    assert any(cause in r for r in d.reasons["why"])


def test_contacted_customers_are_not_forgotten_and_awake_ones_not_asleep(settings):
    hist = ContactHistory(contacts=[contact("email", NOW - timedelta(days=20))])
    d = run(settings, history=hist)
    assert "forgotten" not in [c.cause for c in d.why_asleep.causes]
    assert run(settings, view("active")).why_asleep is None


# --------------------------------------------------------------------------- channel


def test_only_implied_consent_by_default(settings):
    d = run(settings)
    options = {o.channel: o for o in d.channel_options}
    assert d.channel == "email" and options["email"].eligible
    for ch in ("sms", "wechat", "app_push"):
        assert not options[ch].eligible and options[ch].reason == "no_consent"


def test_no_consent_means_no_channel_and_no_revival(settings):
    hist = ContactHistory(consents={"email": False})
    d = run(settings, history=hist)
    assert d.channel is None and not d.revive and not d.contact and d.message is None
    assert "no_channel" in d.reasons["channel"]
    assert "email:consent_revoked" in d.reasons["channel"]


def test_consented_channel_needs_its_identifier(settings):
    no_phone = Profile(consents={"sms": True})
    d = run(settings, view(profile=no_phone), channels=["sms"])
    assert d.channel is None
    assert {o.channel: o.reason for o in d.channel_options}["sms"] == "no_phone"
    with_phone = Profile(consents={"sms": True}, identifiers={"phone": "+447700900000"})
    assert run(settings, view(profile=with_phone), channels=["sms"]).channel == "sms"
    assert {o.channel: o.reason for o in d.channel_options}["email"] == "not_requested"


def test_frequency_caps_with_reasons(settings):
    # e-mail: 1 a day, 3 a week; all channels: 4 a week (policy.yaml)
    v = view(profile=ALL_CONSENTS)
    same_day = ContactHistory(contacts=[contact("email", NOW - timedelta(hours=2))])
    d = run(settings, v, history=same_day)
    assert {o.channel: o.reason for o in d.channel_options}["email"] == "cap_channel_day"
    assert d.channel not in (None, "email")
    week = ContactHistory(contacts=[contact("email", NOW - timedelta(days=n)) for n in (2, 3, 4)])
    d = run(settings, v, history=week, channels=["email"])
    assert d.channel is None and "email:cap_channel_week" in d.reasons["channel"]
    busy = ContactHistory(
        contacts=[contact(ch, NOW - timedelta(days=2)) for ch in ("sms", "wechat", "app_push")]
        + [contact("app_push", NOW - timedelta(days=3))]
    )
    d = run(settings, v, history=busy)
    assert d.channel is None and not d.revive
    assert {o.reason for o in d.channel_options} == {"cap_global_week"}


def test_scheduled_contacts_count_towards_caps(settings):
    counts = count_contacts([contact("email", NOW + timedelta(hours=5))], NOW)
    assert counts.day("email") == 1 and counts.global_week == 1


def test_fatigue_lowers_the_channel_estimate(settings):
    tired = ContactHistory(
        engagement={"email": Engagement(sends=20, opens=0)},
        consents={"app_push": True},
    )
    d = run(settings, history=tired)
    email = {o.channel: o for o in d.channel_options}["email"]
    assert email.engagement < settings.channel("email").base_engagement / 2
    assert d.channel == "app_push"


# --------------------------------------------------------------------------- when


def test_quiet_hours_move_send_at_in_the_customers_zone(settings):
    late = datetime(2011, 9, 5, 22, 30, tzinfo=LONDON).astimezone(UTC)
    d = run(settings, now=late)
    assert d.send_at == datetime(2011, 9, 6, 9, 0, tzinfo=LONDON).astimezone(UTC)
    assert any(r.startswith("quiet_hours") for r in d.reasons["when"])
    # usual hour 14:00 London is 21:00 in Shanghai: quiet there, so 09:00 Shanghai next day
    shanghai = Profile(timezone="Asia/Shanghai")
    d = run(settings, view(feats=features(usual_hour=14.0), profile=shanghai))
    assert d.send_at == datetime(2011, 9, 6, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert d.timezone == "Asia/Shanghai" and d.send_at_local == "2011-09-06T09:00"


def test_usual_hour_and_send_now(settings):
    d = run(settings, view(feats=features(usual_hour=14.0)))
    assert d.send_at == datetime(2011, 9, 5, 14, 0, tzinfo=LONDON)
    d = run(settings, view(feats=features(usual_hour=10.0)))
    assert d.send_at == NOW and "send_now" in d.reasons["when"]
    assert d.send_at >= d.decided_at


def test_active_customers_get_a_reminder_before_the_expected_order(settings):
    d = run(settings, view("active", feats=features(usual_hour=14.0)), scores(p_buy=0.6, days=20))
    expected = SNAPSHOT + timedelta(days=20)
    assert d.scores.expected_next_order == expected.astimezone(LONDON).date()
    day = (expected - timedelta(days=settings.reminder_days_before)).astimezone(LONDON).date()
    assert d.send_at == datetime(day.year, day.month, day.day, 14, tzinfo=LONDON)
    assert any(r.startswith("reminder_before_next_order") for r in d.reasons["when"])
    assert d.intent == "replenishment"


# --------------------------------------------------------------------------- campaigns


def test_blackout_of_a_higher_priority_campaign_blocks_lifecycle_sends(settings):
    inside = datetime(2011, 11, 5, 12, tzinfo=LONDON)
    d = run(settings, now=inside)
    assert d.blocked_by == "double11" and not d.revive and not d.contact
    assert any(r.startswith("blackout:double11") for r in d.reasons["who"])
    # decided before the window, but the send would land inside it
    eve = datetime(2011, 10, 31, 22, 0, tzinfo=LONDON)
    assert run(settings, now=eve).blocked_by == "double11"
    assert run(settings, now=datetime(2011, 10, 20, 12, tzinfo=LONDON)).blocked_by is None


def test_the_reverse_blackout_is_configurable(settings):
    flipped = settings.model_copy(
        update={
            "campaigns": [
                Campaign(
                    id="lifecycle", kind="lifecycle", priority=200, blocks_lower_priority=True
                ),
                Campaign(
                    id="double11",
                    kind="promotion",
                    priority=100,
                    start=datetime(2011, 11, 1, tzinfo=LONDON),
                    end=datetime(2011, 11, 13, tzinfo=LONDON),
                ),
            ]
        }
    )
    inside = datetime(2011, 11, 5, 12, tzinfo=LONDON)
    assert run(flipped, now=inside).blocked_by is None
    promo = run(flipped, now=inside, campaign_id="double11")
    assert promo.blocked_by == "lifecycle" and not promo.revive


def test_unknown_campaign_and_inactive_campaign(settings):
    with pytest.raises(UnknownCampaign, match="lifecycle, double11"):
        run(settings, campaign_id="black-friday")
    d = run(settings, campaign_id="double11")  # its window is November
    assert not d.revive and "campaign_not_active:double11" in d.reasons["who"]


# --------------------------------------------------------------------------- hold-out


def test_holdout_share_within_one_point_and_stable():
    settings = load_settings()
    assert settings.holdout_share == 0.1
    ids = [f"{13000 + i}" for i in range(10_000)]
    share = settings.holdout_share
    flags = [in_holdout(c, "lifecycle", settings.holdout_salt, share) for c in ids]
    assert abs(np.mean(flags) - share) <= 0.01
    again = [in_holdout(c, "lifecycle", settings.holdout_salt, share) for c in ids]
    assert flags == again  # a pure function of (salt, campaign, customer): same after restarts
    other = [in_holdout(c, "double11", settings.holdout_salt, share) for c in ids]
    assert flags != other and abs(np.mean(other) - share) <= 0.01
    for s in (0.05, 0.3):
        assert abs(np.mean([holdout_draw(c, "x", "salt") < s for c in ids]) - s) <= 0.01


def test_holdout_decisions_are_logged_but_not_sent(settings):
    everyone = settings.model_copy(update={"holdout_share": 1.0})
    d = run(everyone)
    assert d.holdout and d.revive and not d.contact
    assert d.channel == "email" and d.message is not None  # what would have been sent
    nobody = settings.model_copy(update={"holdout_share": 0.0})
    assert not run(nobody).holdout


def test_holdout_customers_are_capped_on_their_campaigns_shadow_contacts(settings):
    """A control customer's earlier hold-out decision of this campaign caps them as the
    twin's contact would have; for a treated customer, or another campaign, it is nothing."""
    everyone = settings.model_copy(update={"holdout_share": 1.0})
    shadow = ContactRecord(
        "C1", "email", NOW - timedelta(hours=2), "decision", "h0", "lifecycle", shadow=True
    )
    history = ContactHistory(shadows=[shadow])
    d = run(everyone, history=history, channels=["email"])
    assert d.channel is None and "email:cap_channel_day" in d.reasons["channel"]
    nobody = settings.model_copy(update={"holdout_share": 0.0})
    assert run(nobody, history=history, channels=["email"]).channel == "email"
    other = ContactHistory(shadows=[replace(shadow, campaign_id="double11")])
    assert run(everyone, history=other, channels=["email"]).channel == "email"


# --------------------------------------------------------------------------- items


def test_returned_items_are_never_offered(settings):
    bought = {"A": (days_ago(200), 9), "B": (days_ago(150), 5), "C": (days_ago(400), 1)}
    returned = {"A": days_ago(10), "X": days_ago(89)}
    d = run(settings, view(bought=bought, returned=returned), candidates=["X", "Y", "Z"])
    items = [i.item_id for i in d.offer.items]
    assert items and "A" not in items and "X" not in items
    assert d.reasons["what"].count("excluded_returned_90d:1") == 1
    # cross-sell intents use the candidates: the returned one is skipped there too
    d = run(settings, view("new", bought=bought, returned=returned), candidates=["X", "Y", "Z"])
    assert [i.item_id for i in d.offer.items] == ["Y", "Z"]


def test_items_returned_long_ago_may_come_back_but_recent_buys_do_not(settings):
    bought = {"A": (days_ago(300), 9), "B": (days_ago(5), 7)}
    d = run(settings, view(bought=bought, returned={"A": days_ago(120)}))
    assert [i.item_id for i in d.offer.items] == ["A"]
    assert "excluded_bought_30d:1" in d.reasons["what"]


def test_returned_items_never_offered_random_cases(settings):
    rng = random.Random(7)
    catalogue = [f"I{i}" for i in range(30)]
    stages = ["new", "active", "loyal", "at_risk", "sleeping", "lost"]
    for _ in range(150):
        bought = {
            i: (days_ago(rng.uniform(1, 500)), rng.randint(1, 9)) for i in rng.sample(catalogue, 8)
        }
        returned = {i: days_ago(rng.uniform(0, 89.9)) for i in rng.sample(catalogue, 6)}
        cands = rng.sample(catalogue, 12)
        over = {"days_since_return": 5.0, "return_rate_value": 0.5} if rng.random() < 0.3 else {}
        d = run(
            settings,
            view(rng.choice(stages), feats=features(**over), bought=bought, returned=returned),
            candidates=cands,
        )
        offered = {i.item_id for i in (d.offer.items if d.offer else [])}
        assert not offered & set(returned)


def test_a_purchase_since_the_snapshot_stops_the_revival(settings):
    d = run(settings, view(last_purchase_at=NOW - timedelta(days=2)))
    assert not d.revive and d.stage == "active"
    assert "purchased_since_snapshot" in d.reasons["who"]


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_messages_fit_the_channel_in_both_locales(settings, channel, locale):
    long_names = {f"I{i}": f"VERY LONG DECORATIVE ITEM NAME NUMBER {i} " * 2 for i in range(6)}
    bought = {i: (days_ago(100 + n), 5 - n) for n, i in enumerate(long_names)}
    profile = Profile(
        locale=locale, consents=ALL_CONSENTS.consents, identifiers=ALL_CONSENTS.identifiers
    )
    policy = settings.channel(channel)
    cases = [
        view("sleeping", bought=bought, profile=profile),
        view("active", bought=bought, profile=profile),
        view("loyal", bought=bought, profile=profile),
        view("new", bought=bought, profile=profile),
        view(
            "sleeping",
            feats=features(days_since_return=3.0, return_rate_value=0.5),
            bought=bought,
            profile=profile,
        ),
        view(
            "sleeping",
            feats=features(top_family_share=0.9, purchase_days=2.0),
            bought=bought,
            profile=profile,
        ),
    ]
    intents = set()
    for v in cases:
        d = run(settings, v, candidates=list(long_names), channels=[channel], item_names=long_names)
        m = d.message
        assert d.channel == channel and m is not None and m.locale == locale
        intents.add(m.intent)
        if channel == "sms":
            counted = sms_length(m.body)
            assert counted.segments <= policy.max_segments
            limit = 160 if counted.encoding == "GSM-7" else policy.length_limit
            assert counted.units <= limit
            assert m.body.endswith("回T退订" if locale == "zh-CN" else "Reply STOP to opt out")
        else:
            assert len(m.body) <= policy.length_limit
        if channel == "email":
            assert "{unsubscribe_link}" in m.body and m.subject
    assert intents == {
        "win_back",
        "replenishment",
        "value_reminder",
        "cross_sell",
        "service_recovery",
        "new_arrivals",
    }


def test_decisions_are_deterministic_given_an_id(settings):
    a = run(settings, decision_id="d-1")
    b = run(settings, decision_id="d-1")
    assert a.model_dump() == b.model_dump()
    assert run(settings).decision_id != run(settings).decision_id


# --------------------------------------------------------------------------- journey steps


def test_a_journey_step_messages_a_customer_who_just_bought(settings):
    """The trigger chose who: a post-purchase care message goes to a customer the revive
    verdict would skip (just bought), now, with the step's fixed intent and no offer."""
    bought = view("active", last_purchase_at=NOW - timedelta(hours=2))
    plain = run(settings, bought)
    assert not plain.revive and "purchased_since_snapshot" in plain.reasons["who"]
    ask = JourneyAsk("post_purchase", intent="care", offers=("none",))
    d = run(settings, bought, journey=ask)
    assert d.contact and d.intent == "care" and d.offer.type == "none"
    assert d.send_at == NOW and d.reasons["when"][0] == "journey_step:now"
    assert "journey:post_purchase" in d.reasons["who"]


def test_a_cart_step_names_the_carts_items_and_only_allowed_offers(settings):
    ask = JourneyAsk("cart_recovery", intent="cart_reminder", offers=("none",), items=("A1",))
    d = run(settings, view("active"), candidates=["Z9"], journey=ask, item_names={"A1": "Mug"})
    assert d.contact and d.intent == "cart_reminder" and d.offer.type == "none"
    assert "Mug" in d.message.body and "Z9" not in d.message.body  # the cart's, not ALS's
    coupon = JourneyAsk("cart_recovery", intent="cart_reminder", offers=("low_threshold_coupon",))
    assert run(settings, view("active"), journey=coupon).offer.type == "low_threshold_coupon"


def test_journey_steps_keep_every_contact_rule(settings):
    ask = JourneyAsk("win_back")
    # quiet hours move the send to the morning, in the customer's zone
    late = datetime(2011, 9, 5, 23, 30, tzinfo=LONDON)
    d = run(settings, now=late, journey=ask)
    assert d.send_at > late and any(r.startswith("quiet_hours") for r in d.reasons["when"])
    # a higher-priority campaign's blackout blocks the journey's message too
    inside = datetime(2011, 11, 5, 12, tzinfo=LONDON)
    assert run(settings, now=inside, journey=ask).blocked_by == "double11"
    # no consent: no channel, no contact
    none = Profile(consents={c: False for c in CHANNELS})
    assert not run(settings, view(profile=none), journey=ask).contact
    # caps: the channel that is full is not used
    full = ContactHistory(contacts=[contact("email", NOW - timedelta(hours=2))])
    assert run(settings, history=full, journey=ask).channel != "email"
    # the journey draws its own hold-out: the engine's is off for journey steps
    every = settings.model_copy(update={"holdout_share": 1.0})
    assert run(every, journey=ask).holdout is False
    assert run(every).holdout is True
