"""Campaign report on a hand-made store with known answers; interval methods against
published values; report files and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.store import DecisionRecord, EventRecord, SqlContactStore
from service.config import load_settings
from service.engine import UnknownCampaign
from service.report import (
    BadReportRequest,
    CampaignReport,
    campaign_report,
    gain_curve,
    write_report,
)
from service.report.cli import main
from service.stats import bootstrap_mean_diff, newcombe, wilson

T0 = datetime(2011, 9, 6, 10, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("counts", "expected"),
    [  # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ],
)
def test_newcombe_matches_the_published_intervals(counts, expected):
    iv = newcombe(*counts)
    assert (round(iv.low, 4), round(iv.high, 4)) == expected
    assert iv.estimate == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])


def test_wilson_matches_the_published_interval_and_rejects_bad_counts():
    iv = wilson(81, 263)  # Newcombe (1998), Statistics in Medicine 17:857, example (a)
    assert (round(iv.low, 4), round(iv.high, 4)) == (0.2553, 0.3662)
    with pytest.raises(ValueError, match="successes"):
        wilson(3, 2)


def test_bootstrap_is_reproducible_and_agrees_with_the_normal_interval():
    rng = np.random.default_rng(7)
    t, c = rng.exponential(12.0, 4000), rng.exponential(10.0, 4000)
    a = bootstrap_mean_diff(t, c, seed=3)
    assert a == bootstrap_mean_diff(t, c, seed=3)
    assert a != bootstrap_mean_diff(t, c, seed=4)
    se = np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
    assert a.estimate == pytest.approx(t.mean() - c.mean())
    assert a.low == pytest.approx(a.estimate - 1.96 * se, abs=0.15 * se)
    assert a.high == pytest.approx(a.estimate + 1.96 * se, abs=0.15 * se)
    flat = bootstrap_mean_diff([5.0] * 10, [2.0] * 7)
    assert (flat.estimate, flat.low, flat.high) == (3.0, 3.0, 3.0)


def test_gain_curve_counts_incremental_conversions_by_priority():
    rows = pd.DataFrame(
        {
            "decision_id": ["a", "b", "c", "d"],
            "priority": [4.0, 3.0, 2.0, 1.0],
            "holdout": [False, True, False, True],
            "converted": [True, False, False, True],
        }
    )
    got = [(g.customers, g.incremental_conversions) for g in gain_curve(rows, points=5)]
    # top 2: treated 1/1, hold-out 0/1 -> +1 x 2; top 3: 1/2 vs 0/1 -> 0.5 x 3; all: 1/2 vs 1/2
    assert got == [(0, 0.0), (1, 0.0), (2, 2.0), (3, 1.5), (4, 0.0)]


# --------------------------------------------------------------------------- the report


def _decision(did, cid, *, holdout=False, revive=True, stage="sleeping", tier="high", **kw):
    contact = revive and not holdout
    return DecisionRecord(
        decision_id=did,
        customer_id=cid,
        campaign_id=kw.get("campaign", "lifecycle"),
        ts=kw.get("ts", T0),
        channel="email" if revive else None,
        send_at=kw.get("ts", T0) if revive else None,
        intent="win_back",
        offer_type="low_threshold_coupon",
        holdout=holdout,
        revive=revive,
        priority=kw.get("priority", 1.0),
        payload={
            "stage": stage,
            "tier": tier,
            "contact": contact,
            "economics": {"incentive_cost": 1.0, "contact_cost": 0.5},
        },
    )


@pytest.fixture
def store(tmp_path) -> Iterator[SqlContactStore]:
    s = SqlContactStore(f"sqlite:///{tmp_path / 'store.db'}")
    for i in range(10):
        seg = {"stage": "sleeping", "tier": "high"} if i < 5 else {"stage": "active", "tier": "mid"}
        s.record_decision(_decision(f"t{i}", f"T{i}", priority=10.0 - i, **seg))
        s.record_decision(_decision(f"h{i}", f"H{i}", holdout=True, priority=9.5 - i, **seg))
    s.record_decision(_decision("n0", "N0", revive=False))
    s.record_decision(_decision("x9", "T9", campaign="double11", ts=at(1)))
    buy = [("T0", 1, 100.0), ("T0", 2, 40.0), ("T1", 3, 50.0), ("T2", 4, 30.0), ("T5", 5, 20.0)]
    buy += [("H0", 6, 60.0), ("T9", 2, 500.0), ("N0", 1, 70.0)]
    events = [EventRecord(customer_id=c, ts=at(d), event="purchase", value=v) for c, d, v in buy]
    for i in range(10):
        events.append(
            EventRecord(
                customer_id=f"T{i}", ts=T0, event="sent", channel="email", decision_id=f"t{i}"
            )
        )
    for i in range(4):
        for kind in ("opened", "opened") + (("clicked",) if i == 0 else ()):
            events.append(
                EventRecord(
                    customer_id=f"T{i}",
                    ts=at(0.1),
                    event=kind,
                    channel="email",
                    decision_id=f"t{i}",
                )
            )
    s.record_events(events)
    yield s
    s.close()


def test_report_has_the_known_counts_rates_lifts_and_costs(store):
    r = campaign_report(store, "lifecycle", settings=load_settings())
    assert (r.decisions, r.eligible, r.not_eligible) == (21, 20, 1)
    t, h = r.overall.treated, r.overall.holdout
    assert (t.customers, t.converted, t.orders, t.revenue) == (10, 4, 5, 240.0)
    assert (h.customers, h.converted, h.orders, h.revenue) == (10, 1, 1, 60.0)
    assert (t.conversion, h.conversion) == (0.4, 0.1)
    assert (t.asleep, t.woke, t.wake_up_rate) == (5, 3, 0.6)
    assert (h.asleep, h.woke, h.wake_up_rate) == (5, 1, 0.2)
    assert (t.revenue_per_customer, h.revenue_per_customer) == (24.0, 6.0)
    assert (t.average_order_value, h.average_order_value) == (48.0, 60.0)
    assert (t.incentive_cost, t.contact_cost, h.incentive_cost, h.contact_cost) == (10, 5, 0, 0)
    [email] = t.channels
    assert (email.contacted, email.sent, email.opened, email.clicked) == (10, 10, 4, 1)
    assert (email.open_rate, email.click_rate) == (0.4, 0.1)
    assert h.channels == []
    conv = r.overall.conversion_lift
    expected = newcombe(4, 10, 1, 10)
    assert (conv.estimate, conv.low, conv.high) == (expected.estimate, expected.low, expected.high)
    assert r.overall.wake_up_lift.estimate == pytest.approx(0.4)
    assert r.overall.revenue_per_customer_lift.estimate == pytest.approx(18.0)
    assert r.overall.incremental_revenue.estimate == pytest.approx(180.0)
    assert r.overall.cost == 15.0 and r.overall.roi == pytest.approx((180.0 - 15.0) / 15.0)
    verdict = "significant" if expected.low > 0 else "not significant"
    assert re.fullmatch(
        rf"conversion lift \+30\.0 pp \[-?\d+\.\d, \d+\.\d\] — {verdict} at 95%",
        r.overall.statement,
    ), r.overall.statement
    assert r.overall.significant == (expected.low > 0)
    # T9's purchase went to the later double11 decision; N0 is not eligible
    assert r.attributed_orders == 7 and r.attributed_revenue == 370.0


def test_channel_attribution_credits_the_touched_conversions(store):
    """Every contact is an e-mail: the five purchases with a contact in the 14 days before
    them (T0's first, T1, T2, T5, T9) all go to e-mail under every rule; T0's second
    purchase has no touch left after its first, the hold-out's and N0's have none."""
    r = campaign_report(store, "lifecycle", settings=load_settings())
    [email] = r.channel_attribution
    assert email.channel == "email" and email.touches == 11  # T9 also got the double11 one
    credits = (email.last_touch, email.first_touch, email.linear, email.time_decay, email.markov)
    assert credits == (5.0, 5.0, 5.0, 5.0, 5.0) and email.removal_effect == 1.0


def test_segments_are_stage_by_tier_and_add_up(store):
    r = campaign_report(store, "lifecycle", settings=load_settings())
    assert [(s.stage, s.tier) for s in r.segments] == [("active", "mid"), ("sleeping", "high")]
    active, sleeping = r.segments
    assert (sleeping.treated.converted, sleeping.holdout.converted) == (3, 1)
    assert (active.treated.converted, active.holdout.converted) == (1, 0)
    assert active.wake_up_lift is None  # nobody asleep in the segment
    for field in ("customers", "converted", "orders"):
        total = sum(getattr(s.treated, field) for s in r.segments)
        assert total == getattr(r.overall.treated, field)


def test_the_report_is_json_and_round_trips(store):
    r = campaign_report(store, "lifecycle", settings=load_settings())
    again = CampaignReport.model_validate(json.loads(r.model_dump_json()))
    assert again == r
    assert r.gain[0].share == 0.0 and r.gain[-1].customers == 20


def test_the_period_filters_decisions_and_bad_requests_are_named(store):
    settings = load_settings()
    later = campaign_report(store, "lifecycle", start=at(0.5), settings=settings)
    assert later.decisions == 0 and later.overall.conversion_lift is None
    assert "not enough data" in later.overall.statement
    assert campaign_report(store, "double11", settings=settings).decisions == 1
    with pytest.raises(BadReportRequest, match="must be after start"):
        campaign_report(store, "lifecycle", start=at(1), end=at(0), settings=settings)
    with pytest.raises(UnknownCampaign, match="'black-friday'.*lifecycle, double11"):
        campaign_report(store, "black-friday", settings=settings)


def test_a_campaign_only_in_the_store_is_reported(store):
    store.record_decision(_decision("old1", "Z1", campaign="spring-sale", ts=at(-30)))
    r = campaign_report(store, "spring-sale", settings=load_settings())
    assert not r.configured and r.decisions == 1


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_write_report_writes_the_document_and_png_charts(store, tmp_path, fmt):
    r = campaign_report(store, "lifecycle", settings=load_settings())
    path = write_report(r, tmp_path / "out", fmt)
    assert path == tmp_path / "out" / f"lifecycle-report.{fmt}"
    text = path.read_text(encoding="utf-8")
    assert "lifecycle-gain.png" in text and "lifecycle-segments.png" in text
    assert "Channel attribution" in text and "removal effect" in text
    assert r.overall.statement in text or r.overall.statement.replace("—", "&mdash;") in text
    for chart in ("lifecycle-gain.png", "lifecycle-segments.png"):
        assert (tmp_path / "out" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="format"):
        write_report(r, tmp_path, "pdf")


def test_cli_writes_the_report_and_counts_log_orders(store, tmp_path, capsys):
    log = tmp_path / "later.csv"
    log.write_text(
        "customer_id,order_id,ts,quantity,unit_price\n"
        "H1,9001,2011-09-08 12:00,2,10\n"  # a hold-out customer's order in the later log
        "H1,9001,2011-09-08 12:00,-1,10\n",  # a return line: not a purchase
        encoding="utf-8",
    )
    url = str(store.url)
    code = main(["--campaign", "lifecycle", "--store-url", url, "--out", str(tmp_path / "r")])
    assert code == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "r" / "lifecycle-report.md") in out and "conversion lift" in out
    code = main(
        ["--campaign", "lifecycle", "--store-url", url, "--data", str(log), "--out", str(tmp_path)]
    )
    assert code == 0
    text = (tmp_path / "lifecycle-report.md").read_text(encoding="utf-8")
    assert "| conversion | 40.0% | 20.0% |" in text
    capsys.readouterr()
    assert main(["--campaign", "nope", "--store-url", url, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "lifecycle, double11" in err


# --------------------------------------------------------------------------- robustness (#14)


@pytest.mark.parametrize(
    "when",
    [
        datetime(3000, 1, 1, tzinfo=UTC),
        datetime(2262, 4, 12, tzinfo=UTC),  # just past what pandas can hold
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(1, 1, 2, tzinfo=UTC),
        datetime(9999, 12, 30, tzinfo=UTC),
    ],
)
def test_rows_at_any_storable_time_never_break_the_report(store, when):
    """#14 finding 3: one decision (and purchase) dated in year 3000 made every un-windowed
    report fail; rows the frames cannot hold are left out, the rest is reported as before."""
    before = campaign_report(store, "lifecycle", settings=load_settings())
    store.record_decision(_decision("odd", "T0", ts=when))
    store.record_events(
        [EventRecord(customer_id="T0", ts=when, event="purchase", value=5.0, dedup_key="o-odd")]
    )
    for start, end in [(None, None), (None, datetime(9999, 12, 31)), (datetime(1, 1, 1), None)]:
        r = campaign_report(store, "lifecycle", start, end, settings=load_settings())
        json.loads(r.model_dump_json())
        # from year 1 on, a decision in 1900 is in the period (and credited its purchase)
        extra = int(start is not None and when.year == 1900)
        assert (r.decisions, r.attributed_orders, r.attributed_revenue) == (
            before.decisions + extra,
            before.attributed_orders + extra,
            before.attributed_revenue + 5.0 * extra,
        )


def test_an_absurd_stored_purchase_value_cannot_make_revenue_infinite(store):
    """#14 finding 2: a stored value of 1e308 (twice: the sum overflows) made attributed
    revenue Infinity; values outside [0, events.max_purchase_value] are left out."""
    before = campaign_report(store, "lifecycle", settings=load_settings())
    store.record_events(
        [
            EventRecord(customer_id="T3", ts=at(2), event="purchase", value=1e308),
            EventRecord(customer_id="T3", ts=at(3), event="purchase", value=1e308),
            EventRecord(customer_id="T4", ts=at(3), event="purchase", value=-50.0),
        ]
    )
    r = campaign_report(store, "lifecycle", settings=load_settings())
    assert r.attributed_revenue == before.attributed_revenue == 370.0
    assert r.overall.treated.revenue == 240.0
    assert np.isfinite(r.overall.revenue_per_customer_lift.high)
    assert any("valued outside [0, 1e+06]" in n for n in r.notes)
