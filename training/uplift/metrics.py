"""Uplift metrics: Qini and uplift curves, Qini coefficient, AUUC, uplift@k, deciles.

Written from the definitions; numbers match scikit-uplift 0.5.1 for binary
outcomes. Customers are ranked by descending predicted uplift (ties as scikit-uplift orders
them: a reversed stable ascending sort); curves have one vertex per distinct score, so they
do not depend on the order inside a tie. With N_t(k), N_c(k) treated / control customers and
Y_t(k), Y_c(k) their summed outcomes among the top k:

* Qini curve (Radcliffe 2007): Q(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k) (0 while N_c = 0).
* Qini coefficient = :func:`qini_coefficient`, scikit-uplift's ``qini_auc_score``: (area under
  the Qini curve - area under the random line from (0, 0) to (N, Q(N))) / (the same for the
  perfect curve). Random targeting scores 0 in expectation, the perfect ordering 1. The
  perfect curve, by default (``negative_effect=True``), ranks treated responders first and
  control responders last (score y t - y (1 - t)), i.e. allows for customers the e-mail puts
  off (Radcliffe's Q); ``negative_effect=False`` is Radcliffe's zero-downlift q0.
* AUUC = :func:`auuc`, scikit-uplift's ``uplift_auc_score``: the same normalisation on the
  uplift curve U(k) = (Y_t(k)/N_t(k) - Y_c(k)/N_c(k)) k, with scikit-uplift's perfect uplift
  curve. Random 0, perfect 1.
* uplift@k = :func:`uplift_at_k`: mean outcome of the treated minus that of the control among
  the top ``int(k N)`` customers by predicted uplift (strategy ``"overall"``, used in the
  experiment; ``"by_group"`` takes the top ``int(k N_t)`` treated and ``int(k N_c)`` control
  customers separately).

For a non-binary outcome (spend; scikit-uplift refuses those) the curves and uplift@k are
unchanged and the perfect orderings are extended: the Qini one is still y t - y (1 - t); the
uplift-curve one keeps scikit-uplift's classes with responder = (y > 0) and orders treated
responders by descending, control responders by ascending outcome. Random is still 0; the
perfect orderings score 1, but for spend they are not proven optimal, so values above 1 are
possible in principle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from servable.checks import binary_flags, finite_values, is_binary

__all__ = [
    "TOP_SHARE",
    "auuc",
    "decile_uplift",
    "is_binary",
    "perfect_qini_curve",
    "perfect_uplift_curve",
    "qini_coefficient",
    "qini_curve",
    "uplift_at_k",
    "uplift_curve",
    "uplift_report",
]

TOP_SHARE = 0.3


def _inputs(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    u = finite_values("uplift", uplift, t.size, against="treatment")
    if t.sum() == 0 or t.sum() == t.size:
        raise ValueError("uplift metrics need both treated and control rows")
    return yv, u, t


def _order(uplift: np.ndarray) -> np.ndarray:
    """Descending by uplift, ties as scikit-uplift (reversed stable ascending sort)."""
    return np.argsort(uplift, kind="mergesort")[::-1]


def _cumulative(y: np.ndarray, u: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Counts and outcome sums of both groups in the top k, at the end of each tie block."""
    order = _order(u)
    y, u, t = y[order], u[order], t[order]
    ends = np.r_[np.flatnonzero(np.diff(u) != 0), u.size - 1]
    n_all = ends + 1.0
    n_t = np.cumsum(t)[ends]
    y_t = np.cumsum(y * t)[ends]
    y_c = np.cumsum(y * (1.0 - t))[ends]
    return n_all, n_t, n_all - n_t, y_t, y_c


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def qini_curve(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve (Radcliffe 2007): (customers targeted, Y_t - Y_c N_t / N_c), from (0, 0)."""
    yv, u, t = _inputs(y, uplift, treatment)
    n_all, n_t, n_c, y_t, y_c = _cumulative(yv, u, t)
    return np.r_[0.0, n_all], np.r_[0.0, y_t - y_c * _ratio(n_t, n_c)]


def uplift_curve(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve: (customers targeted k, (Y_t/N_t - Y_c/N_c) k), from (0, 0)."""
    yv, u, t = _inputs(y, uplift, treatment)
    n_all, n_t, n_c, y_t, y_c = _cumulative(yv, u, t)
    return np.r_[0.0, n_all], np.r_[0.0, (_ratio(y_t, n_t) - _ratio(y_c, n_c)) * n_all]


def _oracle(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Treated responders first (largest outcome first), control responders last."""
    return y * t - y * (1.0 - t)


def perfect_qini_curve(
    y: ArrayLike, treatment: ArrayLike, negative_effect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The optimum Qini curve (scikit-uplift's ``perfect_qini_curve``).

    ``negative_effect=True``: the Qini curve of the ordering y t - y (1 - t). ``False``
    (binary outcomes only): the zero-downlift optimum, straight up to the total incremental
    responders R = Y_t - N_t Y_c / N_c at k = R, then flat (undefined unless R > 0).
    """
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    if negative_effect:
        return qini_curve(yv, _oracle(yv, t), t)
    if not is_binary(yv):
        raise ValueError("negative_effect=False needs a binary outcome y")
    n_t, n_c = t.sum(), t.size - t.sum()
    if n_t == 0 or n_c == 0:
        raise ValueError("uplift metrics need both treated and control rows")
    r = yv[t == 1].sum() - n_t * yv[t == 0].sum() / n_c
    if r <= 0:
        raise ValueError(
            f"the zero-downlift optimum needs a positive total effect (incremental {r:.4g})"
        )
    return np.array([0.0, r, float(t.size)]), np.array([0.0, r, r])


def perfect_uplift_curve(y: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The optimum uplift curve (scikit-uplift's ``perfect_uplift_curve`` for binary y).

    Customers are ranked by the class score 2 [r == t] + s, r = [y > 0] the responders,
    s = r if control responders outnumber treated non-responders, else s = t: treated
    responders, then control non-responders, then the rest. For binary y that is
    scikit-uplift's ordering; for a non-binary y the treated responders are further ordered by
    descending and the control responders by ascending outcome.
    """
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    r = (yv > 0).astype(float)
    control_responders = np.sum((r == 1) & (t == 0))
    treated_nonresponders = np.sum((r == 0) & (t == 1))
    summand = r if control_responders > treated_nonresponders else t
    scale = float(np.max(np.abs(yv))) or 1.0
    # within-class tie-break in (-1/4, 1/4): constant inside each class when y is binary
    return uplift_curve(yv, 2.0 * (r == t) + summand + 0.25 * _oracle(yv, t) / scale, t)


def _normalised_area(
    actual: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray], name: str
) -> float:
    xp, yp = perfect
    baseline = 0.5 * xp[-1] * yp[-1]  # the random line from (0, 0) to the curve's end
    best = float(np.trapezoid(yp, xp)) - baseline
    if best == 0:
        raise ValueError(f"{name} is undefined: the perfect curve has no area above random")
    return (float(np.trapezoid(actual[1], actual[0])) - baseline) / best


def qini_coefficient(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, negative_effect: bool = True
) -> float:
    """Normalised area between the Qini curve and the random line: random 0, perfect 1.

    scikit-uplift's ``qini_auc_score`` (same ``negative_effect`` flag, default ``True``).
    """
    yv, u, t = _inputs(y, uplift, treatment)
    return _normalised_area(
        qini_curve(yv, u, t), perfect_qini_curve(yv, t, negative_effect), "the Qini coefficient"
    )


def auuc(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised area under the uplift curve (scikit-uplift's ``uplift_auc_score``)."""
    yv, u, t = _inputs(y, uplift, treatment)
    return _normalised_area(uplift_curve(yv, u, t), perfect_uplift_curve(yv, t), "AUUC")


def uplift_at_k(
    y: ArrayLike,
    uplift: ArrayLike,
    treatment: ArrayLike,
    k: float | int = TOP_SHARE,
    strategy: str = "overall",
) -> float:
    """Treated mean outcome minus control mean outcome among the top customers by uplift.

    scikit-uplift's ``uplift_at_k``. ``k`` is a share in (0, 1) or a count. ``"overall"``:
    the top ``int(k N)`` of all customers (a count: the top ``k``), each group's mean taken
    inside it. ``"by_group"``: the top ``int(k N_t)`` treated and ``int(k N_c)`` control
    customers (a count: ``k`` of each). Raises if a group has nobody in its top.
    """
    yv, u, t = _inputs(y, uplift, treatment)
    n = t.size
    is_share = isinstance(k, float)
    if is_share and not 0 < k < 1:
        raise ValueError(f"k as a share must be in (0, 1), got {k}")
    if not is_share and not (isinstance(k, int | np.integer) and 0 < k < n):
        raise ValueError(f"k as a count must be an integer in [1, {n - 1}], got {k!r}")
    order = _order(u)
    ys, ts = yv[order], t[order]
    if strategy == "overall":
        top = int(n * k) if is_share else int(k)
        yt, tt = ys[:top], ts[:top]
        treated, control = yt[tt == 1], yt[tt == 0]
    elif strategy == "by_group":
        n_t, n_c = int(t.sum()), int(n - t.sum())
        k_t, k_c = (int(n_t * k), int(n_c * k)) if is_share else (int(k), int(k))
        if k_t > n_t or k_c > n_c:
            raise ValueError(f"k={k} exceeds a group's size ({n_t} treated, {n_c} control)")
        treated, control = ys[ts == 1][:k_t], ys[ts == 0][:k_c]
    else:
        raise ValueError(f"strategy must be 'overall' or 'by_group', got {strategy!r}")
    if treated.size == 0 or control.size == 0:
        group = "treated" if treated.size == 0 else "control"
        raise ValueError(f"uplift@k is undefined: no {group} customer in the top (k={k})")
    return float(treated.mean() - control.mean())


def uplift_report(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> dict[str, float]:
    """Qini coefficient, AUUC and uplift@30% (strategy ``overall``) at once."""
    return {
        "qini": qini_coefficient(y, uplift, treatment),
        "auuc": auuc(y, uplift, treatment),
        "uplift_at_30": uplift_at_k(y, uplift, treatment, TOP_SHARE, "overall"),
    }


def decile_uplift(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> np.ndarray:
    """Treated minus control mean outcome in each tenth of customers ranked by uplift."""
    yv, u, t = _inputs(y, uplift, treatment)
    out = []
    for g in np.array_split(_order(u), 10):
        tg = t[g]
        treated, control = yv[g][tg == 1], yv[g][tg == 0]
        out.append(treated.mean() - control.mean() if treated.size and control.size else np.nan)
    return np.asarray(out)
