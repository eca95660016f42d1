"""Known-answer tests for features.snapshot.build_features on small hand-made logs.

Every expected value below is worked out by hand from the definitions in the module
docstring of :mod:`features.snapshot`; none is copied from a run of the code.
The cutoff is T = 2021-01-01 00:00; ``at(d, h)`` is ``d`` days before T plus ``h`` hours.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.contracts import validate_events, validate_transactions
from features.cutoff import parse_cutoff
from features.snapshot import (
    DEFAULT_GAP_DAYS,
    FEATURE_COLUMNS,
    GAP_PRIOR_WEIGHT,
    ID_COLUMNS,
    build_features,
    coded_ids,
    customer_partitions,
    item_median_prices,
    model_columns,
)

T = pd.Timestamp("2021-01-01")
SECOND = pd.Timedelta(seconds=1)


def at(days: float, hours: float = 0.0) -> pd.Timestamp:
    return T - pd.Timedelta(days=days) + pd.Timedelta(hours=hours)


def make_tx(rows, with_items: bool = True) -> pd.DataFrame:
    """rows: (customer, order, ts, item, quantity, unit_price)."""
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    )
    if not with_items:
        df = df.drop(columns="item_id")
    return validate_transactions(df)


# --------------------------------------------------------------------------- windows


def window_rows():
    return [
        # A: one single-line order per window edge; values are powers of two so each
        # window sum says exactly which orders it contains. quantity 2 x price v/2.
        ("A", "a1", at(400), "10001", 2, 0.5),  # value 1, only in _all
        ("A", "a2", at(365), "10001", 2, 1.0),  # value 2, age == 365: inside 365 d
        ("A", "a3", at(180), "10001", 2, 2.0),  # value 4, age == 180
        ("A", "a4", at(90), "10001", 2, 4.0),  # value 8, age == 90
        ("A", "a5", at(30), "10001", 2, 8.0),  # value 16, age == 30
        ("A", "a6", at(0.5), "10001", 2, 16.0),  # value 32, 12 h before the cutoff
        ("A", "a7", T, "10001", 2, 32.0),  # at the cutoff: excluded
        ("A", "a8", at(-1), "10001", 2, 64.0),  # after the cutoff: excluded
        # B: a two-line order; its time is its earliest line (31 days ago)
        ("B", "b1", at(31), "10002", 1, 10.0),
        ("B", "b1", at(29), "10003", 1, 5.0),
        # C: a return is not an order
        ("C", "c1", at(50), "10004", 1, 7.0),
        ("C", "c2", at(5), "10004", -1, 7.0),
        # D: only a return before the cutoff and a purchase at it: not a customer yet
        ("D", "d1", at(10), "10004", -1, 7.0),
        ("D", "d2", T, "10004", 1, 7.0),
        # E: one second outside each window edge; values 1, 2, 4, 8
        ("E", "e1", at(30) - SECOND, "10005", 1, 1.0),
        ("E", "e2", at(90) - SECOND, "10005", 1, 2.0),
        ("E", "e3", at(180) - SECOND, "10005", 1, 4.0),
        ("E", "e4", at(365) - SECOND, "10005", 1, 8.0),
    ]


@pytest.fixture(scope="module")
def windows():
    return build_features(make_tx(window_rows()), T)


def test_shape_index_and_dtypes(windows):
    assert list(windows.columns) == FEATURE_COLUMNS
    assert windows.index.name == "customer_id"
    assert list(windows.index) == ["A", "B", "C", "E"]  # D has no order before T
    assert all(dt == np.float64 for dt in windows.dtypes)


def test_cutoff_as_string_is_the_same(windows):
    pd.testing.assert_frame_equal(
        build_features(make_tx(window_rows()), parse_cutoff("2021-01-01")),
        windows,
        check_exact=True,
    )


def test_recency_and_tenure(windows):
    assert windows.loc["A", "recency_days"] == pytest.approx(0.5)
    assert windows.loc["A", "tenure_days"] == pytest.approx(400)
    assert windows.loc["B", "recency_days"] == pytest.approx(31)  # earliest line of b1
    assert windows.loc["B", "tenure_days"] == pytest.approx(31)
    assert windows.loc["C", "recency_days"] == pytest.approx(50)  # the return is not an order
    assert windows.loc["E", "recency_days"] == pytest.approx(30 + 1 / 86400)
    assert windows.loc["E", "tenure_days"] == pytest.approx(365 + 1 / 86400)


@pytest.mark.parametrize(
    ("customer", "orders", "monetary"),
    [
        # 30, 90, 180, 365, all
        ("A", [2, 3, 4, 5, 6], [48, 56, 60, 62, 63]),
        ("B", [0, 1, 1, 1, 1], [0, 15, 15, 15, 15]),
        ("C", [0, 1, 1, 1, 1], [0, 7, 7, 7, 7]),
        ("E", [0, 1, 2, 3, 4], [0, 1, 3, 7, 15]),
    ],
)
def test_order_and_monetary_windows(windows, customer, orders, monetary):
    names = ["30d", "90d", "180d", "365d", "all"]
    got_orders = [windows.loc[customer, f"orders_{w}"] for w in names]
    got_money = [windows.loc[customer, f"monetary_{w}"] for w in names]
    assert got_orders == orders
    assert got_money == pytest.approx(monetary)


def test_basket(windows):
    assert windows.loc["A", "basket_value"] == pytest.approx(63 / 6)
    assert windows.loc["A", "basket_lines"] == pytest.approx(1.0)
    assert windows.loc["B", "basket_value"] == pytest.approx(15.0)
    assert windows.loc["B", "basket_lines"] == pytest.approx(2.0)


def test_no_purchase_before_cutoff_gives_empty_frame():
    tx = make_tx([("A", "a1", T, "10001", 1, 1.0), ("B", "b1", at(3), "10001", -1, 1.0)])
    out = build_features(tx, T)
    assert out.empty
    assert list(out.columns) == FEATURE_COLUMNS


# --------------------------------------------------------------------------- gaps


def gap_rows():
    return [
        # G1: purchase days 100, 90, 70, 40 days back (two orders on day 90) -> gaps 10, 20, 30
        ("G1", "g1", at(100, 10), "10001", 1, 1.0),
        ("G1", "g2", at(90, 10), "10001", 1, 1.0),
        ("G1", "g3", at(90, 15), "10001", 1, 1.0),
        ("G1", "g4", at(70, 10), "10001", 1, 1.0),
        ("G1", "g5", at(40, 10), "10001", 1, 1.0),
        # G2: purchase days 60 and 20 back -> one gap of 40
        ("G2", "h1", at(60, 12), "10001", 1, 1.0),
        ("G2", "h2", at(20, 12), "10001", 1, 1.0),
        # G3: two orders on one day -> no gap
        ("G3", "i1", at(5, 9), "10001", 1, 1.0),
        ("G3", "i2", at(5, 18), "10001", 1, 1.0),
    ]


@pytest.fixture(scope="module")
def gaps():
    return build_features(make_tx(gap_rows()), T)


def test_purchase_days_and_own_gaps(gaps):
    assert list(gaps["purchase_days"]) == [4, 2, 1]
    assert list(gaps["orders_all"]) == [5, 2, 2]
    assert gaps.loc["G1", "gap_median"] == pytest.approx(20)
    assert gaps.loc["G1", "gap_mean"] == pytest.approx(20)
    # population std of (10, 20, 30) over their mean
    assert gaps.loc["G1", "gap_cv"] == pytest.approx(math.sqrt(200 / 3) / 20)
    assert gaps.loc["G2", "gap_median"] == pytest.approx(40)
    assert gaps.loc["G2", "gap_mean"] == pytest.approx(40)
    assert np.isnan(gaps.loc["G2", "gap_cv"])  # one gap has no spread
    for col in ("gap_median", "gap_mean", "gap_cv"):
        assert np.isnan(gaps.loc["G3", col])


def test_gap_shrunk_is_the_documented_empirical_bayes_value(gaps):
    k = GAP_PRIOR_WEIGHT
    g1_mean_log = (math.log(10) + math.log(20) + math.log(30)) / 3
    g2_mean_log = math.log(40)
    # prior: mean over customers (with a gap) of their own mean log-gap, not over gaps
    prior = (g1_mean_log + g2_mean_log) / 2
    expected = {
        "G1": math.exp((3 * g1_mean_log + k * prior) / (3 + k)),
        "G2": math.exp((1 * g2_mean_log + k * prior) / (1 + k)),
        "G3": math.exp(prior),  # no gap: the typical customer's cycle
    }
    pooled_prior = (3 * g1_mean_log + g2_mean_log) / 4
    assert math.exp(pooled_prior) != pytest.approx(expected["G3"])  # the test can tell them apart
    recency = {"G1": 40 - 10 / 24, "G2": 20 - 12 / 24, "G3": 5 - 18 / 24}
    for c, g in expected.items():
        assert gaps.loc[c, "gap_shrunk"] == pytest.approx(g, rel=1e-12)
        assert gaps.loc[c, "recency_days"] == pytest.approx(recency[c])
        assert gaps.loc[c, "recency_ratio"] == pytest.approx(recency[c] / g, rel=1e-12)


def test_gap_shrunk_without_any_gap_uses_default_cycle():
    tx = make_tx([("A", "a1", at(9), "10001", 1, 1.0), ("B", "b1", at(45), "10001", 1, 1.0)])
    out = build_features(tx, T)
    assert list(out["gap_shrunk"]) == pytest.approx([DEFAULT_GAP_DAYS, DEFAULT_GAP_DAYS])
    assert list(out["recency_ratio"]) == pytest.approx(
        [9 / DEFAULT_GAP_DAYS, 45 / DEFAULT_GAP_DAYS]
    )


# --------------------------------------------------------------------------- trend, season


def test_trend_90d():
    rows = [
        ("stop", "s1", at(100), "10001", 1, 10.0),  # only in [T-180, T-90) -> -1
        ("flat", "f1", at(10), "10001", 1, 20.0),
        ("flat", "f2", at(100), "10001", 1, 20.0),  # equal halves -> 0
        ("new", "n1", at(10), "10001", 1, 5.0),  # only recent -> +1
        ("mid", "m1", at(10), "10001", 1, 30.0),
        ("mid", "m2", at(120), "10001", 1, 10.0),  # (30 - 10) / 40 = 0.5
        ("none", "z1", at(200), "10001", 1, 10.0),  # nothing in either window -> 0
        ("edge", "e1", at(90), "10001", 1, 10.0),  # age 90: recent window
        ("edge", "e2", at(180), "10001", 1, 30.0),  # age 180: previous window
        ("edge", "e3", at(180) - SECOND, "10001", 1, 1000.0),  # outside both
    ]
    out = build_features(make_tx(rows), T)["trend_90d"]
    assert out["stop"] == -1.0
    assert out["flat"] == 0.0
    assert out["new"] == 1.0
    assert out["mid"] == pytest.approx(0.5)
    assert out["none"] == 0.0
    assert out["edge"] == pytest.approx((10 - 30) / 40)


def test_orders_same_season_last_year():
    rows = [
        ("S", "s1", at(365), "10001", 1, 1.0),  # in [T-365, T-275)
        ("S", "s2", at(300), "10001", 1, 1.0),  # in
        ("S", "s3", at(275), "10001", 1, 1.0),  # age 275: the window is open at its end
        ("S", "s4", at(365) - SECOND, "10001", 1, 1.0),  # older than a year
        ("S", "s5", at(10), "10001", 1, 1.0),
        ("Q", "q1", at(10), "10001", 1, 1.0),
    ]
    out = build_features(make_tx(rows), T)["orders_same_season_ly"]
    assert out["S"] == 2
    assert out["Q"] == 0


# --------------------------------------------------------------------------- returns


def test_return_features():
    rows = [
        # R: orders worth 50 (two lines) and 50; returns worth 40 (one order, two lines)
        # and 5; returns at or after the cutoff are ignored
        ("R", "r1", at(100), "10001", 2, 10.0),
        ("R", "r1", at(100), "10002", 1, 30.0),
        ("R", "r2", at(50), "10003", 1, 50.0),
        ("R", "Cr3", at(40), "10001", -1, 10.0),
        ("R", "Cr3", at(40), "10002", -1, 30.0),
        ("R", "Cr4", at(20), "10003", -1, 5.0),
        ("R", "Cr5", T, "10003", -1, 50.0),
        ("R", "Cr6", at(-2), "10003", -1, 50.0),
        # M: one order with a purchase line and a return line
        ("M", "m1", at(10), "10001", 2, 10.0),
        ("M", "m1", at(10), "10001", -1, 10.0),
        # N: no returns
        ("N", "n1", at(10), "10001", 1, 10.0),
        # X: returns only (no purchase before the cutoff): not in the snapshot
        ("X", "x1", at(10), "10001", -3, 10.0),
    ]
    out = build_features(make_tx(rows), T)
    assert list(out.index) == ["M", "N", "R"]
    r = out.loc["R"]
    assert r["orders_all"] == 2
    assert r["monetary_all"] == pytest.approx(100)
    assert r["return_orders"] == 2
    assert r["return_rate_value"] == pytest.approx(45 / 100)
    assert r["return_rate_orders"] == pytest.approx(2 / 2)
    assert r["days_since_return"] == pytest.approx(20)
    assert r["basket_value"] == pytest.approx(50)
    assert r["basket_lines"] == pytest.approx(1.5)
    m = out.loc["M"]
    assert m["orders_all"] == 1
    assert m["monetary_all"] == pytest.approx(20)  # gross purchase value
    assert m["basket_lines"] == 1  # purchase lines only
    assert m["return_orders"] == 1
    assert m["return_rate_value"] == pytest.approx(0.5)
    assert m["return_rate_orders"] == pytest.approx(1.0)
    assert m["days_since_return"] == pytest.approx(10)
    n = out.loc["N"]
    assert n["return_orders"] == 0
    assert n["return_rate_value"] == 0
    assert n["return_rate_orders"] == 0
    assert np.isnan(n["days_since_return"])


# --------------------------------------------------------------------------- items


def item_rows():
    return [
        # I1: 85123A twice, 85123B, 22423 -> 3 distinct items; family 85123 has 3 of 4 lines
        ("I1", "a1", at(30), "85123A", 1, 2.0),
        ("I1", "a1", at(30), "85123B", 1, 2.0),
        ("I1", "a1", at(30), "22423", 1, 10.0),
        ("I1", "a2", at(20), "85123A", 1, 3.0),
        # I2: two- and one-letter variant suffixes of one family, and another family
        ("I2", "b1", at(30), "15056BL", 1, 1.0),
        ("I2", "b1", at(30), "15056N", 1, 1.0),
        ("I2", "b1", at(30), "79323LP", 1, 1.0),
        # I3: sets the item medians together with I1; its return and its purchase after
        # the cutoff must not move them
        ("I3", "c1", at(10), "85123A", 1, 4.0),
        ("I3", "c1", at(10), "22423", 1, 20.0),
        ("I3", "Cc2", at(5), "85123A", -1, 1000.0),
        ("I3", "c3", at(-1), "85123A", 1, 100.0),
        # I4: item ids without digits are their own family
        ("I4", "d1", at(10), "APPLE", 1, 1.0),
        ("I4", "d1", at(10), "PEAR", 1, 2.0),
        ("I4", "d2", at(5), "PEAR", 1, 4.0),
    ]


@pytest.fixture(scope="module")
def items():
    return build_features(make_tx(item_rows()), T)


def test_distinct_items(items):
    assert items["distinct_items"].to_dict() == {"I1": 3, "I2": 3, "I3": 2, "I4": 2}


def test_top_family_share(items):
    assert items.loc["I1", "top_family_share"] == pytest.approx(3 / 4)
    assert items.loc["I2", "top_family_share"] == pytest.approx(2 / 3)
    assert items.loc["I3", "top_family_share"] == pytest.approx(1 / 2)
    assert items.loc["I4", "top_family_share"] == pytest.approx(2 / 3)  # APPLE, PEAR, PEAR


def test_lines_without_an_item_have_no_family():
    # I4's lines plus two item-less orders (e.g. purchases reported through /events): the
    # family share stays over the lines that name an item, not a "nan" family of two.
    rows = [r for r in item_rows() if r[0] == "I4"]
    rows += [("I4", "e1", at(3), None, 1, 5.0), ("I4", "e2", at(2), None, 1, 5.0)]
    got = build_features(make_tx(rows), T)
    assert got.loc["I4", "top_family_share"] == pytest.approx(2 / 3)
    assert got.loc["I4", "distinct_items"] == 2


def test_price_index(items):
    # item medians before T over purchase lines: 85123A [2, 3, 4] -> 3, 85123B [2] -> 2,
    # 22423 [10, 20] -> 15, 15056BL/15056N/79323LP -> 1, APPLE 1, PEAR [2, 4] -> 3
    assert items.loc["I1", "price_index"] == pytest.approx((2 / 3 + 1 + 10 / 15 + 3 / 3) / 4)
    assert items.loc["I2", "price_index"] == pytest.approx(1.0)
    assert items.loc["I3", "price_index"] == pytest.approx((4 / 3 + 20 / 15) / 2)
    assert items.loc["I4", "price_index"] == pytest.approx((1 + 2 / 3 + 4 / 3) / 3)


def test_log_without_item_ids_gives_nan_item_features_only():
    with_items = build_features(make_tx(window_rows()), T)
    without = build_features(make_tx(window_rows(), with_items=False), T)
    item_cols = ["distinct_items", "top_family_share", "price_index"]
    assert without[item_cols].isna().all().all()
    assert with_items[item_cols].notna().all().all()
    others = [c for c in FEATURE_COLUMNS if c not in item_cols]
    pd.testing.assert_frame_equal(without[others], with_items[others], check_exact=True)
    maybe_nan = [*item_cols, "gap_median", "gap_mean", "gap_cv", "days_since_return"]
    assert without.drop(columns=maybe_nan).notna().all().all()


# --------------------------------------------------------------------------- usual hour


def test_usual_hour():
    rows = [
        # H1: hours 9, 14, 14, 9, 20 -> tie between 9 and 14, the earlier hour wins
        ("H1", "a1", at(10, 9), "10001", 1, 1.0),
        ("H1", "a2", at(9, 14), "10001", 1, 1.0),
        ("H1", "a3", at(8, 14), "10001", 1, 1.0),
        ("H1", "a4", at(7, 9), "10001", 1, 1.0),
        ("H1", "a5", at(6, 20), "10001", 1, 1.0),
        # H2: 14, 14, 9 -> 14
        ("H2", "b1", at(10, 14), "10001", 1, 1.0),
        ("H2", "b2", at(9, 14), "10001", 1, 1.0),
        ("H2", "b3", at(8, 9), "10001", 1, 1.0),
        # H3: an order's hour is its earliest line's (22, not 23): 22, 22, 23 -> 22
        ("H3", "c1", at(10, 23), "10001", 1, 1.0),
        ("H3", "c1", at(10, 22), "10002", 1, 1.0),
        ("H3", "c2", at(9, 22), "10001", 1, 1.0),
        ("H3", "c3", at(8, 23), "10001", 1, 1.0),
    ]
    out = build_features(make_tx(rows), T)["usual_hour"]
    assert out.to_dict() == {"H1": 9.0, "H2": 14.0, "H3": 22.0}
    assert "usual_hour" not in model_columns(build_features(make_tx(rows), T))


# --------------------------------------------------------------------------- engagement


def test_engagement_columns_from_events():
    tx = make_tx([("A", "a1", at(10), "10001", 1, 1.0), ("B", "b1", at(20), "10001", 1, 1.0)])
    ev = validate_events(
        pd.DataFrame(
            [
                ("A", at(10), "email", "cmp1", "sent"),
                ("A", at(90), "email", "cmp1", "sent"),  # 90 days back: inside the window
                ("A", at(90) - SECOND, "email", "cmp1", "sent"),  # outside
                ("A", T, "email", "cmp1", "sent"),  # at the cutoff: outside
                ("A", at(5), "email", "cmp1", "opened"),
                ("A", at(5), "email", "cmp1", "clicked"),
                ("A", at(4), "email", "cmp1", "unsubscribed"),
                ("B", at(3), "app_push", "cmp2", "sent"),
                ("Z", at(3), "email", "cmp2", "sent"),  # not a customer of the snapshot
            ],
            columns=["customer_id", "ts", "channel", "campaign_id", "event"],
        )
    )
    plain = build_features(tx, T)
    out = build_features(tx, T, events=ev)
    pd.testing.assert_frame_equal(out[FEATURE_COLUMNS], plain, check_exact=True)
    assert list(out.index) == ["A", "B"]
    a, b = out.loc["A"], out.loc["B"]
    assert (a["eng_email_sent"], a["eng_email_opened"], a["eng_email_clicked"]) == (2, 1, 1)
    assert a["eng_email_open_rate"] == pytest.approx(0.5)
    assert (b["eng_email_sent"], b["eng_email_opened"], b["eng_email_clicked"]) == (0, 0, 0)
    assert np.isnan(b["eng_email_open_rate"])
    assert (b["eng_app_push_sent"], b["eng_app_push_opened"]) == (1, 0)
    assert b["eng_app_push_open_rate"] == 0
    assert (a["eng_app_push_sent"], a["eng_app_push_clicked"]) == (0, 0)
    assert {c for c in model_columns(out) if c.startswith("eng_")} == {
        f"eng_{ch}_{k}"
        for ch in ("email", "app_push")
        for k in ("sent", "opened", "clicked", "open_rate")
    }


def test_no_engagement_columns_without_events():
    tx = make_tx([("A", "a1", at(10), "10001", 1, 1.0)])
    assert list(build_features(tx, T).columns) == FEATURE_COLUMNS
    empty = validate_events(pd.DataFrame(columns=["customer_id", "ts", "channel", "event"]))
    assert list(build_features(tx, T, events=empty).columns) == FEATURE_COLUMNS


def test_purchase_and_monetary_rates_are_per_year_of_tenure(gaps):
    # G3 bought on one day 5 days ago: tenure floored at 30 days -> 1 / (30/365) per year
    assert gaps.loc["G3", "purchase_rate"] == pytest.approx(365 / 30)
    assert gaps.loc["G3", "monetary_rate"] == pytest.approx(2.0 * 365 / 30)
    # G1: 4 purchase days over a tenure of 100 days minus the cutoff's hour offset
    tenure = gaps.loc["G1", "tenure_days"]
    assert 99 < tenure < 101
    assert gaps.loc["G1", "purchase_rate"] == pytest.approx(4 * 365 / tenure)
    assert gaps.loc["G1", "monetary_rate"] == pytest.approx(5.0 * 365 / tenure)


# --------------------------------------------------------------------------- season


def test_season_features_are_the_shops_and_have_known_values():
    rows = [
        ("S", "s1", at(300), "10001", 1, 1.0),  # the coming 90 days, a year earlier
        ("S", "s2", at(280), "10001", 1, 1.0),  # likewise
        ("S", "s3", at(400), "10001", 1, 1.0),  # the log reaches over a year back
        ("S", "s4", at(60), "10001", 1, 1.0),
        ("Q", "q1", at(10), "10001", 1, 1.0),
        ("Q", "q2", at(20), "10001", 1, 1.0),
        ("Q", "q3", at(80), "10001", 1, 1.0),
        ("Q", "q4", at(120), "10001", 1, 1.0),  # outside the last 90 days
    ]
    out = build_features(make_tx(rows), T)
    middle_day = (T + pd.Timedelta(days=45)).dayofyear  # 15 February: day 46
    angle = 2 * math.pi * (middle_day - 1) / 365.25
    for c in ("S", "Q"):  # the same for every customer
        assert out.loc[c, "season_sin"] == pytest.approx(math.sin(angle))
        assert out.loc[c, "season_cos"] == pytest.approx(math.cos(angle))
        # last 90 days: s4, q1, q2, q3 = 4 orders; last 30: q1, q2 = 2; 3 × 2 / 4
        assert out.loc[c, "shop_trend_30d"] == pytest.approx(1.5)
        # a year before the coming window: s1, s2 = 2 orders, over the last 90 days' 4
        assert out.loc[c, "shop_season_ly"] == pytest.approx(0.5)
    young = build_features(make_tx([r for r in rows if r[1] != "s3"]), T)
    assert young["shop_season_ly"].isna().all()  # under a year of history: unknown


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_partitioned_build_is_the_same_frame(n):
    tx = make_tx(window_rows() + season_rows())
    ev = validate_events(
        pd.DataFrame(
            [("A", at(10), "email", "c", "sent"), ("E", at(3), "sms", "c", "sent")],
            columns=["customer_id", "ts", "channel", "campaign_id", "event"],
        )
    )
    whole = build_features(tx, T, events=ev)
    parts = build_features(tx, T, events=ev, partitions=n)
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)


@pytest.mark.parametrize("n", [1, 3])
def test_integer_coded_ids_give_the_same_frame(n, synthetic_tx):
    t = pd.Timestamp("2021-03-01")
    returns = synthetic_tx.iloc[::7].assign(
        quantity=lambda d: -d["quantity"],
        order_id=lambda d: "R" + d["order_id"],
        ts=lambda d: d["ts"] + pd.Timedelta(days=2),
    )
    tx = validate_transactions(pd.concat([synthetic_tx, returns], ignore_index=True))
    whole = build_features(tx, t)
    assert (whole["return_orders"] > 0).any() and whole["distinct_items"].gt(1).any()
    coded = coded_ids(tx)
    assert all(isinstance(coded[c].dtype, pd.CategoricalDtype) for c in ID_COLUMNS)
    assert coded["customer_id"].astype("str").equals(tx["customer_id"])
    pd.testing.assert_frame_equal(build_features(coded, t, partitions=n), whole, check_exact=True)


def test_item_median_prices_on_text_and_coded_ids():
    tx = make_tx([("A", "o1", at(5), "x", 1, 2.0), ("B", "o2", at(4), "x", 1, 4.0)])
    tx = pd.concat([tx, make_tx([("C", "o3", at(3), "y", 1, 9.0)])], ignore_index=True)
    want = pd.Series([3.0, 9.0], index=pd.Index(["x", "y"], name="item_id"), name="unit_price")
    for frame in (tx, coded_ids(tx)):
        pd.testing.assert_series_equal(item_median_prices(frame), want, check_index_type=False)


def test_every_customer_is_in_exactly_one_partition():
    tx = make_tx(window_rows() + season_rows())
    parts = customer_partitions(tx, 3)
    assert sum(len(p) for p in parts) == len(tx)
    owners = [set(p["customer_id"]) for p in parts]
    assert set().union(*owners) == set(tx["customer_id"])
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    with pytest.raises(ValueError, match="partitions"):
        customer_partitions(tx, 0)


def season_rows():
    return [
        ("S", "s1", at(300), "10001", 1, 1.0),
        ("S", "s2", at(60), "10002", 3, 2.5),
        ("Q", "q1", at(10), "10002", 1, 2.0),
        ("Q", "q2", at(20), "10001", 2, 1.5),
        ("Q", "q3", at(15), "10001", -1, 1.5),
    ]
