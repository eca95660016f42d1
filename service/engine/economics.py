"""The priority formula: expected incremental gross margin of contacting a customer with an
offer on a channel, minus incentive and contact costs, for every (customer, offer, channel).
The formula and its sources: docs/design.md, "Decision engine" (Priority)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from service.config import CHANNELS, OFFER_TYPES, Settings
from service.engine.inputs import PriorityInputs
from service.engine.memo import memo
from service.engine.offers import model_offers, offer_preference, offer_tables
from service.engine.policy import CAUSES, MONETARY, PolicyParams

# The formula's terms are written once (uplift_scale, rule_uplift, order_value, incentive_cost,
# net_priority) and evaluated on numpy arrays by the batch path and on floats by one decision
# (the same IEEE operations in the same order, so the same results to the last bit). One
# decision on one-element arrays instead: engine row +24 %, dry-run row +22 % (p50,
# in-process rows of benchmarks/serving.py).
_X = TypeVar("_X", float, np.ndarray)


def uplift_scale(q: _X, p: PolicyParams) -> _X:
    """``lambda * e_c / e_ref``: the Hillstrom uplift at a channel's engagement ``q``."""
    return p.uplift_prior * (q / p.reference_engagement)


def rule_uplift(
    scale: _X, m: Any, p0: Any, reach: Any, minimum: Callable[[Any, Any], Any] = np.minimum
) -> _X:
    """The rules' uplift ``scale * m_o * (1 - p0) * reach``, capped at ``1 - p0``."""
    cap = 1.0 - p0
    return minimum(scale * m * cap * reach, cap)


def order_value(settings: Settings, basket: _X) -> _X:
    """``gross_margin * basket_value``: the margin of one order."""
    return settings.value_tiers.gross_margin * basket


def incentive_cost(rate: Any, basket: Any, p0: Any, uplift: _X, fixed: Any = 0.0) -> _X:
    """What every buyer holding the offer is paid: ``(cost_rate * basket + fixed) * p1`` — a
    discount's share of the order, or bonus points' money value (``fixed``)."""
    return (rate * basket + fixed) * (p0 + uplift)


def net_priority(uplift: _X, value: Any, incentive: Any, contact: Any) -> _X:
    """``uplift * value - incentive - contact cost``: the priority (currency)."""
    return uplift * value - incentive - contact


def predicted_value(features: pd.DataFrame, p_churn: np.ndarray) -> np.ndarray:
    """Expected revenue over the next 365 days: P(alive) × historic annual spend.

    Annual spend is spend / max(tenure, 1 year) (as :func:`features.lifecycle.value_score`),
    so a new customer's single order is not extrapolated to a year of weekly orders.
    """
    years = np.maximum(features["tenure_days"].to_numpy(float), 365.0) / 365.0
    annual = features["monetary_all"].to_numpy(float) / years
    return (1.0 - np.asarray(p_churn, float)) * annual


def reach_of(recency: np.ndarray, p: PolicyParams) -> np.ndarray:
    """Share of customers a message still reaches: 1 up to a year of silence, then
    ``exp(-(recency - 365) / lost_decay_days)`` (an assumption beyond Hillstrom's support)."""
    return np.exp(-np.clip(recency - 365.0, 0.0, None) / p.lost_decay_days)


def formula_tables(settings: Settings, p: PolicyParams) -> tuple:
    """Per (settings, params) constants of the formula, computed once (both are immutable)."""
    # memo: engine row p50 +29 % without it (0.221 vs 0.171 ms; benchmarks/serving.py in-process rows)
    return memo(_build_tables, settings, p)


def _build_tables(settings: Settings, p: PolicyParams) -> tuple:
    allowed, rates, fixed, response = offer_tables(settings, p)
    costs = np.array(
        [settings.channels[c].cost if c in settings.channels else 0.0 for c in CHANNELS]
    )
    monetary = np.array([o in MONETARY for o in OFFER_TYPES])
    boost = np.array([p.cause_offer_boost.get(c, 1.0) for c in CAUSES])
    # offer response when each cause is the primary one: monetary offers boosted (C x O)
    by_cause = response[None, :] + np.where(
        monetary[None, :], (response[None, :] - 1.0) * (boost[:, None] - 1.0), 0.0
    )
    return allowed, rates, fixed, by_cause, costs, offer_preference(settings)


