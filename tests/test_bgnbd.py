"""Tests for servable.bgnbd: RFM summary, BG/NBD fit, predictions, and lifetimes cross-check.

The integration tests use UCI Online Retail II (Chen, Sain & Guo 2012, CC BY 4.0) from
../shared/data and compare with lifetimes.BetaGeoFitter (a dev-only dependency; with numpy 2.4
and pandas 3.1 it needed no compatibility shim for the calls made here).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import IntegrationWarning, quad
from scipy.optimize import approx_fprime
from scipy.special import betaln

from servable.bgnbd import (
    BGNBD,
    BGNBDFitError,
    _Histories,
    _log_likelihood,
    _neg_log_likelihood,
    rfm_summary,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, table 1


def _model(**params: float) -> BGNBD:
    return BGNBD.from_dict({"model": "BGNBD", "params": params})


def simulate_bgnbd(n: int, r: float, alpha: float, a: float, b: float, T: np.ndarray, seed: int):
    """Draw (x, t_x, T) from the BG/NBD generative process (FHL 2005, sec. 2), vectorised.

    lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b). The customer dies right after repeat purchase
    D ~ Geometric(p) (never after the first purchase at time 0); N ~ Poisson(lambda T) purchases
    would happen in (0, T] if alive. So x = min(N, D), and given N the purchase times are N
    uniform order statistics on (0, T): the x-th of them is T * Beta(x, N - x + 1).
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    d = rng.geometric(p)
    big_n = rng.poisson(lam * T)
    x = np.minimum(big_n, d)
    tx = np.where(x > 0, T * rng.beta(np.maximum(x, 1), big_n - x + 1), 0.0)
    return x.astype(float), tx, T.astype(float)


# ---------------------------------------------------------------------------------------------
# rfm_summary
# ---------------------------------------------------------------------------------------------


def _tx(rows):
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "ts", "quantity"])
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["quantity"] = frame["quantity"].astype(float)
    frame["unit_price"] = 1.5
    return frame


TINY = _tx(
    [
        ("A", "o1", "2011-01-01 10:00", 2),
        ("A", "o2", "2011-01-01 15:00", 1),  # same day as o1: one purchase
        ("A", "o3", "2011-01-08 09:00", 5),
        ("A", "r1", "2011-01-15 12:00", -1),  # a return: not a purchase
        ("A", "o4", "2011-02-05 10:00", 3),  # after the cutoff
        ("B", "o5", "2011-01-22 23:59", 1),
        ("C", "r2", "2011-01-10 10:00", -4),  # only a return before the cutoff
        ("C", "o6", "2011-02-01 10:00", 1),
        ("D", "o7", "2011-01-15 08:00", 1),
        ("D", "o8", "2011-01-29 00:00", 1),  # exactly at the cutoff: excluded (ts < cutoff)
    ]
)
CUTOFF = pd.Timestamp("2011-01-29")


