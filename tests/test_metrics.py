"""Known-answer and property tests for training.metrics (answers worked out by hand below)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import (
    binary_report,
    brier,
    calibration_bins,
    cumulative_gain,
    decile_lift,
    expected_calibration_error,
    hit_rate_at_k,
    lift_quality,
    mae,
    ndcg_at_k,
    pr_auc,
    recall_at_k,
    roc_auc,
    top_decile_lift,
)

# Shared toy example: sorted by score the labels read 1, 0, 1, 0.
Y = np.array([1, 0, 1, 0])
S = np.array([0.9, 0.8, 0.7, 0.1])
INV_LOG2_3 = 1.0 / math.log2(3)  # NDCG discount of rank 2


# ---------------------------------------------------------------------------------------------
# Binary metrics
# ---------------------------------------------------------------------------------------------


def test_roc_auc_known_answer():
    # positive/negative pairs: (.9,.8) win, (.9,.1) win, (.7,.8) loss, (.7,.1) win -> 3/4
    assert roc_auc(Y, S) == pytest.approx(0.75)


def test_roc_auc_counts_ties_as_half():
    # pairs: (.5,.5) tie -> 1/2, (.5,.1) win -> 1; mean 3/4
    assert roc_auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)


def test_pr_auc_known_answer():
    # ranks 1..4 = 1,0,1,0: precision at the two positives 1/1 and 2/3 -> AP = (1 + 2/3)/2
    assert pr_auc(Y, S) == pytest.approx(5 / 6)


def test_brier_known_answer():
    # (1-.8)^2 + (0-.4)^2 + (1-.6)^2 + (0-.1)^2 = .04 + .16 + .16 + .01 = .37; / 4
    assert brier(Y, [0.8, 0.4, 0.6, 0.1]) == pytest.approx(0.0925)


def test_ece_one_prediction_per_bin():
    # bins 8, 4, 6, 1 each hold one case: (.2 + .4 + .4 + .1) / 4
    assert expected_calibration_error(Y, [0.8, 0.4, 0.6, 0.1]) == pytest.approx(0.275)


def test_ece_weights_bins_by_count():
    # bin [.1,.2): p .12,.18 -> mean .15, rate 1/2, gap .35, weight 2/5
    # bin [.8,.9): p .85 -> rate 1, gap .15, weight 1/5
    # bin [.9,1]: p .95,.91 -> mean .93, rate 1/2, gap .43, weight 2/5
    # ECE = .4*.35 + .2*.15 + .4*.43 = .14 + .03 + .172
    p = [0.12, 0.18, 0.85, 0.95, 0.91]
    assert expected_calibration_error([0, 1, 1, 1, 0], p) == pytest.approx(0.342)


def test_ece_puts_probability_one_in_last_bin_and_uses_equal_widths():
    mean_p, rate, counts = calibration_bins([1, 0, 1], [1.0, 0.95, 0.05], n_bins=2)
    assert counts.tolist() == [1, 2]  # 0.05 in [0, .5); 0.95 and 1.0 in [.5, 1]
    assert mean_p[1] == pytest.approx(0.975) and rate[1] == pytest.approx(0.5)
    assert expected_calibration_error([0], [1.0]) == pytest.approx(1.0)


def test_top_decile_lift_known_answer():
    # n = 4 -> top ceil(0.4) = 1 customer (score .9, a positive): rate 1 / overall 1/2 = 2
    assert top_decile_lift(Y, S) == pytest.approx(2.0)


def test_top_decile_lift_breaks_ties_by_input_order():
    # n = 20 -> top 2. Scores tie at .9 for rows 0, 1, 2 with labels 0, 1, 1; a stable sort
    # keeps rows 0, 1 -> rate 1/2; overall rate 2/20 -> lift 5 (rows 1, 2 would give 10).
    y = np.zeros(20, dtype=int)
    y[[1, 2]] = 1
    score = np.full(20, 0.1)
    score[:3] = 0.9
    assert top_decile_lift(y, score) == pytest.approx(5.0)


def test_decile_lift_groups_follow_array_split():
    # 10 customers, scores descending: each decile is one customer, lift = y / mean(y) = y / .3
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    lifts = decile_lift(y, np.linspace(1, 0, 10))
    np.testing.assert_allclose(lifts, y / 0.3)
    assert lifts[0] == pytest.approx(top_decile_lift(y, np.linspace(1, 0, 10)))


def test_cumulative_gain_treats_tied_scores_as_one_block():
    # scores .9 | .5 .5 | .1 with labels 1 | 0 1 | 0: vertices (0,0), (.25,.5), (.75,1), (1,1)
    x, g = cumulative_gain([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    np.testing.assert_allclose(x, [0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(g, [0, 0.5, 1.0, 1.0])


def test_lift_quality_known_answer():
    # gain vertices (0,0) (.25,.5) (.5,.5) (.75,1) (1,1): area .0625 + .125 + .1875 + .25 = .625
    # random .5, perfect 1 - pi/2 = .75 -> (.625 - .5) / (.75 - .5) = .5
    assert lift_quality(Y, S) == pytest.approx(0.5)


def test_lift_quality_with_ties_known_answer():
    # area under (0,0) (.25,.5) (.75,1) (1,1) = .0625 + .375 + .25 = .6875 -> (.6875-.5)/.25
    assert lift_quality([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.75)
    # ... and the same whatever the input order of the tied rows
    assert lift_quality([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.75)


def test_lift_quality_perfect_random_and_reversed():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    perfect = y.astype(float)
    assert lift_quality(y, perfect) == pytest.approx(1.0)
    assert lift_quality(y, -perfect) == pytest.approx(-1.0)
    assert lift_quality(y, np.zeros(10)) == pytest.approx(0.0)  # one tied block = random


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40).filter(
        lambda rows: 0 < sum(r[0] for r in rows) < len(rows)
    )
)
def test_lift_quality_is_the_gini_coefficient(rows):
    # accuracy ratio of the CAP curve = 2 AUC - 1 (Engelmann, Hayden & Tasche 2003), ties too
    y = np.array([r[0] for r in rows], dtype=int)
    s = np.array([r[1] for r in rows], dtype=float)
    assert lift_quality(y, s) == pytest.approx(2 * roc_auc(y, s) - 1, abs=1e-12)


def test_binary_report_collects_every_metric():
    p = np.array([0.8, 0.4, 0.6, 0.1])
    report = binary_report(Y, S, p)
    assert report == {
        "auc": pytest.approx(0.75),
        "pr_auc": pytest.approx(5 / 6),
        "brier": pytest.approx(0.0925),
        "ece": pytest.approx(0.275),
        "top_decile_lift": pytest.approx(2.0),
        "lift_quality": pytest.approx(0.5),
        "positive_rate": pytest.approx(0.5),
        "predicted_rate": pytest.approx(0.475),
        "n": 4.0,
    }


def test_binary_report_uses_score_as_probability_only_when_it_is_one():
    assert binary_report(Y, S)["brier"] == pytest.approx(brier(Y, S))
    counts = binary_report(Y, S * 10)  # e.g. expected purchases: ranks fine, not a probability
    assert math.isnan(counts["brier"]) and math.isnan(counts["ece"])
    assert counts["auc"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: roc_auc([1, 0, 1], [0.1, 0.2]), "length mismatch"),
        (lambda: roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "only positives"),
        (lambda: roc_auc([0, 0], [0.1, 0.2]), "only negatives"),
        (lambda: pr_auc([0, 0], [0.1, 0.2]), "no positives"),
        (lambda: lift_quality([1, 1], [0.1, 0.2]), "only positives"),
        (lambda: top_decile_lift([0, 0], [0.1, 0.2]), "no positives"),
        (lambda: roc_auc([1, 2], [0.1, 0.2]), "binary labels"),
        (lambda: roc_auc([1, 0], [0.1, np.nan]), "NaN"),
        (lambda: brier([1, 0], [0.5, 1.5]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([1, 0], [0.5, 0.5], n_bins=0), "n_bins"),
        (lambda: binary_report([1, 1], [0.5, 0.5]), "only positives"),
        (lambda: mae([1.0, 2.0], [1.0]), "length mismatch"),
        (lambda: roc_auc([], []), "empty"),
    ],
)
def test_invalid_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------


def test_mae_known_answer():
    # |1-2| + |2-2| + |3-5| = 3; / 3
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------------

RECS = [["a", "b", "c", "d"], ["x", "y", "z"], ["p", "q"], ["m", "n", "o"]]
RELEVANT = [{"b", "d", "e"}, set(), {"q"}, {"zz"}]


def test_recall_at_k_known_answer():
    # k=3. user 1: top {a,b,c} hits {b}: 1 / min(3, 3) = 1/3; user 2 has nothing relevant and
    # is skipped; user 3: hits {q}: 1 / min(3, 1) = 1; user 4: 0. Mean over 3 users = 4/9.
    assert recall_at_k(RECS, RELEVANT, k=3) == pytest.approx(4 / 9)


def test_recall_at_k_caps_the_denominator_at_k():
    # 5 relevant items, both top-2 slots hit: 2 / min(2, 5) = 1 (2/5 with |relevant|)
    assert recall_at_k([["a", "b", "c"]], [{"a", "b", "c", "d", "e"}], k=2) == pytest.approx(1.0)


def test_hit_rate_at_k_known_answer():
    # users 1 and 3 have a hit in their top 3, user 4 does not, user 2 is skipped -> 2/3
    assert hit_rate_at_k(RECS, RELEVANT, k=3) == pytest.approx(2 / 3)


def test_ndcg_at_k_known_answer():
    # user 1: hit at rank 2 -> DCG 1/log2(3); IDCG (3 relevant) 1 + 1/log2(3) + 1/log2(4)
    # user 3: hit at rank 2 -> DCG 1/log2(3); IDCG (1 relevant) 1; user 4: 0
    user1 = INV_LOG2_3 / (1 + INV_LOG2_3 + 0.5)
    assert ndcg_at_k(RECS, RELEVANT, k=3) == pytest.approx((user1 + INV_LOG2_3 + 0) / 3)


def test_ndcg_counts_a_repeated_item_once():
    # a, a, b with {a, b}: DCG = 1 + 0 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    assert ndcg_at_k([["a", "a", "b"]], [{"a", "b"}], k=3) == pytest.approx(1.5 / (1 + INV_LOG2_3))
    assert recall_at_k([["a", "a", "b"]], [{"a", "b"}], k=3) == pytest.approx(1.0)


def test_ranking_metrics_accept_a_2d_array():
    recs = np.array([[1, 2, 3], [4, 5, 6]])
    # k=2: user 1's top {1,2} misses {3}, user 2 misses {7} -> 0; k=3: user 1 hits -> 1/2
    assert recall_at_k(recs, [{3}, {7}], k=2) == 0.0
    assert recall_at_k(recs, [{3}, {7}], k=3) == pytest.approx(0.5)
    assert ndcg_at_k(recs, [{1}, {4}], k=1) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: recall_at_k([["a"]], [{"a"}, {"b"}]), "length mismatch"),
        (lambda: ndcg_at_k([["a"]], [set()]), "no user has a relevant item"),
        (lambda: hit_rate_at_k([["a"]], [{"a"}], k=0), "positive integer"),
    ],
)
def test_ranking_invalid_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
