"""Known-answer tests for features.labels: labels, training cutoffs, the stacked frame.

Dates and day counts are worked out by hand (calendar arithmetic in the comments).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contracts import validate_transactions
from features.labels import (
    backtest_cutoff,
    build_labels,
    build_snapshots,
    build_training_frame,
    snapshot_at,
    training_cutoffs,
)
from features.snapshot import FEATURE_COLUMNS, build_features

T = pd.Timestamp("2021-03-01")
D = pd.Timedelta(days=1)


def make_tx(rows) -> pd.DataFrame:
    """rows: (customer, ts, quantity); one order per row."""
    df = pd.DataFrame(rows, columns=["customer_id", "ts", "quantity"])
    df["order_id"] = [f"o{i}" for i in range(len(df))]
    df["unit_price"] = 2.0
    return validate_transactions(df)


# --------------------------------------------------------------------------- build_labels


def label_log():
    return make_tx(
        [
            *[(c, T - 10 * D, 1) for c in "abcdefghk"],  # history
            ("a", T + 5 * D, 1),
            ("a", T + 50 * D, 1),  # the first future order counts
            ("b", T - 1 * D, 1),
            ("b", T + 45 * D, 1),
            ("c", T + 90 * D, 1),  # day 90: outside [T, T + 90)
            ("d", T + 3 * D, -1),  # a return is not an order
            ("d", T + 100 * D, 1),  # the last row of the log
            ("f", T, 1),  # at the cutoff: inside [T, ...)
            ("g", T + 30 * D, 1),  # day 30: outside [T, T + 30)
            ("h", T + 29.5 * D, 1),
            ("k", T + 60 * D, 1),
            # e: no future order at all
        ]
    )


CUSTOMERS = pd.Index(list("abcdefghkz"), name="customer_id")  # z is not in the log


def test_labels_to_end_of_log():
    lab = build_labels(label_log(), T, CUSTOMERS, horizon=90)
    assert list(lab.index) == list(CUSTOMERS)
    # end of the log is d's order at T + 100: censored customers get 100 days
    expected = {
        #     churn buy_30d days  observed
        "a": (0, 1, 5.0, True),
        "b": (0, 0, 45.0, True),
        "c": (1, 0, 90.0, True),
        "d": (1, 0, 100.0, True),
        "e": (1, 0, 100.0, False),
        "f": (0, 1, 0.0, True),
        "g": (0, 0, 30.0, True),
        "h": (0, 1, 29.5, True),
        "k": (0, 0, 60.0, True),
        "z": (1, 0, 100.0, False),
    }
    for c, (churn, buy, days, observed) in expected.items():
        row = lab.loc[c]
        assert (row["churn"], row["buy_30d"], row["next_observed"]) == (churn, buy, observed), c
        assert row["days_to_next"] == pytest.approx(days), c
    assert lab["churn"].dtype == np.int8
    assert lab["buy_30d"].dtype == np.int8
    assert lab["next_observed"].dtype == bool


def test_labels_censored_at_observed_until():
    lab = build_labels(label_log(), T, CUSTOMERS, horizon=90, observed_until=T + 60 * D)
    expected = {
        "a": (0, 1, 5.0, True),
        "b": (0, 0, 45.0, True),
        "c": (1, 0, 60.0, False),  # T + 90 is not observed
        "d": (1, 0, 60.0, False),
        "e": (1, 0, 60.0, False),
        "f": (0, 1, 0.0, True),
        "g": (0, 0, 30.0, True),
        "h": (0, 1, 29.5, True),
        "k": (1, 0, 60.0, False),  # an order exactly at observed_until is not seen
        "z": (1, 0, 60.0, False),
    }
    for c, (churn, buy, days, observed) in expected.items():
        row = lab.loc[c]
        assert (row["churn"], row["buy_30d"], row["next_observed"]) == (churn, buy, observed), c
        assert row["days_to_next"] == pytest.approx(days), c


def test_labels_horizon():
    lab = build_labels(label_log(), T, CUSTOMERS, horizon=30)
    assert lab["churn"].to_dict() == {
        "a": 0,
        "b": 1,
        "c": 1,
        "d": 1,
        "e": 1,
        "f": 0,
        "g": 1,
        "h": 0,
        "k": 1,
        "z": 1,
    }
    assert (lab["buy_30d"] == 1 - lab["churn"]).all()  # same window when H = 30


def test_labels_ignore_the_past():
    # b ordered the day before the cutoff; that is not a "next" order
    lab = build_labels(label_log(), T, pd.Index(["b"]), horizon=30)
    assert lab.loc["b", "churn"] == 1
    assert lab.loc["b", "days_to_next"] == pytest.approx(45)


# --------------------------------------------------------------------------- cutoffs


def cutoff_log():
    return make_tx(
        [("p", pd.Timestamp("2020-01-01 10:00"), 1), ("p", pd.Timestamp("2021-01-20"), 1)]
    )


def test_training_cutoffs_spacing_and_min_history():
    # label_end 2021-01-01 - 90 d = 2020-10-03, then every 30 d back while >= the log's first
    # day + 180 d = 2020-06-29 (2020 is a leap year: Jan 1 + 182 d = Jul 1)
    cuts = training_cutoffs(cutoff_log(), pd.Timestamp("2021-01-01"))
    assert cuts == [
        pd.Timestamp(d) for d in ("2020-10-03", "2020-09-03", "2020-08-04", "2020-07-05")
    ]
    assert all(a - b == pd.Timedelta(days=30) for a, b in zip(cuts, cuts[1:], strict=False))


def test_training_cutoffs_parameters():
    tx = cutoff_log()
    end = pd.Timestamp("2021-01-01")
    assert training_cutoffs(tx, end, max_cutoffs=2) == [
        pd.Timestamp("2020-10-03"),
        pd.Timestamp("2020-09-03"),
    ]
    assert training_cutoffs(tx, end, step_days=60) == [
        pd.Timestamp("2020-10-03"),
        pd.Timestamp("2020-08-04"),
    ]
    assert training_cutoffs(tx, end, horizon=30)[0] == pd.Timestamp("2020-12-02")
    # 2020-01-01 + 186 d = 2020-07-05: a cutoff exactly at the minimum history is kept
    assert training_cutoffs(tx, end, min_history_days=186)[-1] == pd.Timestamp("2020-07-05")
    assert training_cutoffs(tx, end, min_history_days=187)[-1] == pd.Timestamp("2020-08-04")


def test_training_cutoffs_error_when_none_fits():
    with pytest.raises(ValueError, match="no training cutoff"):
        training_cutoffs(cutoff_log(), pd.Timestamp("2020-08-01"))


def test_backtest_cutoff():
    tx = make_tx(
        [("p", pd.Timestamp("2021-01-05 09:00"), 1), ("p", pd.Timestamp("2021-08-31 17:45"), 1)]
    )
    # the day after the last calendar day, 2021-09-01, minus 90 days (31 + 31 + 28) =
    # 2021-06-03: the held-out window [06-03, 09-01) ends where the log ends
    assert backtest_cutoff(tx) == pd.Timestamp("2021-06-03")
    assert backtest_cutoff(tx, holdout_days=30) == pd.Timestamp("2021-08-02")
    midnight = make_tx([("p", pd.Timestamp("2021-08-31"), 1)])
    assert backtest_cutoff(midnight) == pd.Timestamp("2021-06-03")


# --------------------------------------------------------------------------- training frame

OBSERVED_UNTIL = pd.Timestamp("2021-01-01")
CUTOFFS = [pd.Timestamp(d) for d in ("2020-10-03", "2020-09-03", "2020-08-04", "2020-07-05")]


def frame_log():
    ts = pd.Timestamp
    return make_tx(
        [
            ("p", ts("2020-01-01 10:00"), 1),
            ("p", ts("2020-06-01"), 1),
            ("p", ts("2020-10-20"), 1),
            ("p", ts("2020-12-31 23:00"), 1),
            ("p", ts("2021-01-01"), 1),  # exactly at observed_until: held out
            ("p", ts("2021-01-15"), 1),
            ("q", ts("2020-03-01"), 1),
            ("q", ts("2020-08-01"), 1),
            ("q", ts("2021-01-10"), 1),  # only future order is in the held-out window
            ("r", ts("2020-09-10"), 1),
            ("r", ts("2020-11-01"), -1),  # a return, not an order
        ]
    )


def test_training_frame_rows_and_labels():
    fr = build_training_frame(frame_log(), CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    assert {"cutoff", "customer_id"} <= set(fr.columns)
    assert fr["cutoff"].dtype.kind == "M"
    assert set(FEATURE_COLUMNS) <= set(fr.columns)
    assert {"churn", "buy_30d", "days_to_next", "next_observed"} <= set(fr.columns)
    rows = {(str(c.date()), cid) for c, cid in zip(fr["cutoff"], fr["customer_id"], strict=True)}
    assert rows == {
        ("2020-10-03", "p"),
        ("2020-10-03", "q"),
        ("2020-10-03", "r"),
        ("2020-09-03", "p"),
        ("2020-09-03", "q"),
        ("2020-08-04", "p"),
        ("2020-08-04", "q"),
        ("2020-07-05", "p"),
        ("2020-07-05", "q"),
    }
    lab = fr.set_index(["cutoff", "customer_id"])
    # (cutoff, customer): churn, buy_30d, days_to_next, next_observed
    expected = {
        ("2020-10-03", "p"): (0, 1, 17.0, True),  # Oct 3 -> Oct 20
        ("2020-09-03", "p"): (0, 0, 47.0, True),  # 27 + 20
        ("2020-07-05", "p"): (1, 0, 107.0, True),  # 26 + 31 + 30 + 20
        ("2020-10-03", "q"): (1, 0, 90.0, False),  # censored at observed_until
        ("2020-10-03", "r"): (1, 0, 90.0, False),
        ("2020-08-04", "q"): (1, 0, 150.0, False),  # Aug 4 -> Jan 1 = 27 + 30 + 31 + 30 + 31 + 1
    }
    for (cut, cid), (churn, buy, days, observed) in expected.items():
        row = lab.loc[(pd.Timestamp(cut), cid)]
        assert (row["churn"], row["buy_30d"], row["next_observed"]) == (churn, buy, observed)
        assert row["days_to_next"] == pytest.approx(days)


def test_training_frame_features_are_the_snapshot_at_each_cutoff():
    tx = frame_log()
    fr = build_training_frame(tx, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    for t in CUTOFFS:
        got = fr[fr["cutoff"] == t].set_index("customer_id")[FEATURE_COLUMNS]
        pd.testing.assert_frame_equal(got, build_features(tx, t), check_exact=True)


def test_snapshots_are_built_once_per_distinct_cutoff_and_reused():
    tx = frame_log()
    snaps = build_snapshots(tx, [*CUTOFFS, CUTOFFS[0]])  # a repeated cutoff is built once
    assert list(snaps) == sorted(set(CUTOFFS))
    for t in CUTOFFS:
        pd.testing.assert_frame_equal(snaps[t], build_features(tx, t), check_exact=True)
    # a training frame from the snapshots is the one built from scratch
    fr = build_training_frame(tx, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    reused = build_training_frame(
        tx, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL, snapshots=snaps
    )
    pd.testing.assert_frame_equal(fr, reused, check_exact=True)
    # the frame really reads the snapshot it is given, and builds what is missing
    marked = {t: f.assign(recency_days=-1.0) for t, f in snaps.items()}
    assert (snapshot_at(tx, CUTOFFS[0], marked)["recency_days"] == -1.0).all()
    other = pd.Timestamp("2020-06-01")
    pd.testing.assert_frame_equal(snapshot_at(tx, other, marked), build_features(tx, other))


def test_no_label_reads_past_observed_until():
    tx = frame_log()
    fr = build_training_frame(tx, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    cut = tx[tx["ts"] < OBSERVED_UNTIL]
    fr_cut = build_training_frame(cut, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    pd.testing.assert_frame_equal(fr, fr_cut, check_exact=True)
    # and different later rows change nothing either
    later = make_tx([("q", pd.Timestamp("2021-01-01"), 1), ("s", pd.Timestamp("2021-02-01"), 1)])
    more = pd.concat([tx, later], ignore_index=True)
    fr_more = build_training_frame(more, CUTOFFS, horizon=90, observed_until=OBSERVED_UNTIL)
    pd.testing.assert_frame_equal(fr, fr_more, check_exact=True)
    # without the bound, q's 2021-01-10 order is seen: Oct 3 -> Jan 10 = 28 + 30 + 31 + 10
    free = build_training_frame(tx, [CUTOFFS[0]], horizon=90).set_index("customer_id")
    assert bool(free.loc["q", "next_observed"])
    assert free.loc["q", "days_to_next"] == pytest.approx(99)


def test_training_frame_raises_when_label_window_passes_observed_until():
    tx = frame_log()
    # 2020-10-03 + 90 d = 2021-01-01: ends exactly at observed_until, allowed
    build_training_frame(tx, [pd.Timestamp("2020-10-03")], 90, observed_until=OBSERVED_UNTIL)
    with pytest.raises(ValueError, match="label window"):
        build_training_frame(tx, [pd.Timestamp("2020-10-04")], 90, observed_until=OBSERVED_UNTIL)
    with pytest.raises(ValueError, match="label window"):
        build_training_frame(tx, [pd.Timestamp("2020-12-03")], 30, observed_until=OBSERVED_UNTIL)
