"""Outcome attribution on hand-made decisions and purchases with known answers (a real
SQLite contact store in a temp folder)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from core.attribution import ATTRIBUTION_COLUMNS, attribute, load_purchases, log_orders
from core.store import DecisionRecord, EventRecord, SqlContactStore
from service.config import load_settings

T0 = datetime(2011, 9, 1, 10, 0, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def decision(
    did: str,
    cid: str,
    at: datetime,
    *,
    campaign: str = "lifecycle",
    holdout: bool = False,
    revive: bool = True,
    channel: str | None = "email",
    stage: str = "sleeping",
    tier: str = "high",
    incentive: float = 1.5,
    contact_cost: float = 0.002,
) -> DecisionRecord:
    contact = revive and not holdout and channel is not None
    return DecisionRecord(
        decision_id=did,
        customer_id=cid,
        campaign_id=campaign,
        ts=at,
        channel=channel,
        send_at=at,
        intent="win_back",
        offer_type="low_threshold_coupon",
        holdout=holdout,
        revive=revive,
        priority=1.0,
        payload={
            "stage": stage,
            "tier": tier,
            "contact": contact,
            "economics": {"incentive_cost": incentive, "contact_cost": contact_cost},
        },
    )


def purchase(cid: str, at: datetime, value: float, key: str | None = None) -> EventRecord:
    return EventRecord(customer_id=cid, ts=at, event="purchase", value=value, dedup_key=key)


@pytest.fixture
def store(tmp_path) -> Iterator[SqlContactStore]:
    s = SqlContactStore(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def attributed(store: SqlContactStore, **kw) -> pd.DataFrame:
    d = store.decisions_between(day(-100), FAR)
    p = load_purchases(store, day(-100), FAR, **kw)
    return attribute(d, p).set_index("decision_id")


def test_each_purchase_goes_to_the_latest_decision_inside_the_window(store):
    for rec in [
        decision("a1", "A", day(0)),
        decision("a2", "A", day(10), campaign="double11"),  # cuts a1's window at day 10
        decision("b1", "B", day(0), holdout=True),
        decision("c1", "C", day(0)),
    ]:
        store.record_decision(rec)
    store.record_events(
        [
            purchase("A", day(-1), 99.0),  # before any decision: nobody's
            purchase("A", day(0), 10.0),  # at the decision time: counts
            purchase("A", day(9.9), 20.0),  # a1
            purchase("A", day(10), 30.0),  # a2 (the later decision wins)
            purchase("A", day(23.9), 40.0),  # a2, inside 14 days
            purchase("A", day(24), 50.0),  # exactly 14 days after a2: outside
            purchase("B", day(13), 7.0),  # hold-out customers are attributed alike
            purchase("C", day(14.5), 5.0),  # after c1's window
        ]
    )
    out = attributed(store)
    assert list(out.reset_index().columns) == ATTRIBUTION_COLUMNS
    assert out.loc["a1", ["orders", "revenue"]].tolist() == [2, 30.0]
    assert out.loc["a2", ["orders", "revenue"]].tolist() == [2, 70.0]
    assert out.loc["b1", ["orders", "revenue"]].tolist() == [1, 7.0]
    assert out.loc["c1", ["orders", "revenue", "converted"]].tolist() == [0, 0.0, False]
    assert out.loc["a1", "first_purchase_at"] == pd.Timestamp(day(0))
    assert out.loc["a2", "first_purchase_at"] == pd.Timestamp(day(10))
    assert pd.isna(out.loc["c1", "first_purchase_at"])
    assert out.loc["a1", "converted"] and out.loc["b1", "converted"]


def test_costs_and_segments_come_from_the_payload_and_hold_out_costs_nothing(store):
    store.record_decision(decision("t", "T", day(0), stage="lost", tier="low", incentive=2.0))
    store.record_decision(decision("h", "H", day(0), holdout=True, incentive=2.0))
    store.record_decision(decision("n", "N", day(0), revive=False, channel=None))
    out = attributed(store)
    assert out.loc[
        "t", ["stage", "tier", "contact", "incentive_cost", "contact_cost"]
    ].tolist() == [
        "lost",
        "low",
        True,
        2.0,
        0.002,
    ]
    assert out.loc["h", ["holdout", "contact", "incentive_cost", "contact_cost"]].tolist() == [
        True,
        False,
        0.0,
        0.0,
    ]
    assert not out.loc["n", "contact"] and out.loc["n", "incentive_cost"] == 0.0


def test_the_window_is_a_parameter_and_must_be_positive(store):
    store.record_decision(decision("a", "A", day(0)))
    store.record_events([purchase("A", day(3), 10.0)])
    d = store.decisions_between(day(-1), FAR)
    p = load_purchases(store, day(-1), FAR)
    assert attribute(d, p, timedelta(days=3))["orders"].tolist() == [0]
    assert attribute(d, p, timedelta(days=3, seconds=1))["orders"].tolist() == [1]
    for bad in (timedelta(0), timedelta(days=-1)):
        with pytest.raises(ValueError, match="positive"):
            attribute(d, p, bad)


def test_log_orders_aggregate_lines_and_skip_returns():
    tx = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B", "B"],
            "order_id": ["o1", "o1", "o2", "C9", "o3"],
            # naive wall-clock times in London (BST = UTC+1 in September)
            "ts": pd.to_datetime(
                [
                    "2011-09-02 10:00",
                    "2011-09-02 10:05",
                    "2011-09-03 09:00",
                    "2011-09-04 12:00",
                    "2011-08-01 12:00",
                ]
            ),
            "quantity": [2.0, 1.0, 3.0, -1.0, 1.0],
            "unit_price": [5.0, 4.0, 1.5, 10.0, 8.0],
        }
    )
    out = log_orders(tx, day(0), day(30), log_timezone="Europe/London").set_index("order_id")
    assert sorted(out.index) == ["o1", "o2"]  # the return C9 and the August order o3 are out
    assert out.loc["o1", "value"] == 14.0 and out.loc["o2", "value"] == 4.5
    assert out.loc["o1", "ts"] == pd.Timestamp("2011-09-02 09:00", tz="UTC")
    assert set(out["source"]) == {"log"}


def test_a_purchase_in_both_sources_counts_once(store):
    store.record_decision(decision("a", "A", day(0)))
    store.record_events(
        [
            purchase("A", day(1), 14.0, key="o1"),  # same order id as the log
            purchase("A", day(2), 4.5),  # same time and value as the log's o2
            purchase("A", day(3), 8.0, key="web-7"),  # only live
        ]
    )
    tx = pd.DataFrame(
        {
            "customer_id": ["A", "A", "A"],
            "order_id": ["o1", "o2", "o2"],
            "ts": [day(1) + timedelta(minutes=5), day(2), day(2)],
            "quantity": [1.0, 1.0, 1.0],
            "unit_price": [14.0, 2.5, 2.0],
        }
    )
    p = load_purchases(store, day(-1), FAR, tx)
    assert sorted(zip(p["order_id"], p["source"], strict=True)) == [
        ("o1", "log"),
        ("o2", "log"),
        ("web-7", "events"),
    ]
    assert p["value"].sum() == pytest.approx(14.0 + 4.5 + 8.0)
    assert str(p["ts"].dtype) == "datetime64[ns, UTC]"
    out = attribute(store.decisions_between(day(-1), FAR), p)
    assert out["orders"].tolist() == [3] and out["revenue"].tolist() == [pytest.approx(26.5)]


def test_no_purchases_and_no_decisions_give_empty_but_typed_frames(store):
    p = load_purchases(store, day(0), FAR)
    assert list(p.columns) == ["customer_id", "ts", "value", "order_id", "source"] and p.empty
    out = attribute(store.decisions_between(day(0), FAR), p)
    assert list(out.columns) == ATTRIBUTION_COLUMNS and out.empty
    store.record_decision(decision("a", "A", day(0)))
    out = attribute(store.decisions_between(day(0), FAR), p)
    assert out["orders"].tolist() == [0] and not out["converted"].any()


def test_the_window_setting_defaults_to_14_days_and_is_validated(tmp_path, monkeypatch):
    assert load_settings().attribution_window_days == 14
    monkeypatch.setenv("REVIVAL_ATTRIBUTION_WINDOW_DAYS", "0")
    with pytest.raises(ValueError, match="attribution_window_days"):
        load_settings()
