"""Evaluation metrics for the churn, next-purchase and recommendation models.

Binary (ranking quality, calibration, campaign lift), regression (MAE) and top-k ranking
metrics, in numpy; ROC AUC and average precision come from scikit-learn. Every function
validates its inputs and raises ``ValueError`` with the argument name when a metric is
undefined (length mismatch, one class only, no relevant items) instead of returning NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score

from servable.checks import binary_flags, finite_values

__all__ = [
    "binary_flags",
    "binary_report",
    "brier",
    "calibration_bins",
    "cumulative_gain",
    "decile_lift",
    "expected_calibration_error",
    "finite_values",
    "hit_rate_at_k",
    "lift_quality",
    "mae",
    "ndcg_at_k",
    "pr_auc",
    "recall_at_k",
    "roc_auc",
    "top_decile_lift",
]


def _labels(y: ArrayLike) -> np.ndarray:
    return binary_flags("y", y, "binary labels 0/1").astype(np.int64)


def _probabilities(p: ArrayLike, n: int) -> np.ndarray:
    arr = finite_values("p", p, n)
    if np.any((arr < 0) | (arr > 1)):
        raise ValueError("p must be probabilities in [0, 1]")
    return arr


def _both_classes(y: np.ndarray, metric: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "positives" if n_pos else "negatives"
        raise ValueError(f"{metric} is undefined when y holds only {only}")


def _some_positive(y: np.ndarray, metric: str) -> None:
    if y.sum() == 0:
        raise ValueError(f"{metric} is undefined when y has no positives")


# ---------------------------------------------------------------------------------------------
# Binary classification
# ---------------------------------------------------------------------------------------------


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2."""
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _both_classes(labels, "ROC AUC")
    return float(roc_auc_score(labels, s))


def pr_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Average precision: sum_n (R_n - R_{n-1}) P_n over score thresholds (sklearn's AP)."""
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _some_positive(labels, "average precision")
    return float(average_precision_score(labels, s))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared error of the predicted probability (Brier 1950)."""
    labels = _labels(y)
    prob = _probabilities(p, labels.size)
    return float(np.mean((prob - labels) ** 2))


def calibration_bins(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean predicted probability, observed positive rate, count.

    Bin i holds p in [i/n_bins, (i+1)/n_bins); p == 1 falls in the last bin. Empty bins get NaN
    means and count 0.
    """
    labels = _labels(y)
    prob = _probabilities(p, labels.size)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.minimum(np.floor(prob * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    sum_p = np.bincount(idx, weights=prob, minlength=n_bins)
    sum_y = np.bincount(idx, weights=labels.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_p / counts, sum_y / counts, counts


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / n) |mean(y_b) - mean(p_b)| over equal-width bins (Naeini et al. 2015)."""
    mean_p, rate, counts = calibration_bins(y, p, n_bins)
    used = counts > 0
    return float(np.sum(counts[used] / counts.sum() * np.abs(rate[used] - mean_p[used])))


def top_decile_lift(y: ArrayLike, score: ArrayLike) -> float:
    """Positive rate among the top ceil(n/10) by score / overall positive rate.

    Ties keep input order (stable descending sort), so the result is deterministic.
    """
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _some_positive(labels, "top-decile lift")
    k = math.ceil(labels.size / 10)
    top = np.argsort(-s, kind="stable")[:k]
    return float(labels[top].mean() / labels.mean())


def decile_lift(y: ArrayLike, score: ArrayLike, n_groups: int = 10) -> np.ndarray:
    """Lift of each of ``n_groups`` near-equal groups ranked by descending score (stable sort).

    Group sizes follow ``np.array_split`` (the first ``n % n_groups`` groups get one more), so
    group 0 is the same top ceil(n/10) as :func:`top_decile_lift` when ``n_groups`` is 10.
    """
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _some_positive(labels, "decile lift")
    if not 1 <= n_groups <= labels.size:
        raise ValueError(f"n_groups must be in [1, {labels.size}], got {n_groups}")
    order = np.argsort(-s, kind="stable")
    base = labels.mean()
    return np.array([labels[g].mean() / base for g in np.array_split(order, n_groups)])


def cumulative_gain(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative-gain curve: (fraction of audience targeted, fraction of positives captured).

    Customers are targeted by descending score; a block of tied scores is targeted together, so
    the curve has one vertex per distinct score (linear in between) and does not depend on the
    input order. Starts at (0, 0) and ends at (1, 1).
    """
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _some_positive(labels, "the cumulative-gain curve")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], labels[order]
    block_end = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), labels.size - 1]
    targeted = (block_end + 1) / labels.size
    captured = np.cumsum(y_sorted)[block_end] / labels.sum()
    return np.r_[0.0, targeted], np.r_[0.0, captured]


