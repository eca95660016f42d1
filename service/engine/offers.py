"""Offers: the candidate offers per intent and their costs (the rules), and the offer-uplift
model — whether it applies to this brand (:func:`offer_model_status`), its terms in the
priority formula and the offer reason code. See docs/design.md, "Decision engine" (Offer
choice)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.config import OFFER_TYPES, Settings
from service.engine.policy import INTENT_OFFERS, INTENTS, PolicyParams

if TYPE_CHECKING:
    from service.engine.economics import RowEconomics
    from service.engine.inputs import PriorityInputs


@dataclass(frozen=True)
class OfferModel:
    """The registered offer-uplift champion as the engine sees it (:func:`offer_model_status`).

    ``label`` starts every offer reason code: ``offer_uplift_model v7`` when the model
    applies, else ``offer_rules: <why not>``.
    """

    applies: bool
    label: str
    version: str | None = None
    arms: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    trained_on: str | None = None


NO_OFFER_MODEL = OfferModel(False, "offer_rules: no offer_uplift champion")


def offer_model_status(
    version: str | None,
    arms: Sequence[str],
    columns: Sequence[str],
    settings: Settings,
    snapshot_columns: Sequence[str],
    trained_on: str | None = None,
) -> OfferModel:
    """Whether an offer-uplift model may choose this brand's offers.

    It applies only if every arm is an offer type of the configured catalogue (a model of
    other offers, e.g. Hillstrom's e-mail arms, says nothing about ours) and every feature
    column it reads exists in the serving snapshot; otherwise the rules choose, and the
    returned label says why.
    """
    arms, columns = tuple(arms), tuple(columns)
    common = {"version": version, "arms": arms, "columns": columns, "trained_on": trained_on}
    catalogue = {o.type for o in settings.offers}
    if not arms or any(a not in catalogue for a in arms):
        covers = ", ".join(arms) or "no arms"
        return OfferModel(
            False,
            f"offer_rules: no offer_uplift model for this brand's offers "
            f"(champion v{version} covers {covers})",
            **common,
        )
    have = set(snapshot_columns)
    missing = [c for c in columns if c not in have]
    if missing:
        return OfferModel(
            False,
            f"offer_rules: offer_uplift champion v{version} reads feature column(s) "
            f"{', '.join(missing[:5])} the snapshot lacks",
            **common,
        )
    return OfferModel(True, f"offer_uplift_model v{version}", **common)


def offer_tables(
    settings: Settings, p: PolicyParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(intent × offer availability, offer cost rates (of the order value), fixed costs per
    buyer (currency: ``bonus_points``' points × ``loyalty.point_value``), base response
    multipliers)."""
    in_catalogue = {o.type for o in settings.offers}
    allowed = np.zeros((len(INTENTS), len(OFFER_TYPES)), bool)
    for i, intent in enumerate(INTENTS):
        for offer in INTENT_OFFERS[intent]:
            if offer in in_catalogue:
                allowed[i, OFFER_TYPES.index(offer)] = True
    rates = np.array(
        [settings.offer(o).cost_rate if o in in_catalogue else 0.0 for o in OFFER_TYPES]
    )
    fixed = np.array(
        [
            settings.loyalty.money(settings.offer(o).points) if o in in_catalogue else 0.0
            for o in OFFER_TYPES
        ]
    )
    response = np.array([p.offer_response.get(o, 1.0) for o in OFFER_TYPES])
    return allowed, rates, fixed, response


def offer_preference(settings: Settings) -> np.ndarray:
    """Tiny tie-breaker (intent × offer): earlier offers in INTENT_OFFERS win exact ties."""
    pref = np.zeros((len(INTENTS), len(OFFER_TYPES)))
    for i, intent in enumerate(INTENTS):
        for rank, offer in enumerate(INTENT_OFFERS[intent]):
            pref[i, OFFER_TYPES.index(offer)] = -1e-9 * rank
    return pref


NONE_OFFER = OFFER_TYPES.index("none")

_IS_NONE = np.array([o == "none" for o in OFFER_TYPES])


def model_offers(
    inp: PriorityInputs,
    allowed: np.ndarray,
    rates: np.ndarray,
    intent: np.ndarray,
    q: np.ndarray,
    margin: float,
    p: PolicyParams,
    fixed: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """The offer-uplift model's terms (docs/design.md, "Offer choice").

    Returns ``by_model`` (n: rows it decides — it has an arm for one of the intent's offers
    or for "none"), ``use`` (n x O: uplift taken from the model), the channel-scaled uplift
    (n x O x C), the offers that may be chosen (n x O: net of incentive > 0, else "none"),
    the predicted uplift ``tau`` and its net value per order window (n x O, at e-mail's
    reference engagement, the setting the model learned in). ``fixed``: each offer's cost
    per buyer beside its rate (:func:`offer_tables`).
    """
    p0 = inp.p0[:, None]
    covered = np.isfinite(inp.offer_uplift)
    none_ok = bool(allowed[:, NONE_OFFER].any())  # "none" is in the catalogue
    cand = covered & (allowed[intent] | (_IS_NONE & none_ok)[None, :])
    by_model = cand.any(axis=1)
    tau = np.minimum(np.maximum(np.where(covered, inp.offer_uplift, 0.0), -p0), 1.0 - p0)
    basket = inp.basket[:, None]
    per_buyer = rates[None, :] * basket + (0.0 if fixed is None else fixed[None, :])
    net = np.where(cand, tau * margin * basket - per_buyer * (p0 + tau), -np.inf)
    pays = net > 0
    ok = pays.copy()
    if none_ok:
        ok[:, NONE_OFFER] |= ~pays.any(axis=1)  # nothing pays: no offer, a plain reminder
    scaled = tau[:, :, None] * (q[:, None, :] / p.reference_engagement)
    scaled = np.minimum(np.maximum(scaled, -p0[:, :, None]), 1.0 - p0[:, :, None])
    return by_model, covered & by_model[:, None], scaled, ok, tau, net


def offer_reason(
    model: OfferModel | None, econ: RowEconomics, o: int, intent: str, settings: Settings
) -> str:
    """The offer reason code: did the offer-uplift model or the rules choose offer ``o``?"""
    model = model or NO_OFFER_MODEL
    if not model.applies:
        return model.label
    if not econ.by_model or econ.tau is None or econ.net is None:
        return (
            f"offer_rules: {model.label} has no arm for intent {intent} "
            f"(covers {', '.join(model.arms)})"
        )
    tau, net, cur = econ.tau, econ.net, settings.currency
    if net[o] > 0:
        return f"{model.label}: {OFFER_TYPES[o]} uplift {tau[o]:+.3f} (net {net[o]:+.2f} {cur})"
    best = int(np.argmax(net))
    return (
        f"{model.label}: no offer pays (best {OFFER_TYPES[best]} uplift {tau[best]:+.3f}, "
        f"net {net[best]:+.2f} {cur}); no offer: plain reminder"
    )
