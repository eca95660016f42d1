"""BG/NBD repeat-purchase model (Fader, Hardie & Lee 2005), numpy/scipy only.

"Counting your customers the easy way: an alternative to the Pareto/NBD model",
Marketing Science 24(2):275-284. While alive a customer buys as a Poisson process with rate
``lambda ~ Gamma(r, alpha)``; after every repeat purchase they drop out with probability
``p ~ Beta(a, b)``. From ``(x, t_x, T)`` = (repeat purchases, time of the last one, time
observed since the first one) the model gives P(alive) and the expected number of purchases
in the next ``t`` periods, which feed the churn features and the baseline model.

The fit is plain maximum likelihood: analytic log-likelihood and gradient (eq. 6 of the paper,
evaluated with ``betaln`` and log-sum-exp), L-BFGS-B on log-parameters inside fixed bounds,
data-driven starting values and restarts. Unlike ``lifetimes.BetaGeoFitter`` a failure raises
:class:`BGNBDFitError` and a solution on a bound raises a warning, instead of returning
meaningless numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from threadpoolctl import threadpool_limits

__all__ = ["BGNBD", "BGNBDFitError", "PARAM_NAMES", "rfm_summary"]

PARAM_NAMES: tuple[str, ...] = ("r", "alpha", "a", "b")
_LOWER, _UPPER = 1e-4, 1e4  # parameter bounds (alpha in the internal time scale)
_LOG_BOUNDS = [(math.log(_LOWER), math.log(_UPPER))] * 4
_A_NEAR_ONE = 1e-4  # |a - 1| below this: interpolate across the removable singularity
_R_NEAR_INT, _R_STEP = 1e-6, 1e-5  # r - a this close to an integer: interpolate in r


class BGNBDFitError(RuntimeError):
    """The BG/NBD fit cannot run (invalid input) or the optimiser did not converge."""


# ---------------------------------------------------------------------------------------------
# RFM summary
# ---------------------------------------------------------------------------------------------


def rfm_summary(
    transactions: pd.DataFrame, cutoff: pd.Timestamp, time_unit_days: float = 7.0
) -> pd.DataFrame:
    """Per-customer ``frequency``, ``recency``, ``T`` as BG/NBD needs them (FHL 2005, sec. 2).

    Purchases are rows with ``ts < cutoff`` and ``quantity > 0`` (returns and the future are
    ignored). Time is discretised to calendar days so several orders on one day count as one
    purchase: ``frequency`` = distinct purchase days - 1 (repeat purchases), ``recency`` = last
    minus first purchase day, ``T`` = ``cutoff`` minus first purchase day, both in units of
    ``time_unit_days`` days. ``cutoff`` is used as given (normally a midnight). Indexed by
    ``customer_id`` (sorted); customers without a purchase before the cutoff are absent.
    """
    missing = [c for c in ("customer_id", "ts", "quantity") if c not in transactions.columns]
    if missing:
        raise ValueError(f"rfm_summary: transactions lack column(s) {missing}")
    if not (np.isfinite(time_unit_days) and time_unit_days > 0):
        raise ValueError(f"rfm_summary: time_unit_days must be > 0, got {time_unit_days!r}")
    ts = pd.to_datetime(transactions["ts"])
    keep = (ts < cutoff) & (transactions["quantity"] > 0) & transactions["customer_id"].notna()
    purchases = pd.DataFrame(
        {"customer_id": transactions.loc[keep, "customer_id"], "day": ts[keep].dt.normalize()}
    )
    per_customer = purchases.groupby("customer_id", sort=True)["day"].agg(
        first="min", last="max", n_days="nunique"
    )
    unit = pd.Timedelta(days=time_unit_days)
    out = pd.DataFrame(
        {
            "frequency": (per_customer["n_days"] - 1).astype("int64"),
            "recency": ((per_customer["last"] - per_customer["first"]) / unit).astype("float64"),
            "T": ((cutoff - per_customer["first"]) / unit).astype("float64"),
        },
        index=per_customer.index,
    )
    out.index.name = "customer_id"
    return out


# ---------------------------------------------------------------------------------------------
# Likelihood
# ---------------------------------------------------------------------------------------------


def _neg_log_likelihood(
    log_params: np.ndarray,
    data: _Histories,
    w: np.ndarray,
    penalizer_coef: float,
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood (+ L2 penalty, as lifetimes) and its log-parameter gradient."""
    r, alpha, a, b = np.exp(log_params)
    ll, grad = _log_likelihood(r, alpha, a, b, data, with_grad=True)
    wsum = w.sum()
    params = np.array([r, alpha, a, b])
    # ufunc sums rather than BLAS dot/gemv: no thread hand-off for a 4-vector result.
    value = -float(np.sum(w * ll)) / wsum + penalizer_coef * float(np.sum(params**2))
    gvec = -np.sum(grad * w, axis=1) / wsum * params + 2.0 * penalizer_coef * params**2
    if not np.isfinite(value):
        return np.inf, np.zeros(4)
    return value, gvec