def lift_quality(y: ArrayLike, score: ArrayLike) -> float:
    """Normalised area under the cumulative-gain curve: 0 random ordering, 1 perfect ordering.

    LQ = (A_model - A_random) / (A_perfect - A_random), with A the area under
    :func:`cumulative_gain`, A_random = 1/2 (the diagonal) and A_perfect = 1 - pi/2 (all
    positives first; pi = positive rate). Equivalently the average, over all audience sizes, of
    the gain above random, relative to the best achievable. This is the accuracy ratio of the
    CAP curve, which equals the Gini coefficient 2 * ROC AUC - 1 (Engelmann, Hayden & Tasche
    2003); it can be negative for worse-than-random orderings.
    """
    labels = _labels(y)
    _both_classes(labels, "lift quality")
    x, g = cumulative_gain(labels, score)
    area = float(np.trapezoid(g, x))
    pi = labels.mean()
    return (area - 0.5) / ((1.0 - pi / 2.0) - 0.5)


def binary_report(y: ArrayLike, score: ArrayLike, p: ArrayLike | None = None) -> dict[str, float]:
    """All binary metrics at once: auc, pr_auc, brier, ece, top_decile_lift, lift_quality,
    positive_rate, predicted_rate (the mean probability: the base rate the model expects), n.

    ``score`` ranks; ``p`` (default: ``score``) must be probabilities for ``brier`` and ``ece``.
    When ``p`` is omitted and ``score`` is not in [0, 1] (e.g. expected purchases), ``brier``
    and ``ece`` are NaN rather than computed from numbers that are not probabilities.
    """
    labels = _labels(y)
    s = finite_values("score", score, labels.size)
    _both_classes(labels, "binary_report")
    if p is None and np.any((s < 0) | (s > 1)):
        brier_value = ece_value = predicted = float("nan")
    else:
        prob = s if p is None else _probabilities(p, labels.size)
        brier_value = brier(labels, prob)
        ece_value = expected_calibration_error(labels, prob)
        predicted = float(prob.mean())
    return {
        "auc": roc_auc(labels, s),
        "pr_auc": pr_auc(labels, s),
        "brier": brier_value,
        "ece": ece_value,
        "top_decile_lift": top_decile_lift(labels, s),
        "lift_quality": lift_quality(labels, s),
        "positive_rate": float(labels.mean()),
        "predicted_rate": predicted,
        "n": float(labels.size),
    }


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error."""
    t = np.asarray(y_true, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("y_true contains NaN or infinite values")
    pred = finite_values("y_pred", y_pred, t.size)
    return float(np.mean(np.abs(t - pred)))


# ---------------------------------------------------------------------------------------------
# Top-k ranking (recommendations)
# ---------------------------------------------------------------------------------------------


def _per_user(
    recommended: Sequence[Sequence[Any]] | np.ndarray,
    relevant: Sequence[Iterable[Any]],
    k: int,
    metric: str,
    score_user: Any,
) -> float:
    """Mean of ``score_user(top-k list, relevant set, k)`` over users with a relevant item."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    recs = list(recommended)
    rels = list(relevant)
    if len(recs) != len(rels):
        raise ValueError(
            f"length mismatch: recommended has {len(recs)} users, relevant has {len(rels)}"
        )
    values = []
    for rec, rel in zip(recs, rels, strict=True):
        rel_set = set(rel)
        if not rel_set:
            continue
        values.append(score_user(list(rec)[:k], rel_set, k))
    if not values:
        raise ValueError(f"{metric} is undefined: no user has a relevant item")
    return float(np.mean(values))


def recall_at_k(
    recommended: Sequence[Sequence[Any]] | np.ndarray,
    relevant: Sequence[Iterable[Any]],
    k: int = 10,
) -> float:
    """Mean over users with >= 1 relevant item of |top-k & relevant| / min(k, |relevant|).

    The denominator is capped at k (as in implicit's and RecBole's recall@k), so a user with
    more than k relevant items can still reach 1.
    """
    return _per_user(
        recommended,
        relevant,
        k,
        "recall@k",
        lambda top, rel, k: len(rel.intersection(top)) / min(k, len(rel)),
    )


def ndcg_at_k(
    recommended: Sequence[Sequence[Any]] | np.ndarray,
    relevant: Sequence[Iterable[Any]],
    k: int = 10,
) -> float:
    """Mean binary-relevance NDCG@k (Jarvelin & Kekalainen 2002) over users with relevant items.

    DCG = sum_{i < k} [item_i relevant] / log2(i + 2); IDCG puts min(k, |relevant|) hits first.
    A repeated item earns gain only at its first position, so NDCG stays <= 1.
    """

    def score_user(top: list, rel: set, k: int) -> float:
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        seen: set = set()
        dcg = 0.0
        for i, item in enumerate(top):
            if item in rel and item not in seen:
                dcg += discounts[i]
            seen.add(item)
        return float(dcg / discounts[: min(k, len(rel))].sum())

    return _per_user(recommended, relevant, k, "NDCG@k", score_user)


def hit_rate_at_k(
    recommended: Sequence[Sequence[Any]] | np.ndarray,
    relevant: Sequence[Iterable[Any]],
    k: int = 10,
) -> float:
    """Share of users (with >= 1 relevant item) having at least one relevant item in the top k."""
    return _per_user(
        recommended,
        relevant,
        k,
        "hit rate@k",
        lambda top, rel, k: float(not rel.isdisjoint(top)),
    )
