"""Retraining's check of the store's purchase events (training.event_guard), on hand-made
frames with known answers (#14 finding 2: purchase events poisoned retraining)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from training.event_guard import (
    EventPurchasesRefused,
    check_event_purchases,
    weekly_event_orders,
)

# The log (UTC wall clock): weeks starting Mon 3, 10, 17 (no orders), 24 January 2011 with
# 4, 2, 0 and 6 orders; its median weekly orders are 3.
WEEKS = {"2011-01-03": 4, "2011-01-10": 2, "2011-01-17": 0, "2011-01-24": 6}
UNTIL = datetime(2011, 2, 20, tzinfo=UTC)


def _log() -> pd.DataFrame:
    rows = []
    for week, n in WEEKS.items():
        for k in range(n):
            ts = pd.Timestamp(week) + pd.Timedelta(days=k % 5, hours=10)
            for _line in range(2):  # two lines per order: counted once
                rows.append((f"L{k}", f"{week}-{k}", ts, 1.0, 2.0))
    rows.append(("L0", "C-return", pd.Timestamp("2011-01-05 10:00"), -1.0, 2.0))  # a return
    return pd.DataFrame(rows, columns=["customer_id", "order_id", "ts", "quantity", "unit_price"])


def _events(day: str, n: int, customer: str = "E", start: int = 0) -> pd.DataFrame:
    ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12)
    return pd.DataFrame(
        {
            "customer_id": [f"{customer}{i % 3}" for i in range(n)],
            "ts": [ts] * n,
            "order_id": [f"o-{customer}-{start + i}" for i in range(n)],
        }
    )


def _check(events: pd.DataFrame, ratio: float = 3.0, until: datetime = UNTIL) -> None:
    check_event_purchases(
        events,
        _log(),
        until=until,
        tolerance=timedelta(seconds=300),
        max_ratio=ratio,
        timezone="UTC",
    )


def test_weekly_references_are_the_log_week_or_after_its_end_its_median():
    ev = pd.concat([_events("2011-01-05", 2), _events("2011-01-19", 1), _events("2011-02-02", 5)])
    weeks = weekly_event_orders(ev, _log(), "UTC")
    got = [(f"{w:%Y-%m-%d}", n, r, b) for w, n, r, b in weeks.itertuples(index=False)]
    assert got == [
        ("2011-01-03", 2, 4.0, "log week"),
        ("2011-01-17", 1, 1.0, "log week"),  # an empty log week: reference at least 1
        ("2011-01-31", 5, 3.0, "log median"),
    ]


@pytest.mark.parametrize(
    ("day", "allowed"),
    [("2011-01-05", 12), ("2011-01-12", 6), ("2011-01-19", 3), ("2011-02-02", 9)],
)
def test_a_week_may_hold_up_to_ratio_times_its_reference(day, allowed):
    _check(_events(day, allowed))  # exactly at the limit: accepted
    with pytest.raises(EventPurchasesRefused) as info:
        _check(_events(day, allowed + 1))
    msg = str(info.value)
    monday = (pd.Timestamp(day) - pd.Timedelta(days=pd.Timestamp(day).weekday())).date()
    assert f"week of {monday}: {allowed + 1} event orders vs reference {allowed // 3}" in msg
    assert "customers E0 (" in msg and "o-E-0" in msg
    assert f"SELECT * FROM events WHERE event = 'purchase' AND ts >= '{monday} 00:00:00'" in msg
    assert "Nothing was trained or registered" in msg


def test_a_ratio_near_one_after_the_log_is_the_normal_case():
    """Live events replacing an exported log: ~ the median weekly orders each week."""
    weekly = [_events(f"2011-02-{d:02d}", 3, start=d) for d in (1, 8, 15)]
    _check(pd.concat(weekly, ignore_index=True), ratio=1.0)


def test_a_purchase_later_than_the_wall_clock_is_refused():
    ok = _events("2011-01-05", 1).assign(ts=pd.Timestamp(UNTIL + timedelta(seconds=299)))
    _check(ok)
    late = _events("2011-01-05", 2, customer="F").assign(
        ts=[pd.Timestamp(UNTIL + timedelta(seconds=301)), pd.Timestamp("2026-12-04", tz="UTC")]
    )
    with pytest.raises(EventPurchasesRefused) as info:
        _check(pd.concat([ok, late], ignore_index=True))
    msg = str(info.value)
    assert msg.startswith("2 purchase event(s) are later than the wall clock 2011-02-20 00:00")
    assert "up to 2026-12-04 00:00 UTC" in msg and "F0 (1), F1 (1)" in msg
    assert "ts >= '2011-02-20 00:05:00'" in msg


def test_event_orders_after_the_log_must_continue_it():
    """At most 4 empty weeks between the log's last week (24 Jan) and event orders, and
    between event weeks: the incident's server-clock stamps years later are refused."""

    def _check_late(events: pd.DataFrame) -> None:
        _check(events, until=datetime(2011, 6, 30, tzinfo=UTC))

    _check_late(_events("2011-03-02", 1))  # weeks of 31 Jan .. 21 Feb empty: 4
    chained = pd.concat([_events("2011-03-02", 1), _events("2011-04-06", 1, start=5)])
    _check_late(chained)  # 7, 14, 21, 28 March empty: 4
    with pytest.raises(EventPurchasesRefused) as info:
        _check_late(_events("2011-03-09", 2, customer="S"))
    msg = str(info.value)
    assert msg.startswith(
        "purchase events do not continue the log: the week of 2011-03-07 (2 event orders, "
        "weeks in UTC) follows 5 weeks without any order after the week of 2011-01-24"
    )
    assert "S0 (1), S1 (1)" in msg and "ts >= '2011-03-07 00:00:00'" in msg
    with pytest.raises(
        EventPurchasesRefused, match="week of 2011-04-18 .* after the week of 2011-03-07"
    ):
        _check_late(
            pd.concat(
                [
                    _events("2011-03-02", 1),
                    _events("2011-03-09", 1, start=3),
                    _events("2011-04-20", 1, start=9),
                ]
            )
        )