def economics_matrix(
    inp: PriorityInputs,
    settings: Settings,
    p: PolicyParams,
    q: np.ndarray,
    cause: np.ndarray,
    intent: np.ndarray,
    segments: np.ndarray | None = None,
    reach: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Economics of every (customer, offer, channel): arrays of shape (n, O, C).

    ``reach``: :func:`reach_of` of ``inp.recency`` when the caller has it already.
    """
    allowed, rates, fixed, by_cause, costs, preference = formula_tables(settings, p)
    m = by_cause[cause]  # (n, O)
    p0 = inp.p0[:, None, None]
    reach = reach_of(inp.recency, p) if reach is None else reach
    uplift = rule_uplift(uplift_scale(q[:, None, :], p), m[:, :, None], p0, reach[:, None, None])
    offer_ok = allowed[intent]  # (n, O)
    by_model = np.zeros(len(inp), bool)
    tau = net = None
    if inp.offer_uplift is not None:
        by_model, use, scaled, model_ok, tau, net = model_offers(
            inp, allowed, rates, intent, q, settings.value_tiers.gross_margin, p, fixed
        )
        uplift = np.where(use[:, :, None], scaled, uplift)
        offer_ok = np.where(by_model[:, None], model_ok, offer_ok)
    basket = inp.basket[:, None, None]
    value = order_value(settings, basket)
    incentive = incentive_cost(rates[None, :, None], basket, p0, uplift, fixed[None, :, None])
    contact = (costs if segments is None else costs * segments)[None, None, :]
    priority = net_priority(uplift, value, incentive, contact)
    zero = np.zeros(priority.shape)
    return {
        "priority": priority,
        "uplift": uplift,
        "incentive": incentive,
        "contact": zero + contact,
        "value": zero + value,
        "offer_ok": offer_ok,
        "pref": preference[intent],
        "by_model": by_model,
        "tau": tau,
        "net": net,
    }


class RowEconomics(NamedTuple):
    """:func:`economics_matrix` for one customer as plain lists ``[offer][channel]`` (one decision
    reads single cells: indexing numpy scalars is slow)."""

    priority: list[list[float]]
    uplift: list[list[float]]
    incentive: list[list[float]]
    value: float  # margin x basket
    contact: list[float]  # per channel, one segment
    offer_ok: list[bool]
    pref: list[float]
    by_model: bool
    tau: list[float] | None
    net: list[float] | None

    @classmethod
    def of(cls, mat: dict[str, np.ndarray], row: int = 0) -> RowEconomics:
        """Customer ``row`` of a :func:`economics_matrix` result."""
        tau, net = mat["tau"], mat["net"]
        return cls(
            mat["priority"][row].tolist(),
            mat["uplift"][row].tolist(),
            mat["incentive"][row].tolist(),
            float(mat["value"][row, 0, 0]),
            mat["contact"][row, 0].tolist(),
            mat["offer_ok"][row].tolist(),
            mat["pref"][row].tolist(),
            bool(mat["by_model"][row]),
            None if tau is None else tau[row].tolist(),
            None if net is None else net[row].tolist(),
        )


def _nan_min(a: float, b: float) -> float:
    """``np.minimum`` of two floats (NaN if either is)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return b if b < a else a


def row_economics(
    inp: PriorityInputs,
    settings: Settings,
    p: PolicyParams,
    q: Sequence[float],
    cause: int,
    intent: int,
    reach: float,
) -> RowEconomics:
    """:func:`economics_matrix` of one customer under the rules (no offer-uplift model), in floats.

    The formula's terms evaluated on floats (see the comment at the top of the module): the
    same IEEE results as :func:`economics_matrix` to the last bit (a test checks the real
    log's customers).
    """
    if inp.offer_uplift is not None or len(inp) != 1:
        raise ValueError("row_economics: one customer under the rules only")
    allowed, rates, fixed, by_cause, costs, preference = formula_tables(settings, p)
    m = by_cause[cause].tolist()
    p0 = float(inp.p0[0])
    basket = float(inp.basket[0])
    scale = [uplift_scale(qc, p) for qc in q]
    value = order_value(settings, basket)
    contact = costs.tolist()
    uplift, incentive, priority = [], [], []
    for o, (rate, fx) in enumerate(zip(rates.tolist(), fixed.tolist(), strict=True)):
        ups = [rule_uplift(s, m[o], p0, reach, _nan_min) for s in scale]
        inc = [incentive_cost(rate, basket, p0, u, fx) for u in ups]
        uplift.append(ups)
        incentive.append(inc)
        priority.append(
            [net_priority(u, value, i, k) for u, i, k in zip(ups, inc, contact, strict=True)]
        )
    return RowEconomics(
        priority,
        uplift,
        incentive,
        value,
        contact,
        allowed[intent].tolist(),
        preference[intent].tolist(),
        False,
        None,
        None,
    )


def customer_economics(
    inp: PriorityInputs,
    settings: Settings,
    p: PolicyParams,
    q: np.ndarray,
    cause: int,
    intent: int,
    reach: float,
) -> RowEconomics:
    """One customer's economics: in floats under the rules, else via :func:`economics_matrix`."""
    if inp.offer_uplift is None:
        return row_economics(inp, settings, p, q.tolist(), cause, intent, reach)
    mat = economics_matrix(
        inp, settings, p, q[None, :], np.array([cause]), np.array([intent]), np.array([reach])
    )
    return RowEconomics.of(mat)
