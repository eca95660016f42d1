"""The decision as returned and stored: the pydantic output models (:class:`Decision` and
its parts) and :func:`encode_decision`, the served JSON of the engine's plain data. See
docs/design.md, "Decision engine"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pydantic_core
from pydantic import BaseModel, ConfigDict

from service.config import CHANNELS, OFFER_TYPES, Offer, Settings
from service.messages import RenderedMessage

if TYPE_CHECKING:
    from service.engine.channels import Posterior
    from service.engine.economics import RowEconomics
    from service.engine.inputs import ModelScores

# The engine builds a decision as plain data in the models' field order; the served path
# encodes it without building the models (see decide_data), so these helpers mirror them.


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoresOut(_Out):
    p_churn: float
    p_buy_30d: float
    expected_days: float
    expected_next_order: date | None
    predicted_value: float


class Economics(_Out):
    """The priority formula's terms for the chosen offer and channel (currency)."""

    p_buy_without_contact: float
    p_buy_with_contact: float
    uplift: float
    value_if_buy: float
    expected_incremental_value: float
    contact_cost: float
    incentive_cost: float
    priority: float


class CauseOut(_Out):
    cause: str
    score: float
    evidence: dict[str, Any]


class WhyAsleep(_Out):
    primary: str | None
    causes: list[CauseOut]


class OfferItem(_Out):
    item_id: str
    name: str | None = None


class OfferOut(_Out):
    type: str
    discount_pct: float
    min_spend: float
    text: str | None
    items: list[OfferItem]


class ChannelOption(_Out):
    channel: str
    eligible: bool
    reason: str
    engagement: float  # posterior mean
    cost: float
    priority: float | None  # at the posterior mean
    posterior_a: float = 0.0  # Beta(a, b) posterior of the engagement
    posterior_b: float = 0.0
    sample: float | None = None  # the Thompson draw, when the rule explored


class MessageOut(_Out):
    intent: str
    channel: str
    locale: str
    subject: str | None
    body: str
    length: int
    segments: int
    encoding: str
    truncated: bool
    link: str | None


class DispatchOut(_Out):
    status: str  # sent | failed | duplicate | scheduled | skipped
    attempts: int = 0
    error: str | None = None
    provider_message_id: str | None = None
    status_code: int | None = None


class Decision(_Out):
    """One decision, as returned to the caller and stored as the decision's payload."""

    decision_id: str
    customer_id: str
    campaign_id: str
    decided_at: datetime
    snapshot_at: datetime
    stage: str
    tier: str
    value_score: float
    scores: ScoresOut
    revive: bool
    priority: float
    currency: str
    economics: Economics
    why_asleep: WhyAsleep | None
    intent: str
    offer: OfferOut | None
    channel: str | None
    channel_options: list[ChannelOption]
    send_at: datetime | None
    send_at_local: str | None
    timezone: str
    holdout: bool
    contact: bool
    blocked_by: str | None
    message: MessageOut | None
    reasons: dict[str, list[str]]
    model_versions: dict[str, str]
    dispatch: DispatchOut | None = None


def encode_decision(data: Mapping[str, Any]) -> bytes:
    """:func:`decide_data`'s output as the JSON of its :class:`Decision` (pydantic-core's
    serialiser with the models' settings: NaN and infinities as ``null``)."""
    return pydantic_core.to_json(data, inf_nan_mode="null")


def rounded(x: float, nd: int = 4) -> float:
    return float(round(x, nd)) if math.isfinite(x) else 0.0


def scores_out(
    scores: ModelScores, expected_next: datetime | None, log_zone: ZoneInfo
) -> dict[str, Any]:
    """The fields of :class:`ScoresOut`."""
    horizon = math.isfinite(scores.expected_days)
    return {
        "p_churn": rounded(scores.p_churn),
        "p_buy_30d": rounded(scores.p_buy_30d),
        "expected_days": rounded(scores.expected_days, 1) if horizon else 0.0,
        "expected_next_order": expected_next.astimezone(log_zone).date() if expected_next else None,
        "predicted_value": rounded(scores.predicted_value, 2),
    }


def economics_out(
    p0: float, uplift: float, value: float, contact: float, incentive: float, priority: float
) -> dict[str, Any]:
    """The fields of :class:`Economics`."""
    return {
        "p_buy_without_contact": rounded(p0, 5),
        "p_buy_with_contact": rounded(p0 + uplift, 5),
        "uplift": rounded(uplift, 6),
        "value_if_buy": rounded(value, 2),
        "expected_incremental_value": rounded(uplift * value, 4),
        "contact_cost": rounded(contact, 4),
        "incentive_cost": rounded(incentive, 4),
        "priority": rounded(priority, 4),
    }


def channel_options_out(
    settings: Settings,
    econ: RowEconomics,
    rates: np.ndarray,
    posteriors: Mapping[str, Posterior],
    draws: np.ndarray | None,
    why_not: Mapping[str, str],
    chosen: int | None,
) -> list[dict[str, Any]]:
    """The fields of a :class:`ChannelOption` per configured channel: its best offer's
    priority at the posterior mean, and why it was or was not chosen."""
    options: list[dict[str, Any]] = []
    offers = [o for o in range(len(OFFER_TYPES)) if econ.offer_ok[o]]
    for i, ch in enumerate(CHANNELS):
        if ch not in settings.channels:
            continue
        best = max((econ.priority[o][i] for o in offers), default=-math.inf)
        options.append(
            {
                "channel": ch,
                "eligible": ch not in why_not,
                "reason": why_not.get(ch, "chosen" if chosen == i else "lower_priority"),
                "engagement": rounded(float(rates[i]), 4),
                "cost": settings.channels[ch].cost,
                "priority": rounded(float(best), 4) if math.isfinite(best) else None,
                "posterior_a": rounded(posteriors[ch].a),
                "posterior_b": rounded(posteriors[ch].b),
                "sample": rounded(float(draws[i])) if draws is not None else None,
            }
        )
    return options


def offer_out(
    offer: Offer, locale: str, settings: Settings, items: Sequence[str], names: Mapping[str, str]
) -> dict[str, Any]:
    """The fields of :class:`OfferOut`."""
    return {
        "type": offer.type,
        "discount_pct": offer.discount_pct,
        "min_spend": offer.min_spend,
        "text": offer.text(locale, settings.currency_symbol),  # type: ignore[arg-type]
        "items": [{"item_id": i, "name": names.get(i)} for i in items],
    }


def message_out(rendered: RenderedMessage) -> dict[str, Any]:
    """The fields of :class:`MessageOut`."""
    return {
        "intent": rendered.intent,
        "channel": rendered.channel,
        "locale": rendered.locale,
        "subject": rendered.subject,
        "body": rendered.body,
        "length": rendered.length,
        "segments": rendered.segments,
        "encoding": rendered.encoding,
        "truncated": rendered.truncated,
        "link": rendered.link,
    }