def test_no_events_pass():
    _check(_events("2011-01-05", 0))


def test_the_retrain_job_passes_the_events_settings_and_retrain_reads_them(tmp_path, monkeypatch):
    """``/retrain`` hands the service's ``events:`` settings to the child; run by hand,
    retrain reads the same ``REVIVAL_EVENTS__*`` variables; out of range is named."""
    from core.store import SqlContactStore
    from service.config import load_settings
    from service.jobs import RetrainJobs
    from service.schemas import RetrainRequest
    from training.retrain import config_from_args, parser

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = SqlContactStore(url)
    monkeypatch.setenv("REVIVAL_STORE_URL", url)
    monkeypatch.setenv("REVIVAL_EVENTS__MAX_EVENT_ORDER_RATIO", "2.5")
    monkeypatch.setenv("REVIVAL_EVENTS__FUTURE_TOLERANCE_SECONDS", "60")
    monkeypatch.setenv("REVIVAL_EVENTS__MAX_PURCHASE_VALUE", "5000")
    jobs = RetrainJobs(load_settings(), "sqlite:///unused.db", store, root=tmp_path)
    cmd = jobs.command(RetrainRequest(), tmp_path / "summary.json")
    cfg = config_from_args(parser().parse_args(cmd[3:]))
    assert (cfg.max_event_order_ratio, cfg.future_tolerance, cfg.max_purchase_value) == (
        2.5,
        timedelta(seconds=60),
        5000.0,
    )
    for key in ("MAX_EVENT_ORDER_RATIO", "FUTURE_TOLERANCE_SECONDS", "MAX_PURCHASE_VALUE"):
        monkeypatch.delenv(f"REVIVAL_EVENTS__{key}")
    by_hand = config_from_args(parser().parse_args([]))  # the same variables, unset: defaults
    assert (by_hand.max_event_order_ratio, by_hand.max_purchase_value) == (3.0, 1_000_000.0)
    monkeypatch.setenv("REVIVAL_EVENTS__MAX_EVENT_ORDER_RATIO", "4")
    assert config_from_args(parser().parse_args([])).max_event_order_ratio == 4.0
    with pytest.raises(ValueError, match=r"--max-event-order-ratio must be in \(0, 1000\], got 0"):
        config_from_args(parser().parse_args(["--max-event-order-ratio", "0"]))