class _Histories:
    """(x, t_x, T) plus the distinct x values: special functions of x are evaluated once each."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> None:
        self.x, self.tx, self.T = x, tx, T
        self.ux, self.inv = np.unique(x, return_inverse=True)


def _log_likelihood(
    r: float, alpha: float, a: float, b: float, data: _Histories, with_grad: bool = False
) -> Any:
    """Per-customer log-likelihood (FHL 2005 eq. 6), optionally with d/d(r, alpha, a, b) (4, n).

    L = B(a, b+x)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
      + [x>0] B(a+1, b+x-1)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x)),
    summed in log space with log-sum-exp so neither term under- or overflows for large x.
    """
    x, tx, T, ux, inv = data.x, data.tx, data.T, data.ux, data.inv
    pos = x > 0
    uxs = np.maximum(ux, 1.0)  # keeps b + x - 1 > 0 in the masked (x == 0) branch
    log_at = np.log(alpha + T)
    log_ar = np.log(alpha + tx)
    lbab = betaln(a, b)
    term_alive = (betaln(a, b + ux) - lbab)[inv] - (r + x) * log_at
    term_dead = np.where(
        pos, (betaln(a + 1.0, b + uxs - 1.0) - lbab)[inv] - (r + x) * log_ar, -np.inf
    )
    m = np.maximum(term_alive, term_dead)
    lse = m + np.log(np.exp(term_alive - m) + np.exp(term_dead - m))
    ll = (gammaln(r + ux) - gammaln(r) + r * math.log(alpha))[inv] + lse
    if not with_grad:
        return ll
    w_alive = np.exp(term_alive - lse)
    w_dead = np.exp(term_dead - lse)  # 0 where x == 0
    psi_ab, psi_abx = digamma(a + b), digamma(a + b + ux)
    g_r = (digamma(r + ux) - digamma(r) + math.log(alpha))[inv] - w_alive * log_at - w_dead * log_ar
    g_alpha = r / alpha - (r + x) * (w_alive / (alpha + T) + w_dead / (alpha + tx))
    g_a = (psi_ab - psi_abx)[inv] + w_dead / a
    inv_bx1 = (1.0 / (b + uxs - 1.0))[inv]
    g_b = (psi_ab - psi_abx - digamma(b) + digamma(b + ux))[inv] - w_dead * inv_bx1
    return ll, np.vstack([g_r, g_alpha, g_a, g_b])


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _as_1d(name: str, values: ArrayLike, exc: type[Exception]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise exc(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise exc(f"{name} contains NaN or infinite values")
    if np.any(arr < 0):
        raise exc(f"{name} contains negative values (min {arr.min():g})")
    return arr


def _check_history(
    frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, exc: type[Exception]
) -> None:
    """Raise ``exc`` naming the argument when (frequency, recency, T) cannot be a BG/NBD history."""
    for name, arr in (("frequency", frequency), ("recency", recency), ("T", T)):
        if not np.all(np.isfinite(arr)):
            raise exc(f"{name} contains NaN or infinite values")
        if np.any(arr < 0):
            raise exc(f"{name} contains negative values (min {np.min(arr):g})")
    if np.any(frequency != np.round(frequency)):
        raise exc("frequency must hold integer counts of repeat purchases")
    tol = 1e-9 * np.maximum(1.0, np.abs(T))
    if np.any(recency > T + tol):
        raise exc("recency is larger than T for some customers (last purchase after the cutoff?)")
    if np.any((frequency == 0) & (recency != 0)):
        raise exc("recency must be 0 where frequency is 0 (no repeat purchase)")


def _broadcast_history(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        x, tx, big_t = np.broadcast_arrays(
            np.asarray(frequency, dtype=float),
            np.asarray(recency, dtype=float),
            np.asarray(T, dtype=float),
        )
    except ValueError as err:
        raise ValueError(f"frequency, recency and T cannot be broadcast together: {err}") from None
    _check_history(x, tx, big_t, ValueError)
    return x, tx, big_t


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class BGNBD:
    """BG/NBD model fitted by maximum likelihood (Fader, Hardie & Lee 2005).

    ``max_starts`` bounds the number of optimiser starts, ``max_iter`` the L-BFGS-B iterations
    per start. ``penalizer_coef`` adds ``c * (r^2 + alpha^2 + a^2 + b^2)`` to the mean negative
    log-likelihood exactly as ``lifetimes.BetaGeoFitter`` does (alpha in the time scale where
    ``max(T) == 1``), so fits with the same coefficient are comparable. After :meth:`fit`:
    ``params_`` (dict r, alpha, a, b; alpha in the caller's time unit), ``log_likelihood_``
    (unpenalised, summed over weighted customers), ``n_customers_``, ``converged_message_``,
    ``starts_tried_`` and ``at_bound_`` (parameters stuck on a bound; a ``RuntimeWarning`` is
    raised too). Prediction methods broadcast their arguments like numpy ufuncs and return a
    float ndarray of the broadcast shape (0-d for scalars).
    """

    def __init__(
        self, penalizer_coef: float = 0.0, max_starts: int = 4, max_iter: int = 2000
    ) -> None:
        if not (np.isfinite(penalizer_coef) and penalizer_coef >= 0):
            raise ValueError(f"penalizer_coef must be >= 0, got {penalizer_coef!r}")
        if max_starts < 1 or max_iter < 1:
            raise ValueError(f"max_starts and max_iter must be >= 1, got {max_starts}, {max_iter}")
        self.penalizer_coef = float(penalizer_coef)
        self.max_starts = int(max_starts)
        self.max_iter = int(max_iter)
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None
        self.n_customers_: float | None = None
        self.converged_message_: str | None = None
        self.starts_tried_: int = 0
        self.at_bound_: list[str] = []

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> BGNBD:
        """Maximum-likelihood fit; raises :class:`BGNBDFitError` on bad input or no convergence.

        ``weights`` (optional) counts customers sharing a ``(frequency, recency, T)`` pattern,
        as in Fader & Hardie's compressed data sets.
        """
        x = _as_1d("frequency", frequency, BGNBDFitError)
        tx = _as_1d("recency", recency, BGNBDFitError)
        big_t = _as_1d("T", T, BGNBDFitError)
        w = np.ones_like(x) if weights is None else _as_1d("weights", weights, BGNBDFitError)
        lengths = {"frequency": x.size, "recency": tx.size, "T": big_t.size, "weights": w.size}
        if len(set(lengths.values())) != 1:
            raise BGNBDFitError(f"length mismatch between inputs: {lengths}")
        if x.size == 0:
            raise BGNBDFitError("frequency is empty: no customers to fit")
        _check_history(x, tx, big_t, BGNBDFitError)
        if w.sum() <= 0:
            raise BGNBDFitError("weights sum to zero")
        if not np.any((x > 0) & (w > 0)):
            raise BGNBDFitError(
                "frequency is 0 for every customer: without repeat purchases the purchase and "
                "dropout processes are not identifiable"
            )
        if big_t.max() <= 0:
            raise BGNBDFitError("T is 0 for every customer: no observation time")

        scale = 1.0 / big_t.max()  # lifetimes' _scale_time: max(T) == 1 internally
        args = (_Histories(x, tx * scale, big_t * scale), w, self.penalizer_coef)
        best = self._optimise(args, self._starting_points(x, big_t * scale, w))

        r, alpha, a, b = np.exp(best.x)
        self.params_ = {"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}
        data = _Histories(x, tx, big_t)
        self.log_likelihood_ = float(np.sum(w * _log_likelihood(r, alpha / scale, a, b, data)))
        self.n_customers_ = float(w.sum())
        self.converged_message_ = str(best.message)
        lo, hi = _LOG_BOUNDS[0]
        self.at_bound_ = [
            n for n, v in zip(PARAM_NAMES, best.x, strict=True) if min(v - lo, hi - v) < 1e-3
        ]
        if self.at_bound_:
            warnings.warn(
                f"BG/NBD estimate of {self.at_bound_} lies on the bound [{_LOWER:g}, {_UPPER:g}]: "
                "the likelihood is maximised at the edge of the parameter space (e.g. a -> 0, "
                "b -> inf means no observable dropout, too little history); treat the fit and "
                "its P(alive) with suspicion",
                RuntimeWarning,
                stacklevel=2,
            )
        return self

    def _optimise(self, args: tuple, starts: list[np.ndarray]) -> Any:
        """L-BFGS-B from successive starts until two converged runs agree; return the best.

        A single converged run is accepted only when every other start fails, so a premature
        stop on a flat ridge (common on short retail histories) is caught by the second run.
        """
        converged: list[Any] = []
        failures: list[str] = []
        self.starts_tried_ = 0
        for x0 in starts[: self.max_starts]:
            self.starts_tried_ += 1
            # A 4-parameter problem: BLAS threads only add wake-up latency (3x slower fits).
            with np.errstate(all="ignore"), threadpool_limits(limits=1, user_api="blas"):
                res = minimize(
                    _neg_log_likelihood,
                    x0,
                    args=args,
                    jac=True,
                    method="L-BFGS-B",
                    bounds=_LOG_BOUNDS,
                    options={"maxiter": self.max_iter, "ftol": 1e-13, "gtol": 1e-8},
                )
            if not self._converged(res):
                failures.append(
                    f"start {self.starts_tried_}: {res.message} (objective {res.fun:.6g})"
                )
                continue
            converged.append(res)
            funs = sorted(r.fun for r in converged)
            if len(funs) >= 2 and funs[1] - funs[0] <= 1e-8 * max(1.0, abs(funs[0])):
                break
        if not converged:
            raise BGNBDFitError(
                "BG/NBD maximum likelihood did not converge from any starting point; "
                + "; ".join(failures)
                + ". Check the data (e.g. time unit, cutoff) or set a small penalizer_coef."
            )
        return min(converged, key=lambda r: r.fun)

    @staticmethod
    def _starting_points(x: np.ndarray, T: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
        """Log-parameter starts: a moment-based guess, lifetimes' default, then spread-out ones.

        The first start sets E[lambda] = r/alpha to the pooled purchase rate sum(x)/sum(T).
        """
        rate = max(float(np.sum(w * x)) / max(float(np.sum(w * T)), 1e-12), 1e-3)
        starts = [
            (1.0, 1.0 / rate, 1.0, 3.0),
            (math.exp(0.1),) * 4,  # lifetimes' x0 = 0.1 on the log scale
            (0.3, 0.3 / rate, 0.5, 1.5),
            (3.0, 3.0 / rate, 3.0, 10.0),
        ]
        return [np.clip(np.log(np.array(s)), _LOG_BOUNDS[0][0], _LOG_BOUNDS[0][1]) for s in starts]

    @staticmethod
    def _converged(res: Any) -> bool:
        """L-BFGS-B success, or a line-search stop at a point with a negligible gradient."""
        if not (np.isfinite(res.fun) and np.all(np.isfinite(res.x))):
            return False
        if res.success:
            return True
        lo, hi = _LOG_BOUNDS[0]
        free = (res.x > lo + 1e-8) & (res.x < hi - 1e-8)
        return bool(np.max(np.abs(res.jac[free]), initial=0.0) < 1e-5)

    # -- prediction ------------------------------------------------------------------------

    def _params(self) -> tuple[float, float, float, float]:
        if self.params_ is None:
            raise RuntimeError("BGNBD is not fitted: call fit() or BGNBD.from_dict() first")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(alive at T | x, t_x, T) (Fader, Hardie & Lee 2008, note 021); 1 when x == 0.

        1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)), via expit in log space.
        """
        r, alpha, a, b = self._params()
        x, tx, big_t = _broadcast_history(frequency, recency, T)
        xs = np.maximum(x, 1.0)
        log_odds_dead = (
            math.log(a)
            - np.log(b + xs - 1.0)
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx))
        )
        return np.where(x > 0, expit(-log_odds_dead), 1.0)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> np.ndarray:
        """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10) = P(alive) * E[... | alive]."""
        r, alpha, a, b = self._params()
        x, tx, big_t = _broadcast_history(frequency, recency, T)
        t_arr = _check_horizon(t)
        return self.p_alive(x, tx, big_t) * _expected_if_alive(t_arr, x, big_t, r, alpha, a, b)

    def expected_purchases_new(self, t: ArrayLike) -> np.ndarray:
        """E[repeat purchases in (0, t]] for a new customer (FHL 2005 eq. 9)."""
        r, alpha, a, b = self._params()
        t_arr = _check_horizon(t)
        return _expected_if_alive(t_arr, 0.0, 0.0, r, alpha, a, b)

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: parameters, penalizer and fit diagnostics."""
        self._params()
        return {
            "model": "BGNBD",
            "params": dict(self.params_ or {}),
            "penalizer_coef": self.penalizer_coef,
            "log_likelihood": self.log_likelihood_,
            "n_customers": self.n_customers_,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> BGNBD:
        """Rebuild a fitted model from :meth:`to_dict` output (validates the parameters)."""
        if state.get("model") != "BGNBD":
            raise ValueError(f"not a BGNBD state: model={state.get('model')!r}")
        params = state.get("params") or {}
        missing = [n for n in PARAM_NAMES if n not in params]
        if missing:
            raise ValueError(f"BGNBD state lacks parameter(s) {missing}")
        try:
            values = {n: float(params[n]) for n in PARAM_NAMES}
        except (TypeError, ValueError) as err:
            raise ValueError(f"BGNBD parameters must be numbers: {err}") from None
        bad = {n: v for n, v in values.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"BGNBD parameters must be finite and > 0, got {bad}")
        model = cls(penalizer_coef=float(state.get("penalizer_coef", 0.0)))
        model.params_ = values
        ll = state.get("log_likelihood")
        n = state.get("n_customers")
        model.log_likelihood_ = None if ll is None else float(ll)
        model.n_customers_ = None if n is None else float(n)
        return model

    def __repr__(self) -> str:
        if self.params_ is None:
            return f"BGNBD(penalizer_coef={self.penalizer_coef}, unfitted)"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"BGNBD({ps})"


def _check_horizon(t: ArrayLike) -> np.ndarray:
    arr = np.asarray(t, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("t must be finite and >= 0")
    return arr


def _expected_if_alive(
    t: ArrayLike, x: ArrayLike, T: ArrayLike, r: float, alpha: float, a: float, b: float
) -> np.ndarray:
    """E[purchases in (T, T+t] | alive at T, x]: closed form, guarded against its weak spots.

    Two parameter sets make the closed form lose accuracy: a == 1 (a removable 0/0) and
    r - a an integer (scipy's hyp2f1 meets the degenerate c - A - B in Z case of its z -> 1-z
    connection formula). Within a small distance of either, the value is linearly interpolated
    between two nearby regular points (the function is smooth in a and r). Any value that is
    still non-finite or outside the bounds 0 <= E <= t (r+x)/(alpha+T) (Jensen) is recomputed
    by adaptive quadrature of E_p[(1 - (1 + p t/(alpha+T))^-(r+x)) / p], p ~ Beta(a, b+x).
    """
    t, x, T = np.broadcast_arrays(np.asarray(t, float), np.asarray(x, float), np.asarray(T, float))
    if abs(a - 1.0) < _A_NEAR_ONE:
        lo, hi = 1.0 - _A_NEAR_ONE, 1.0 + _A_NEAR_ONE
        f_lo = _expected_r_guarded(t, x, T, r, alpha, lo, b)
        f_hi = _expected_r_guarded(t, x, T, r, alpha, hi, b)
        out = f_lo + (a - lo) / (hi - lo) * (f_hi - f_lo)
    else:
        out = _expected_r_guarded(t, x, T, r, alpha, a, b)
    upper = t * (r + x) / (alpha + T)
    bad = ~np.isfinite(out) | (out < 0) | (out > upper * (1 + 1e-9) + 1e-12)
    if np.any(bad):
        flat = np.array(out, dtype=float).reshape(-1)
        for i in np.flatnonzero(bad):
            args = (t.flat[i], x.flat[i], T.flat[i], r, alpha, a, b)
            flat[i] = _expected_if_alive_quad(*args)
        out = flat.reshape(np.shape(out))
    return out


def _expected_r_guarded(
    t: np.ndarray, x: np.ndarray, T: np.ndarray, r: float, alpha: float, a: float, b: float
) -> np.ndarray:
    """:func:`_expected_if_alive_raw`, interpolated in r when r - a is (nearly) an integer."""
    m = round(r - a)
    if abs(r - a - m) >= _R_NEAR_INT:
        return _expected_if_alive_raw(t, x, T, r, alpha, a, b)
    h = min(_R_STEP, 0.5 * (a + m))
    lo, hi = a + m - h, a + m + h
    f_lo = _expected_if_alive_raw(t, x, T, lo, alpha, a, b)
    f_hi = _expected_if_alive_raw(t, x, T, hi, alpha, a, b)
    return f_lo + (r - lo) / (hi - lo) * (f_hi - f_lo)


def _expected_if_alive_raw(
    t: np.ndarray, x: np.ndarray, T: np.ndarray, r: float, alpha: float, a: float, b: float
) -> np.ndarray:
    """(a+b+x-1)/(a-1) * (1 - (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z)), z = t/(alpha+T+t).

    FHL 2005 eq. 10 without the P(alive) factor. The hypergeometric term is rewritten with
    Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) as
    (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): the upper parameters no longer grow with x, so
    the series stays O(1) for frequent buyers and long horizons instead of overflowing
    (lifetimes evaluates 2F1(r+x, b+x; ...) directly and returns inf/NaN for large x or t).
    """
    z = t / (alpha + T + t)
    c = a + b + x - 1.0
    with np.errstate(all="ignore"):
        hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        log_term = (a - 1.0) * np.log1p(-z) + np.log(hyp)
        one_minus_term = np.where(hyp > 0, -np.expm1(log_term), 1.0 - hyp * (1.0 - z) ** (a - 1.0))
        out = c / (a - 1.0) * one_minus_term
    return np.where(t == 0, 0.0, out)


def _expected_if_alive_quad(
    t: float, x: float, T: float, r: float, alpha: float, a: float, b: float
) -> float:
    """Adaptive quadrature of the same expectation in s = -log p (smooth, no endpoint spikes)."""
    if t == 0:
        return 0.0
    k = t / (alpha + T)
    log_norm = betaln(a, b + x)

    def integrand(s: float) -> float:
        if s <= 0.0:
            return 0.0
        p = math.exp(-s)
        log_dens = -a * s + (b + x - 1.0) * math.log(-math.expm1(-s)) - log_norm  # log(1-p)
        pk = p * k
        per_p = (r + x) * k if pk < 1e-12 else -math.expm1(-(r + x) * math.log1p(pk)) / p
        return math.exp(log_dens) * per_p

    s_max = 50.0 / a + 50.0
    breaks = [s for s in (1.0, math.log1p(k * (r + x)), math.log((a + b + x) / a)) if s < s_max]
    value, _ = quad(integrand, 0.0, s_max, points=sorted(set(breaks)), limit=500, epsrel=1e-10)
    return float(value)
