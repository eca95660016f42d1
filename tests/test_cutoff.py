"""Cutting a log at a cutoff: a slice of a log in time order, a filtered copy otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.cutoff import in_time_order, rows_before
from features.labels import build_training_frame
from features.snapshot import build_features, coded_ids


def _log() -> pd.DataFrame:
    ts = pd.to_datetime(["2021-01-03", "2021-01-01", "2021-01-02", "2021-01-01", "2021-01-05"])
    return pd.DataFrame({"ts": ts, "quantity": [1.0, 2.0, 3.0, 4.0, 5.0]})


def test_in_time_order_is_stable_and_keeps_a_sorted_frame():
    tx = _log()
    ordered = in_time_order(tx)
    assert ordered["quantity"].tolist() == [2.0, 4.0, 3.0, 1.0, 5.0]  # ties in file order
    assert ordered.index.tolist() == list(range(5))
    assert in_time_order(ordered) is ordered


@pytest.mark.parametrize("t", ["2020-12-31", "2021-01-02", "2021-01-02 00:00:01", "2022-01-01"])
def test_rows_before_is_the_filter_either_way(t):
    t = pd.Timestamp(t)
    tx = _log()
    ordered = in_time_order(tx)
    for frame in (tx, ordered):
        want = frame[frame["ts"] < t]
        pd.testing.assert_frame_equal(rows_before(frame, t), want)
    assert len(rows_before(ordered, t.to_datetime64())) == int((tx["ts"] < t).sum())


def test_rows_before_shares_a_sorted_frames_memory():
    ordered = in_time_order(_log())
    cut = rows_before(ordered, pd.Timestamp("2021-01-03"))
    assert np.shares_memory(cut["quantity"].to_numpy(), ordered["quantity"].to_numpy())
    unsorted = _log()
    copied = rows_before(unsorted, pd.Timestamp("2021-01-03"))
    assert not np.shares_memory(copied["quantity"].to_numpy(), unsorted["quantity"].to_numpy())


def test_features_and_training_frame_the_same_on_a_log_in_time_order(synthetic_tx):
    shuffled = coded_ids(synthetic_tx.sample(frac=1.0, random_state=3).reset_index(drop=True))
    ordered = in_time_order(shuffled)
    assert not shuffled["ts"].is_monotonic_increasing
    t = pd.Timestamp("2021-06-01")
    pd.testing.assert_frame_equal(build_features(ordered, t), build_features(shuffled, t))
    cutoffs = [pd.Timestamp("2021-03-01"), t]
    pd.testing.assert_frame_equal(
        build_training_frame(ordered, cutoffs, 30, observed_until=pd.Timestamp("2021-07-15")),
        build_training_frame(shuffled, cutoffs, 30, observed_until=pd.Timestamp("2021-07-15")),
    )