def test_rfm_summary_known_answer_in_weeks():
    rfm = rfm_summary(TINY, CUTOFF)
    # A: purchase days 01-01, 01-08 -> x = 1, t_x = 7 d = 1 wk, T = 28 d = 4 wk
    # B: one day 01-22 -> x = 0, t_x = 0, T = 7 d = 1 wk
    # C: no purchase before the cutoff -> absent; D: 01-15 only -> T = 14 d = 2 wk
    assert rfm.index.tolist() == ["A", "B", "D"]
    assert rfm.index.name == "customer_id"
    assert rfm["frequency"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(rfm["recency"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(rfm["T"], [4.0, 1.0, 2.0])
    assert rfm["frequency"].dtype == np.int64


def test_rfm_summary_in_days():
    rfm = rfm_summary(TINY, CUTOFF, time_unit_days=1.0)
    np.testing.assert_allclose(rfm.loc["A", ["frequency", "recency", "T"]], [1, 7, 28])
    np.testing.assert_allclose(rfm.loc["D", ["frequency", "recency", "T"]], [0, 0, 14])


def test_rfm_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="quantity"):
        rfm_summary(TINY.drop(columns="quantity"), CUTOFF)
    with pytest.raises(ValueError, match="time_unit_days"):
        rfm_summary(TINY, CUTOFF, time_unit_days=0)


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

TRUE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}


@pytest.fixture(scope="module")
def simulated():
    n = 20_000
    T = np.random.default_rng(7).uniform(26, 104, n)  # weeks since first purchase
    return simulate_bgnbd(n, **TRUE, T=T, seed=42)


def test_fit_recovers_simulated_parameters(simulated):
    # Over 20 seeds the relative standard deviation of the MLE at this n was r 1.3%,
    # alpha 1.9%, a 3.9%, b 6.3%: the tolerances are ~4-6 standard deviations.
    model = BGNBD().fit(*simulated)
    for name, rtol in {"r": 0.08, "alpha": 0.08, "a": 0.25, "b": 0.25}.items():
        assert model.params_[name] == pytest.approx(TRUE[name], rel=rtol), name
    assert model.at_bound_ == []
    assert model.n_customers_ == 20_000
    # the MLE has a higher likelihood than the parameters that generated the data
    ll_true = _log_likelihood(**TRUE, data=_Histories(*simulated)).sum()
    assert ll_true < model.log_likelihood_ < ll_true + 10


def test_weights_equal_repeated_rows():
    # Fader & Hardie's compressed form: one row per distinct (x, t_x, T) with a count.
    T = np.random.default_rng(3).choice([30.0, 40.0, 52.0], 3000)
    x, tx, T = simulate_bgnbd(3000, **TRUE, T=T, seed=3)
    rows, counts = np.unique(np.c_[x, np.round(tx), T], axis=0, return_counts=True)
    assert len(rows) < len(x) / 2
    weighted = BGNBD().fit(*rows.T, weights=counts)
    expanded = BGNBD().fit(*np.repeat(rows, counts, axis=0).T)
    for name in TRUE:
        assert weighted.params_[name] == pytest.approx(expanded.params_[name], rel=1e-4)
    assert weighted.log_likelihood_ == pytest.approx(expanded.log_likelihood_, rel=1e-8)
    assert weighted.n_customers_ == 3000


def test_gradient_matches_finite_differences(simulated):
    x, tx, T = simulated
    data = _Histories(x[:2000], tx[:2000] / T.max(), T[:2000] / T.max())
    w = np.ones(2000)
    point = np.log([0.3, 0.05, 0.7, 2.0])
    _, grad = _neg_log_likelihood(point, data, w, 0.1)
    numeric = approx_fprime(point, lambda z: _neg_log_likelihood(z, data, w, 0.1)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_penalizer_shrinks_parameters(simulated):
    x, tx, T = (v[:3000] for v in simulated)
    free = BGNBD().fit(x, tx, T).params_
    shrunk = BGNBD(penalizer_coef=0.1).fit(x, tx, T).params_
    assert sum(v**2 for v in shrunk.values()) < sum(v**2 for v in free.values())


def test_no_dropout_data_warns_that_the_fit_is_on_a_bound():
    # Pure NBD data (nobody ever drops out): the MLE runs to a -> 0 / b -> inf.
    rng = np.random.default_rng(0)
    T = rng.uniform(20, 52, 2000)
    n = rng.poisson(rng.gamma(0.5, 1 / 4, 2000) * T)
    tx = np.where(n > 0, T * rng.beta(np.maximum(n, 1), 1), 0.0)
    with pytest.warns(RuntimeWarning, match="bound"):
        model = BGNBD().fit(n, tx, T)
    assert set(model.at_bound_) & {"a", "b"}
    assert model.params_["r"] == pytest.approx(0.5, rel=0.15)  # the purchase process is fine


def test_optimiser_failure_raises_with_the_reason():
    x, tx, T = simulate_bgnbd(500, **TRUE, T=np.full(500, 40.0), seed=1)
    with pytest.raises(BGNBDFitError, match="did not converge.*ITERATIONS"):
        BGNBD(max_iter=1).fit(x, tx, T)


@pytest.mark.parametrize(
    "frequency, recency, T, message",
    [
        ([1, -1], [1, 0], [2, 2], "frequency contains negative"),
        ([1, 1], [1, -0.5], [2, 2], "recency contains negative"),
        ([1, 1.5], [1, 1], [2, 2], "frequency must hold integer"),
        ([1, 1], [1, 3], [2, 2], "recency is larger than T"),
        ([1, 1], [1, 1], [2, 2, 3], "length mismatch"),
        ([1, 1], [1, 1], [2, np.nan], "T contains NaN"),
        ([0, 1], [1, 1], [2, 2], "recency must be 0 where frequency is 0"),
        ([0, 0], [0, 0], [2, 2], "not identifiable"),
        ([], [], [], "empty"),
    ],
)
def test_fit_rejects_invalid_input_naming_the_argument(frequency, recency, T, message):
    with pytest.raises(BGNBDFitError, match=message):
        BGNBD().fit(frequency, recency, T)


def test_fit_error_is_a_runtime_error():
    assert issubclass(BGNBDFitError, RuntimeError)
    with pytest.raises(RuntimeError, match="weights"):
        BGNBD().fit([1, 2], [1, 1], [2, 2], weights=[1, -1])


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------


def test_expected_purchases_matches_the_published_cdnow_example():
    # FHL 2005 sec. 5: with the CDNOW estimates, a customer with x = 2, t_x = 30.43,
    # T = 38.86 (weeks) is expected to make 1.226 purchases in the next 39 weeks.
    model = _model(**CDNOW)
    assert float(model.expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=5e-4)


def test_p_alive_is_one_without_repeat_purchases():
    model = _model(**CDNOW)
    np.testing.assert_array_equal(model.p_alive([0, 0, 0], [0, 0, 0], [1, 50, 500]), 1.0)


def test_p_alive_monotonic_in_T_and_recency():
    model = _model(**CDNOW)
    T = np.linspace(10, 200, 50)
    by_T = model.p_alive(3, 10.0, T)
    assert np.all(np.diff(by_T) < 0)  # longer silence since the last purchase
    by_recency = model.p_alive(3, np.linspace(1, 60, 50), 60.0)
    assert np.all(np.diff(by_recency) > 0)  # a more recent last purchase
    assert np.all((by_T > 0) & (by_T < 1))


def test_p_alive_known_answer():
    # 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) with x=2, t_x=30.43, T=38.86
    r, alpha, a, b = CDNOW.values()
    odds = a / (b + 1) * ((alpha + 38.86) / (alpha + 30.43)) ** (r + 2)
    assert float(_model(**CDNOW).p_alive(2, 30.43, 38.86)) == pytest.approx(1 / (1 + odds))


def _expected_if_alive_by_quadrature(t, x, T, r, alpha, a, b):
    """E_p[(1 - (1 + p t/(alpha+T))^-(r+x)) / p], p ~ Beta(a, b+x): the closed form's integral."""
    k = t / (alpha + T)

    def per_p(p):
        return (r + x) * k if p == 0 else -math.expm1(-(r + x) * math.log1p(p * k)) / p

    with warnings.catch_warnings():  # QUADPACK flags roundoff at ~1e-11 for a = 20, b = 100
        warnings.simplefilter("ignore", IntegrationWarning)
        value, _ = quad(per_p, 0, 1, weight="alg", wvar=(a - 1, b + x - 1), epsabs=0, epsrel=1e-10)
    return value / math.exp(betaln(a, b + x))


@pytest.mark.parametrize(
    "params",
    [
        CDNOW,
        {"r": 1.5, "alpha": 2.0, "a": 3.0, "b": 10.0},
        {"r": 0.5, "alpha": 5.0, "a": 1.0, "b": 2.0},  # a == 1: removable singularity
        {"r": 0.5, "alpha": 5.0, "a": 1.5, "b": 2.0},  # r - a integer: hyp2f1's weak spot
        {"r": 2.0, "alpha": 50.0, "a": 20.0, "b": 100.0},  # integers: hyp2f1 gave NaN / garbage
        {"r": 0.3, "alpha": 2.0, "a": 0.4, "b": 0.6},  # x = 0: a + b + x - 1 = 0 is a pole
    ],
)
def test_expected_purchases_matches_quadrature(params):
    model = _model(**params)
    x = np.array([0, 1, 3, 10, 40, 50, 0, 5])
    tx = np.array([0, 5.0, 20, 0.5, 51, 0.9, 0, 1])
    T = np.array([1, 10, 30, 1, 52, 1, 52, 100.0])
    for t in (1.0, 13.0, 52.0, 520.0):
        got = model.expected_purchases(t, x, tx, T)
        p_alive = model.p_alive(x, tx, T)
        want = [
            pa * _expected_if_alive_by_quadrature(t, xi, Ti, **params)
            for pa, xi, Ti in zip(p_alive, x, T, strict=True)
        ]
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_expected_purchases_stable_for_heavy_buyers_and_long_horizons():
    # lifetimes' direct 2F1(r+x, b+x; a+b+x-1; z) gives inf/NaN here. As t -> inf the
    # expectation given alive tends to E[1/p | alive] = (a+b+x-1)/(a-1) (for a > 1).
    params = {"r": 0.8, "alpha": 3.0, "a": 2.5, "b": 6.0}
    model = _model(**params)
    x = np.array([0, 10, 100, 1000, 5000], dtype=float)
    T = np.full(5, 104.0)
    tx = np.where(x > 0, 103.0, 0.0)
    horizons = np.array([1.0, 52.0, 520.0, 1e4, 1e7])
    values = np.array([model.expected_purchases(t, x, tx, T) for t in horizons])
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.all(np.diff(values, axis=0) > 0)  # more time, more purchases
    limit = model.p_alive(x, tx, T) * (params["a"] + params["b"] + x - 1) / (params["a"] - 1)
    np.testing.assert_allclose(values[-1], limit, rtol=1e-3)


def test_expected_purchases_new_limits():
    model = _model(**CDNOW)
    # small t: E[X(t)] ~ E[lambda] t = r t / alpha
    assert float(model.expected_purchases_new(1e-4)) == pytest.approx(
        CDNOW["r"] / CDNOW["alpha"] * 1e-4, rel=1e-3
    )
    # eq. 9 equals the conditional formula for a customer with x = t_x = T = 0
    np.testing.assert_allclose(
        model.expected_purchases_new([13, 52, 520]),
        model.expected_purchases(np.array([13, 52, 520]), 0, 0, 0),
    )
    assert float(model.expected_purchases_new(0)) == 0.0


def test_prediction_input_errors():
    model = _model(**CDNOW)
    with pytest.raises(ValueError, match="recency is larger than T"):
        model.p_alive(1, 5, 4)
    with pytest.raises(ValueError, match="t must be"):
        model.expected_purchases(-1, 1, 2, 4)
    with pytest.raises(RuntimeError, match="not fitted"):
        BGNBD().p_alive(1, 1, 2)


def test_to_dict_round_trip_through_json(simulated):
    x, tx, T = (v[:3000] for v in simulated)
    model = BGNBD().fit(x, tx, T)
    restored = BGNBD.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored.params_ == model.params_
    assert restored.log_likelihood_ == model.log_likelihood_
    np.testing.assert_array_equal(
        restored.expected_purchases(13, x, tx, T), model.expected_purchases(13, x, tx, T)
    )
    with pytest.raises(ValueError, match="finite and > 0"):
        BGNBD.from_dict({"model": "BGNBD", "params": {**model.params_, "a": -1.0}})
    with pytest.raises(ValueError, match="lacks"):
        BGNBD.from_dict({"model": "BGNBD", "params": {"r": 1.0}})


# ---------------------------------------------------------------------------------------------
# Real data: Online Retail II vs lifetimes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail() -> pd.DataFrame:
    """Online Retail II in the transactions contract, minimally cleaned."""
    raw = pd.read_csv(
        DATA / "online_retail_II.csv.gz",
        dtype={"Invoice": str, "StockCode": str, "Customer ID": str},
    )
    raw = raw[
        raw["Customer ID"].notna() & ~raw["Invoice"].str.startswith(("C", "A")) & (raw["Price"] > 0)
    ]
    return pd.DataFrame(
        {
            "customer_id": raw["Customer ID"],
            "order_id": raw["Invoice"],
            "ts": pd.to_datetime(raw["InvoiceDate"]),
            "quantity": raw["Quantity"].astype(float),
            "unit_price": raw["Price"].astype(float),
            "country": raw["Country"],
        }
    )


def _uk_before_2011(retail: pd.DataFrame) -> pd.DataFrame:
    uk = retail[retail["country"] == "United Kingdom"]
    first = uk.groupby("customer_id")["ts"].min()
    return uk[uk["customer_id"].isin(first.index[first < "2011-01-01"])]


@pytest.mark.integration
def test_rfm_summary_matches_lifetimes_on_real_data(retail):
    from lifetimes.utils import summary_data_from_transaction_data

    cutoff = pd.Timestamp("2011-06-01")
    ours = rfm_summary(retail, cutoff, time_unit_days=1.0)
    purchases = retail[(retail["ts"] < cutoff) & (retail["quantity"] > 0)]
    # lifetimes' observation end is inclusive and day-floored: its T is ours minus one day
    theirs = summary_data_from_transaction_data(
        purchases, "customer_id", "ts", observation_period_end=cutoff - pd.Timedelta(days=1)
    ).sort_index()
    assert ours.index.tolist() == theirs.index.tolist()
    assert len(ours) > 4000
    np.testing.assert_array_equal(ours["frequency"], theirs["frequency"])
    np.testing.assert_allclose(ours["recency"], theirs["recency"])
    np.testing.assert_allclose(ours["T"] - 1, theirs["T"])


@pytest.mark.integration
def test_fit_matches_lifetimes_on_online_retail(retail):
    from lifetimes import BetaGeoFitter

    rfm = rfm_summary(_uk_before_2011(retail), pd.Timestamp("2011-06-01"), time_unit_days=7.0)
    x, tx, T = (rfm[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    assert 3500 < len(rfm) < 4500  # 3,993 UK customers in this extract
    ours = BGNBD(penalizer_coef=0.0).fit(x, tx, T)
    theirs = BetaGeoFitter(penalizer_coef=0.0).fit(x, tx, T)
    # measured agreement ~5e-7 (both maximise the same likelihood); 2% would be the bar
    for name in ("r", "alpha", "a", "b"):
        assert ours.params_[name] == pytest.approx(theirs.params_[name], rel=1e-3), name
    # same penalty definition too (it moves b from 3.6 to 0.6 here, so it is visible)
    ours_pen = BGNBD(penalizer_coef=0.01).fit(x, tx, T)
    theirs_pen = BetaGeoFitter(penalizer_coef=0.01).fit(x, tx, T)
    for name in ("r", "alpha", "a", "b"):
        assert ours_pen.params_[name] == pytest.approx(theirs_pen.params_[name], rel=1e-3), name
    assert ours_pen.params_["b"] < 0.5 * ours.params_["b"]
    np.testing.assert_allclose(
        ours.p_alive(x, tx, T), theirs.conditional_probability_alive(x, tx, T), atol=1e-4
    )
    for t in (4, 13, 26):
        np.testing.assert_allclose(
            ours.expected_purchases(t, x, tx, T),
            theirs.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T),
            rtol=1e-3,
        )
    np.testing.assert_allclose(
        ours.expected_purchases_new([13, 52]),
        theirs.expected_number_of_purchases_up_to_time(np.array([13.0, 52.0])),
        rtol=1e-3,
    )


@pytest.mark.integration
def test_six_months_of_history_is_flagged_not_silently_fitted(retail):
    # With only Dec 2009 - May 2010 the dropout process is not identified: lifetimes'
    # BetaGeoFitter raises ConvergenceError (NaN objective); ours returns the boundary MLE
    # (a -> 0, b -> inf: no dropout) and says so.
    rfm = rfm_summary(retail, pd.Timestamp("2010-06-01"), time_unit_days=7.0)
    with pytest.warns(RuntimeWarning, match="bound"):
        model = BGNBD().fit(rfm["frequency"], rfm["recency"], rfm["T"])
    assert {"a", "b"} <= set(model.at_bound_)
    assert np.isfinite(model.log_likelihood_)
