"""Loyalty points (issue #17): the FIFO/expiry replay on hand-made ledgers with hand-computed
answers, the ledger on SQLite and PostgreSQL (re-delivery stored once, short burns refused,
expiring points found for the reminder), a purchase history replayed through ``/events``'
recorder, the ``bonus_points`` offer chosen only when its economics pay, and ``/points`` over
HTTP with the expiry reminder journey enrolling whoever has points about to expire."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import (
    EarnRule,
    InsufficientPoints,
    InvalidRecord,
    PointsBalance,
    PointsEntry,
)
from core.store.points import replay
from service.config import load_settings
from service.engine import ContactHistory, CustomerView, JourneyAsk, ModelScores, decide
from service.journeys.config import PointsTrigger
from service.journeys.triggers import _points_entries
from service.runtime.population import PopulationCache
from service.runtime.recording import EventRecorder
from service.schemas import EventIn

T0 = datetime(2011, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


# --------------------------------------------------------------------------- the replay


HAND_LEDGER = [
    PointsEntry("earn", 100, day(0), day(365)),  # lot A
    PointsEntry("earn", 50, day(10), day(375)),  # lot B
    PointsEntry("burn", 120, day(20)),  # A 100 -> 0, B 50 -> 30
    PointsEntry("adjust", 20, day(30)),  # lot C, never expires
    PointsEntry("earn", 200, day(200), day(565)),  # lot D
    PointsEntry("burn", 220, day(400)),  # B expired at 375; C 20 -> 0, D 200 -> 0
]


@pytest.mark.parametrize(
    ("at", "balance", "expired", "lots"),
    [
        (day(5), 100, 0, [(100, day(365))]),
        (day(20), 30, 0, [(30, day(375))]),  # the oldest lot went first
        (day(100), 50, 0, [(30, day(375)), (20, None)]),
        (day(366), 250, 0, [(30, day(375)), (20, None), (200, day(565))]),  # A was empty
        (day(375), 220, 30, [(20, None), (200, day(565))]),  # B's 30 expire at 375 sharp
        (day(400), 0, 30, []),
        (day(600), 0, 30, []),  # D was spent before it could expire
    ],
)
def test_replay_spends_oldest_lots_first_and_expires_what_is_left(at, balance, expired, lots):
    state = replay(HAND_LEDGER, at)
    assert state.balance == balance and state.expired == expired
    assert list(state.lots) == lots
    assert state.debt == state.shortfall == 0


def test_balance_counts_what_expires_within_the_window():
    from core.store.points import points_balance

    # at day 366: B's 30 expire at day 375 (inside 30 days), D's 200 at 565 (outside)
    got = points_balance(HAND_LEDGER, day(366), timedelta(days=30))
    assert got == PointsBalance(balance=250, expiring=30, expiring_by=day(375))
    assert points_balance(HAND_LEDGER, day(366), timedelta(days=300)).expiring == 230
    assert points_balance(HAND_LEDGER, day(100), timedelta(days=30)).expiring_by is None


def test_a_debit_beyond_the_lots_is_debt_that_the_next_credit_pays():
    entries = [
        PointsEntry("earn", 10, day(0), day(5)),
        PointsEntry("burn", 4, day(1)),
        PointsEntry("burn", 10, day(6)),  # the lot expired at day 5 with 6 unspent
        PointsEntry("earn", 25, day(7), day(30)),
    ]
    state = replay(entries, day(8))
    assert (state.expired, state.shortfall, state.debt, state.balance) == (6, 10, 0, 15)
    assert replay(entries, day(6)).balance == -10


def test_the_earn_rule_floors_and_ignores_refunds():
    rule = EarnRule(points_per_unit=1.0, expire_after_days=365)
    spends = (45.6, 19.99, 0.99, 0.0, -5.0, math.nan)
    assert [rule.points(v) for v in spends] == [45, 19, 0, 0, 0, 0]
    assert EarnRule(100.0, 1).points(19.99) == 1999  # 1998.9999… in floating point


# --------------------------------------------------------------------------- the ledger


RULE = EarnRule(points_per_unit=1.0, expire_after_days=90)


def test_ledger_earns_once_per_order_and_refuses_short_burns(store):
    pts = store.points
    assert pts.earn("c1", 120.5, day(0), "order-1", RULE) == 120
    assert pts.earn("c1", 999.0, day(1), "order-1", RULE) == 0  # re-delivered: stored once
    assert pts.earn("c1", 0.5, day(1), "order-2", RULE) == 0  # nothing to earn, nothing stored
    assert [e.ref for e in pts.entries("c1")] == ["order-1"]
    assert pts.burn("c1", 100, day(2), "till-1")
    assert not pts.burn("c1", 100, day(2), "till-1")  # a retried burn changes nothing
    with pytest.raises(InsufficientPoints, match="has 20 points; 21 cannot be taken"):
        pts.burn("c1", 21, day(3), "till-2")
    # a burn dated before the points were earned would leave the customer short then
    with pytest.raises(InsufficientPoints):
        pts.burn("c2", 1, day(0), "till-3")
    with pytest.raises(InsufficientPoints):
        pts.adjust("c1", -30, day(3), "fix-1")
    assert pts.adjust("c1", -20, day(3), "fix-2", note="goodwill reversed")
    assert pts.balance("c1", day(3)).balance == 0
    assert len(pts.entries("c1")) == 3


def test_ledger_refuses_malformed_writes(store):
    pts = store.points
    for bad in (0, -5, True, 1.5):
        with pytest.raises(InvalidRecord, match="points"):
            pts.burn("c1", bad, day(0), "r")  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord, match="ref"):
        pts.adjust("c1", 5, day(0), " ")
    with pytest.raises(InvalidRecord, match="expires_at"):
        pts.adjust("c1", -5, day(0), "r", expires_at=day(9))
    assert pts.entries("c1") == []


def test_expiring_between_finds_unspent_points(store):
    pts = store.points
    pts.earn("spent", 50.0, day(0), "o1", RULE)
    pts.burn("spent", 50, day(1), "b1")
    pts.earn("keeps", 80.0, day(0), "o2", RULE)  # expires day 90
    pts.earn("keeps", 30.0, day(5), "o3", RULE)  # expires day 95
    pts.burn("keeps", 60, day(6), "b2")  # 20 of the first lot left
    pts.earn("later", 10.0, day(30), "o4", RULE)  # expires day 120
    found = pts.expiring_between(day(85), day(100))
    assert [(h.customer_id, h.points, h.expires_at) for h in found] == [("keeps", 50, day(90))]
    assert pts.expiring_between(day(91), day(100))[0].points == 30
    assert pts.balance("later", day(31)).balance == 10


def test_points_expiring_trigger_enrols_only_customers_with_points_about_to_expire(store):
    pts = store.points
    pts.earn("due", 150.0, day(0), "o1", RULE)  # 150 expire at day 90
    pts.earn("few", 40.0, day(0), "o2", RULE)  # below min_points
    pts.earn("fresh", 500.0, day(50), "o3", RULE)  # expire at day 140
    trig = PointsTrigger(kind="points_expiring", days_before=30, min_points=100)
    fired = _points_entries("points_expiry", trig, store, day(59), day(61))
    assert [(e.customer_id, e.at, e.trigger_key) for e in fired] == [
        ("due", day(60), "points:2011-04-01")
    ]
    assert fired[0].context == {"points": 150, "expires_at": day(90).isoformat()}
    assert _points_entries("points_expiry", trig, store, day(61), day(70)) == []


# --------------------------------------------------------------------------- a purchase history


def _purchase(order: str, when: datetime, value: float) -> EventIn:
    return EventIn(customer_id="H1", event="purchase", order_id=order, ts=when, value=value)


def test_a_purchase_history_replayed_through_events_gives_the_hand_computed_balances(store):
    """1 point per GBP 1, points live 90 days. Purchases: 5 Jan GBP 45.60 (45 points, expire
    5 Apr), 10 Feb GBP 120 (120, expire 11 May), 20 Apr GBP 30.99 (30, expire 19 Jul); burn
    100 on 1 Mar: 45 from January, 55 from February (65 left)."""
    settings = load_settings()
    settings = settings.model_copy(
        update={"loyalty": settings.loyalty.model_copy(update={"expire_after_days": 90})}
    )
    recorder = EventRecorder(settings, store, PopulationCache(store))
    jan, feb, apr = (datetime(2011, m, d, 10, tzinfo=UTC) for m, d in ((1, 5), (2, 10), (4, 20)))
    first = recorder.record([_purchase("A", jan, 45.60), _purchase("B", feb, 120.0)], [])
    assert (first.inserted, first.points_earned) == (2, 165)
    again = recorder.record([_purchase("B", feb, 120.0)], [])  # re-delivered: earns nothing
    assert (again.duplicates, again.points_earned) == (1, 0)
    store.points.burn("H1", 100, datetime(2011, 3, 1, tzinfo=UTC), "till-1")
    assert recorder.record([_purchase("C", apr, 30.99)], []).points_earned == 30
    window = settings.loyalty.reminder_window
    expected = {
        datetime(2011, 1, 31, tzinfo=UTC): (45, 0),
        datetime(2011, 2, 28, tzinfo=UTC): (165, 0),
        datetime(2011, 3, 2, tzinfo=UTC): (65, 0),  # January's lot was spent: none of it expires
        datetime(2011, 4, 30, tzinfo=UTC): (95, 65),  # February's 65 expire on 11 May
        datetime(2011, 5, 31, tzinfo=UTC): (30, 0),  # ... and did; April's 30 go on 19 Jul
        datetime(2011, 7, 20, tzinfo=UTC): (0, 0),
    }
    for at, (balance, expiring) in expected.items():
        got = store.points.balance("H1", at, window)
        assert (got.balance, got.expiring) == (balance, expiring), at
    assert store.points.balance("H1", datetime(2011, 4, 30, tzinfo=UTC), window).expiring_by == (
        feb + timedelta(days=90)
    )
    with pytest.raises(InsufficientPoints):
        store.points.burn("H1", 96, datetime(2011, 4, 30, tzinfo=UTC), "till-2")


# --------------------------------------------------------------------------- the offer


FEATURES = {
    "recency_days": 100.0,
    "tenure_days": 700.0,
    "purchase_days": 8.0,
    "monetary_all": 2400.0,
    "price_index": 1.0,
    "top_family_share": 0.3,
    "return_rate_value": 0.0,
    "days_since_return": math.nan,
    "usual_hour": math.nan,
    "gap_shrunk": 20.0,
}
NOW = datetime(2011, 9, 5, 9, 0, tzinfo=UTC)
REMINDER = JourneyAsk("points_expiry", intent="points_reminder", offers=("none", "bonus_points"))


def _decide(settings, basket: float):
    view = CustomerView(
        customer_id="C1",
        features=FEATURES | {"basket_value": basket},
        stage="sleeping",
        tier="high",
        value_score=500.0,
        snapshot_at=datetime(2011, 9, 1, tzinfo=UTC),
        points_balance=400,
        points_expiring=150,
    )
    scores = ModelScores(p_churn=0.7, p_buy_30d=0.1, expected_days=20.0, predicted_value=300.0)
    return decide(view, scores, [], ContactHistory(), settings, NOW, journey=REMINDER)


def _with_point_value(settings, value: float):
    return settings.model_copy(
        update={"loyalty": settings.loyalty.model_copy(update={"point_value": value})}
    )


def test_bonus_points_are_offered_only_when_their_money_value_pays():
    """Rules, e-mail at its base rate (uplift u = 0.004955 x 0.9 per unit of response), p0
    0.1, margin 0.3. No offer: u x 0.3 x basket. 100 bonus points (response 1.5): 1.5u x 0.3
    x basket - 100 x point_value x (0.1 + 1.5u). At basket 300 and GBP 0.01 a point:
    0.401 against 0.602 - 0.107 = 0.495, so the bonus pays; at GBP 0.05 a point it costs
    0.534 and no offer wins; at basket 100 the extra margin (0.067) never covers GBP 1."""
    settings = load_settings().model_copy(update={"holdout_share": 0.0})
    assert settings.offer("bonus_points").points == 100
    chosen = _decide(settings, 300.0)
    assert chosen.contact and chosen.offer.type == "bonus_points"
    assert chosen.offer.text == "下单额外赠送100积分"
    uplift = chosen.economics.uplift
    assert chosen.economics.incentive_cost == pytest.approx(100 * 0.01 * (0.1 + uplift), abs=1e-4)
    assert uplift == pytest.approx(0.004955 * 0.9 * 1.5, rel=1e-3)
    dear = _decide(_with_point_value(settings, 0.05), 300.0)
    assert dear.contact and dear.offer.type == "none" and dear.economics.incentive_cost == 0
    small = _decide(settings, 100.0)
    assert small.offer.type == "none"
    assert chosen.priority > _decide(_with_point_value(settings, 0.05), 300.0).priority


# --------------------------------------------------------------------------- over HTTP


T = datetime(2011, 9, 8, 10, 0, tzinfo=UTC)  # a week after the slice's snapshot


@pytest.fixture(scope="module")
def api(service_env, tmp_path_factory):
    """The service, a key per scope, and a journey agent (the points_expiry journey only)
    with its own runtime on the same store."""
    folder = tmp_path_factory.mktemp("points_api")
    env = service_env(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.journeys import Agent, load_journeys
        from service.journeys.config import Journeys
        from service.runtime import Runtime
        from service.service import RevivalService

        settings = load_settings()
        runtime = Runtime(settings)
        journeys = load_journeys(settings=settings)
        agent = Agent(
            runtime, Journeys(journeys=[journeys.by_id("points_expiry")]), worker="points-test"
        )
        with TestClient(RevivalService.to_asgi()) as client:
            keys = {
                scope: {"Authorization": f"Bearer {runtime.store.keys.create(scope, [scope])[1]}"}
                for scope in ("read", "events", "admin")
            }
            ids = list(runtime.state.snapshot.positions)[:3]
            yield SimpleNamespace(client=client, keys=keys, runtime=runtime, agent=agent, ids=ids)
        runtime.close()


def _points(api, body: dict, key: str = "events", status: int = 200) -> dict:
    r = api.client.post("/points", json=body, headers=api.keys[key])
    assert r.status_code == status, r.text
    return r.json()


def test_points_endpoint_burns_adjusts_and_reports_the_balance(api):
    cid = api.ids[0]
    order = {"customer_id": cid, "event": "purchase", "order_id": "pts-1", "ts": T.isoformat(),
             "value": 250.0}  # fmt: skip
    r = api.client.post("/events", json={"events": [order]}, headers=api.keys["events"])
    assert r.status_code == 200 and r.json()["points_earned"] == 250, r.text
    burn = {"customer_id": cid, "kind": "burn", "points": 100, "ref": "till-1",
            "ts": (T + timedelta(days=1)).isoformat()}  # fmt: skip
    out = _points(api, burn)
    assert (out["stored"], out["balance"], out["expiring"]) == (True, 150, 0)
    assert _points(api, burn)["stored"] is False  # retried: nothing changed
    view = api.client.post(
        "/customer", json={"customer_id": cid, "now": (T + timedelta(days=2)).isoformat()},
        headers=api.keys["read"],
    ).json()  # fmt: skip
    assert view["points"] == {"balance": 150, "expiring": 0, "expiring_by": None}
    grant = {"customer_id": cid, "kind": "adjust", "points": 40, "ref": "goodwill-1",
             "ts": (T + timedelta(days=1)).isoformat(), "note": "late delivery"}  # fmt: skip
    refused = _points(api, grant, "events", 403)
    assert "kind" in refused["detail"] and "admin" in refused["detail"]
    assert _points(api, grant, "admin")["balance"] == 190


def test_points_endpoint_refusals_name_the_field_and_store_nothing(api):
    cid = api.ids[1]
    store = api.runtime.store
    before = store.counts()
    ok = {"customer_id": cid, "kind": "burn", "points": 5, "ref": "r-1",
          "ts": T.isoformat()}  # fmt: skip
    assert api.client.post("/points", json=ok).status_code == 401
    assert api.client.post("/points", json=ok, headers=api.keys["read"]).status_code == 403
    short = _points(api, ok, status=409)  # nobody gave this customer points
    assert short["detail"].startswith("points:") and "has 0 points" in short["detail"]
    for bad, field in [
        (ok | {"points": 0}, "points"),
        (ok | {"points": -5}, "points"),
        (ok | {"points": "5"}, "points"),
        (ok | {"kind": "earn"}, "kind"),
        ({k: v for k, v in ok.items() if k != "ref"}, "ref"),
        (ok | {"ts": "2100-01-01T00:00:00Z"}, "ts"),
        (ok | {"ts": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "ts"),
    ]:
        problem = _points(api, bad, status=422)
        assert field in problem["detail"] or any(e["field"] == field for e in problem["errors"])
    assert store.counts() == before


def test_the_expiry_reminder_journey_enrols_whoever_has_points_about_to_expire(api):
    holder, nobody = api.ids[2], api.ids[1]
    order = {"customer_id": holder, "event": "purchase", "order_id": "pts-2",
             "ts": T.isoformat(), "value": 300.0}  # fmt: skip
    assert api.client.post("/events", json={"events": [order]}, headers=AUTH).status_code == 200
    life = timedelta(days=load_settings().loyalty.expire_after_days)
    reminder = T + life - timedelta(days=30)  # the journey's days_before
    report = api.agent.tick(reminder + timedelta(minutes=30))
    assert report.enrolled >= 1
    journeys = api.runtime.store.journeys
    (enrolment,) = [e for e in journeys.enrolments(holder) if e.journey_id == "points_expiry"]
    assert enrolment.trigger_key == f"points:{(T + life).date().isoformat()}"
    assert enrolment.context["points"] == 300
    assert [e for e in journeys.enrolments(nobody) if e.journey_id == "points_expiry"] == []
