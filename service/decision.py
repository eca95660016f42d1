"""The decision engine: who to revive, why they slept, what to offer, on which channel, when.

Plain Python (no BentoML), deterministic given its inputs, and the one module that holds the
decision policy. The service perceives a customer (feature row, model scores, ALS candidates,
item history, contact history and consents from the store) and calls :func:`decide_data`
(:func:`decide` is the same, validated); batch ranking uses the vectorised
:func:`priorities` on the whole snapshot and builds full decisions only for the rows it keeps.

Priority (currency) — expected incremental gross margin of contacting the customer now with
offer ``o`` on channel ``c``, minus what the contact costs::

    p0        = P(order within 30 days | no contact)          next-purchase model, p_buy_30d
    uplift    = lambda * (e_c / e_ref) * m_o * (1 - p0) * reach   (capped at 1 - p0)
    p1        = p0 + uplift                                    P(order within 30 d | contact)
    value     = gross_margin * basket_value                    margin of one order
    incentive = cost_rate_o * basket_value * p1                the discount is paid by every
                                                               buyer who holds it, not only
                                                               the incremental ones
    priority  = uplift * value - incentive - cost_c * segments

* ``lambda`` = 0.00496, the Hillstrom experiment's arm difference: P(conversion within two
  weeks | one merchandise e-mail) − P(conversion | no e-mail) = 0.010681 − 0.005726 over
  42,693 e-mailed and 21,307 control customers who bought in the previous 12 months (Kevin
  Hillstrom, MineThatData E-Mail Analytics challenge, 2008; ``../shared/data``). Per recency
  band (1-3, 4-6, 7-9, 10-12 months) the difference stays between 0.0038 and 0.0056, so it is
  applied flat up to a year of silence; beyond that (outside the experiment's support)
  ``reach = exp(-(recency - 365) / 365)`` is an assumption. Only customers who would not
  have bought anyway can be persuaded, hence ``(1 - p0)`` (the "sure things" of uplift
  modelling, Radcliffe & Surry 2011).
* ``e_c / e_ref``: the channel's estimated engagement relative to the e-mail base rate — the
  experiment was an e-mail, so e-mail at the base rate is 1. The estimate is a Beta-Binomial
  posterior per customer and channel (:func:`engagement_posterior`): prior
  Beta(k·m, k·(1−m)) with k = ``engagement_prior_weight`` pseudo-messages and m the channel's
  population rate (engaged messages over messages, shrunk towards the configured
  ``base_engagement`` with ``population_prior_weight``); evidence the customer's messages,
  engaged = opened or clicked, each weighted 2^(−age / ``engagement_half_life_days``) so
  recent behaviour dominates. ``e_c`` is the posterior mean a / (a + b).
* ``m_o``: response multiplier of the offer (1 for reminders; coupons and discounts more,
  and more again for price-sensitive customers or as an apology after returns). These are
  stated priors (:class:`PolicyParams`): the *rules*, used unless an offer-uplift model
  applies (below).
* ``cost_rate_o`` and ``cost_c`` come from the configured offer catalogue and channels.

Offer choice: uplift model or rules. When the ``offer_uplift`` champion applies
(:func:`offer_model_status`: every arm is an offer type of the catalogue and every feature
column it reads is in the snapshot — Hillstrom's e-mail arms never are), its predicted uplift
``tau_o(x)`` (P(order within the attribution window | contacted with o) − P(order | hold-out),
learned from the service's own randomised hold-out) replaces the rule term for the offers it
has an arm for: ``uplift = tau_o * (e_c / e_ref)``, clipped to ``[-p0, 1 - p0]``. Candidates
are those arms (allowed for the intent, plus "none") whose net value at the reference
engagement, ``tau_o * value - cost_rate_o * basket * (p0 + tau_o)``, is positive; when none
is, "none" (a plain reminder, no incentive; valued by its arm, else by the rule with
``m = 1``) is the offer. Offers without an arm are not chosen while the model decides; a
customer whose intent has no arm at all gets the rules. Every decision's ``reasons.what``
starts with the offer reason code (``offer_uplift_model v7: ...`` or ``offer_rules: ...``).

Why asleep (only for ``at_risk``, ``sleeping``, ``lost``; scores in [0, 1], evidence returned):
``returns`` (a return in the last 90 days, or returned value >= 15% of purchases),
``message_fatigue`` (>= 3 recency-weighted messages, engaged ones below a quarter of the
channels' rate),
``price_sensitivity`` (pays <= 85% of the items' median price), ``need_met`` (>= 60% of the
lines in one item family over <= 3 purchase days), ``forgotten`` (no contact in 90 days; the
weak default). The primary cause picks the message intent (service recovery after returns,
new arrivals when the need was met, win-back otherwise; active customers get a replenishment
reminder, loyal ones a value reminder, new ones cross-sell) and so the candidate offers.

Channel: enabled, allowed by the caller, consented (an explicit revoke always wins, then the
profile's consent, then ``implied_consent``), reachable (the identifier is known or an
account identifier; not every send bounced), not capped at ``send_at`` (per channel per day
and week, all channels per week, counting scheduled contacts), and the message fits; among
those the best priority, else none with each channel's reason. The rule
(``channel_selection``, per request ``explore``): ``mean`` ranks at the posterior mean
(deterministic); ``thompson`` ranks at one draw from each channel's Beta posterior (Thompson
sampling), seeded by the decision id (else customer, campaign and ``now``) so the decision is
reproducible, which keeps trying a new channel or a cold customer's uncertain ones while the
clearly better channel wins almost always. Thompson picks the channel only: each channel
keeps its best offer at the posterior mean, the economics reported are the chosen option's at
the mean, and ``revive`` is judged on the best option at the mean (who is worth contacting
does not depend on the draw); the gap is reported as ``exploration_cost``. The reasons name
the rule and every channel's posterior (mean, a, b).

When: a reminder ``reminder_days_before`` the expected next order for active and loyal
customers, else now; moved to the customer's usual ordering hour (log time zone), then out of
the quiet hours in the customer's own time zone. Campaign windows and blackouts are judged at
``send_at``.

Items: never one returned in the last ``return_block_days`` (90) nor bought in the last
``recent_purchase_days`` (30); win-back, replenishment and value reminders name the
customer's own regulars, the other intents the cross-sell (ALS) candidates.

``revive`` is true when the best (offer, channel) priority exceeds ``min_priority``, a channel
is available and no rule blocks the contact (blackout of a higher-priority campaign, a purchase
since the snapshot, campaign not running). Hold-out customers keep ``revive`` (they are the
control arm of the eligible population) but ``contact`` is false: they are logged, never sent.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pydantic_core
from pydantic import BaseModel, ConfigDict

from core.store import (
    CapSpec,
    ContactRecord,
    Engagement,
    cap_contacts,
    count_contacts,
)
from features.lifecycle import STAGES
from service.config import (
    CHANNELS,
    OFFER_TYPES,
    Campaign,
    QuietHours,
    Settings,
)
from service.messages import MessageTooLong, RenderedMessage, render_message

__all__ = [
    "ASLEEP_STAGES",
    "CAUSES",
    "DEFAULT_PARAMS",
    "HILLSTROM_UPLIFT",
    "INTENT_OFFERS",
    "NO_OFFER_MODEL",
    "ChannelOption",
    "ContactHistory",
    "CustomerView",
    "Decision",
    "Economics",
    "MessageOut",
    "ModelScores",
    "OfferModel",
    "OfferOut",
    "PolicyParams",
    "Posterior",
    "Prepared",
    "PreparedRow",
    "PriorityInputs",
    "Priorities",
    "Profile",
    "ScoresOut",
    "UnknownCampaign",
    "WhyAsleep",
    "blocking_campaign",
    "campaign_by_id",
    "caps_for",
    "count_contacts",
    "decide",
    "decide_data",
    "encode_decision",
    "engagement_posterior",
    "holdout_draw",
    "in_holdout",
    "offer_model_status",
    "plan_send_at",
    "predicted_value",
    "priorities",
    "rank_inputs",
    "recency_weight",
    "regulars",
    "thompson_draws",
]

# Hillstrom (2008): conversion 0.010681 (both e-mail arms) vs 0.005726 (no e-mail).
HILLSTROM_UPLIFT = 0.010681 - 0.005726

ASLEEP_STAGES = ("at_risk", "sleeping", "lost")
CAUSES = ("returns", "message_fatigue", "price_sensitivity", "need_met", "forgotten")
INTENTS_BY_CAUSE = {
    "returns": "service_recovery",
    "message_fatigue": "win_back",
    "price_sensitivity": "win_back",
    "need_met": "new_arrivals",
    "forgotten": "win_back",
}
# Candidate offers per message intent, in order of preference when they tie.
INTENT_OFFERS: dict[str, tuple[str, ...]] = {
    "win_back": ("value_reminder", "low_threshold_coupon", "exclusive_discount", "none"),
    "service_recovery": ("low_threshold_coupon", "exclusive_discount", "value_reminder"),
    "new_arrivals": ("new_arrivals", "low_threshold_coupon"),
    "replenishment": ("replenishment_reminder", "low_threshold_coupon"),
    "cross_sell": ("none", "low_threshold_coupon"),
    "value_reminder": ("value_reminder", "exclusive_discount"),
}
INTENTS = tuple(INTENT_OFFERS)
# Templates of these intents name the customer's own items ("your favourites", "reorder");
# the others name new-to-them items from the cross-sell model.
OWN_ITEM_INTENTS = ("win_back", "replenishment", "value_reminder")
_MONETARY = ("low_threshold_coupon", "exclusive_discount")
_STAGE_CODES = STAGES  # stage codes are positions in the lifecycle order
_FIRST_ASLEEP = _STAGE_CODES.index("at_risk")  # the asleep stages are the last three codes
assert _STAGE_CODES[_FIRST_ASLEEP:] == ASLEEP_STAGES


def _finite_or(a: np.ndarray, default: float) -> np.ndarray:
    return np.where(np.isfinite(a), a, default)


class UnknownCampaign(KeyError):
    """The requested campaign is not configured."""


@dataclass(frozen=True)
class PolicyParams:
    """Decision-policy constants that are not part of the operator's YAML (see module doc)."""

    uplift_prior: float = HILLSTROM_UPLIFT
    reference_engagement: float = 0.12  # e-mail base rate: the channel Hillstrom measured
    lost_decay_days: float = 365.0  # reach decay beyond a year of silence (assumption)
    # k of the Beta prior: pseudo-messages shrinking a customer's engagement to the channel's
    # rate. Customers' rates are very spread (many never open, some always): method of moments
    # on such a mix (k + 1 = m(1 - m) / var) gives k ~ 4, so a handful of own messages dominate.
    engagement_prior_weight: float = 4.0
    population_prior_weight: float = 200.0  # pseudo-sends shrinking the population rate
    offer_response: Mapping[str, float] = field(
        default_factory=lambda: {
            "none": 1.0,
            "value_reminder": 1.0,
            "new_arrivals": 1.0,
            "replenishment_reminder": 1.0,
            "low_threshold_coupon": 2.0,
            "exclusive_discount": 3.0,
        }
    )
    # extra response of monetary offers (m - 1) is multiplied by this for the primary cause
    cause_offer_boost: Mapping[str, float] = field(
        default_factory=lambda: {"price_sensitivity": 2.0, "returns": 1.5}
    )
    return_block_days: float = 90.0  # an item returned this recently is never offered
    recent_purchase_days: float = 30.0  # an item bought this recently is not offered
    just_bought_days: float = 14.0  # a purchase since the snapshot this recent: no revival
    returns_recent_days: float = 90.0
    returns_rate: float = 0.15  # returned value / purchased value that counts as evidence
    fatigue_min_sends: int = 3
    fatigue_open_ratio: float = 0.25  # opens/sends below this x the channel prior
    price_index: float = 0.85  # pays below 85% of the items' median price
    need_met_share: float = 0.6  # share of purchase lines in one item family
    need_met_max_days: float = 3.0  # ... over at most this many purchase days
    forgotten_days: float = 90.0  # no contact this long
    contact_lookback_days: float = 90.0
    stale_snapshot_days: float = 30.0
    candidate_items: int = 20  # ALS candidates requested before filtering


DEFAULT_PARAMS = PolicyParams()


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Profile:
    """What the caller or the profile source knows about the customer (all optional)."""

    locale: str | None = None
    timezone: str | None = None
    name: str | None = None
    identifiers: Mapping[str, str] = field(default_factory=dict)
    consents: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class CustomerView:
    """A customer as perceived at decision time.

    ``bought`` maps item → (last purchase, epoch seconds UTC; number of purchase lines);
    ``returned`` maps item → last return (epoch seconds UTC). ``last_purchase_at`` is a
    purchase reported after the snapshot (live events), if any.
    """

    customer_id: str
    features: Mapping[str, float]
    stage: str
    tier: str
    value_score: float
    snapshot_at: datetime
    bought: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    returned: Mapping[str, float] = field(default_factory=dict)
    last_purchase_at: datetime | None = None
    profile: Profile = field(default_factory=Profile)
    regulars: Sequence[str] = ()  # own items, most bought first (derived from bought if empty)


@dataclass(frozen=True)
class ModelScores:
    """Champion outputs for one customer (next-purchase horizon counted from the snapshot).

    ``offer_uplift``: the offer-uplift champion's predicted uplift per offer, aligned with
    ``OFFER_TYPES`` (NaN where it has no arm), when ``offer_model`` applies; else ``None``
    and the configured rules choose the offer (``offer_model`` says why).
    """

    p_churn: float
    p_buy_30d: float
    expected_days: float
    predicted_value: float
    offer_uplift: tuple[float, ...] | None = None
    offer_model: OfferModel | None = None


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


@dataclass(frozen=True)
class ContactHistory:
    """What the store knows: contacts (past and scheduled), consents, message outcomes."""

    contacts: Sequence[ContactRecord] = ()
    consents: Mapping[str, bool] = field(default_factory=dict)
    engagement: Mapping[str, Engagement] = field(default_factory=dict)
    population: Mapping[str, Engagement] = field(default_factory=dict)
    shadows: Sequence[ContactRecord] = ()  # hold-out decisions (the store's shadow contacts)


# --------------------------------------------------------------------------- output


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


# --------------------------------------------------------------------------- helpers


def campaign_by_id(settings: Settings, campaign_id: str) -> Campaign:
    """The configured campaign ``campaign_id``; :class:`UnknownCampaign` names the known ones."""
    for campaign in settings.campaigns:
        if campaign.id == campaign_id:
            return campaign
    known = ", ".join(c.id for c in settings.campaigns)
    raise UnknownCampaign(f"unknown campaign {campaign_id!r}; configured campaigns: {known}")


def blocking_campaign(settings: Settings, campaign: Campaign, at: datetime) -> Campaign | None:
    """The highest-priority active campaign that blocks ``campaign`` at ``at``, if any."""
    blockers = [
        c
        for c in settings.campaigns
        if c.id != campaign.id
        and c.blocks_lower_priority
        and c.priority > campaign.priority
        and c.is_active(at)
    ]
    return max(blockers, key=lambda c: c.priority) if blockers else None


def holdout_draw(customer_id: str, campaign_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, campaign, customer): same on every restart."""
    key = f"{salt}\x1f{campaign_id}\x1f{customer_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def in_holdout(customer_id: str, campaign_id: str, salt: str, share: float) -> bool:
    """Whether the customer is in the campaign's control group (``share`` of all customers)."""
    return holdout_draw(customer_id, campaign_id, salt) < share


_T = TypeVar("_T")
_MEMO: dict[tuple, tuple[Any, Any, Any]] = {}


def _memo(build: Callable[..., _T], a: Any, b: Any, *extra: Any) -> _T:
    """``build(a, b, *extra)`` once per identity of the immutable objects ``a`` and ``b``
    (settings, params, a population aggregate) and the values ``extra``: per-decision work
    that only changes when they do. The entry keeps ``a`` and ``b`` alive, so their ids
    cannot be reused by other objects while it exists; bounded by clearing."""
    key = (build, id(a), id(b), extra)
    hit = _MEMO.get(key)
    if hit is None:
        if len(_MEMO) > 1024:
            _MEMO.clear()
        hit = _MEMO[key] = (a, b, build(a, b, *extra))
    return hit[2]


def caps_for(settings: Settings, channel: str) -> CapSpec:
    """The frequency caps that apply to one more contact on ``channel`` (built once per
    settings object; a decision asks for every channel)."""
    return _memo(_caps, settings, None, channel)


def _caps(settings: Settings, _: None, channel: str) -> CapSpec:
    policy = settings.channel(channel)
    return CapSpec(policy.per_day_cap, policy.per_week_cap, settings.global_weekly_cap)


def predicted_value(features: pd.DataFrame, p_churn: np.ndarray) -> np.ndarray:
    """Expected revenue over the next 365 days: P(alive) × historic annual spend.

    Annual spend is spend / max(tenure, 1 year) (as :func:`features.lifecycle.value_score`),
    so a new customer's single order is not extrapolated to a year of weekly orders.
    """
    years = np.maximum(features["tenure_days"].to_numpy(float), 365.0) / 365.0
    annual = features["monetary_all"].to_numpy(float) / years
    return (1.0 - np.asarray(p_churn, float)) * annual


def _zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def _next_hour(at: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The start of the next ``hour``:00 in ``zone`` at or after ``at`` (``at`` if inside it)."""
    local = at.astimezone(zone)
    if local.hour == hour:
        return at
    start = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if start <= local:
        start += timedelta(days=1)
    return start.astimezone(UTC)


def _after_quiet(at: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    """``at`` if outside the quiet window in ``zone``, else the window's end."""
    local = at.astimezone(zone)
    if not quiet.contains(local.time()):
        return at
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.astimezone(UTC)


def plan_send_at(
    now: datetime,
    *,
    customer_zone: ZoneInfo,
    log_zone: ZoneInfo,
    quiet: QuietHours,
    usual_hour: float | None,
    reminder_at: datetime | None = None,
) -> tuple[datetime, list[str]]:
    """When to send: a reminder date or now, moved to the usual hour, then out of quiet hours.

    ``usual_hour`` is the customer's most frequent ordering hour in the transaction log's
    time zone (``log_zone``); quiet hours are read in the customer's own zone.
    """
    reasons: list[str] = []
    at = now
    if reminder_at is not None and reminder_at > now:
        at = reminder_at
        reasons.append(f"reminder_before_next_order:{reminder_at.date().isoformat()}")
    if usual_hour is not None and math.isfinite(usual_hour):
        hour = int(usual_hour) % 24
        moved = _next_hour(at, hour, log_zone)
        reasons.append(f"usual_hour:{hour:02d}:00 {log_zone.key}")
        at = moved
    else:
        reasons.append("usual_hour:unknown")
    moved = _after_quiet(at, quiet, customer_zone)
    if moved != at:
        reasons.append(
            f"quiet_hours:{quiet.start.strftime('%H:%M')}-{quiet.end.strftime('%H:%M')}"
            f"->{moved.astimezone(customer_zone).strftime('%Y-%m-%d %H:%M')} {customer_zone.key}"
        )
        at = moved
    if at == now:
        reasons.append("send_now")
    return at, reasons


# --------------------------------------------------------------------------- vectorised core


@dataclass
class PriorityInputs:
    """The per-customer arrays the priority formula needs (aligned with ``index``)."""

    index: np.ndarray  # customer ids
    stage: np.ndarray  # stage codes into _STAGE_CODES
    p0: np.ndarray
    basket: np.ndarray
    recency: np.ndarray
    purchase_days: np.ndarray
    price_index: np.ndarray
    top_family_share: np.ndarray
    return_rate_value: np.ndarray
    days_since_return: np.ndarray
    # n x OFFER_TYPES predicted uplift of the offer-uplift model (NaN: no arm); None = rules
    offer_uplift: np.ndarray | None = None

    @classmethod
    def from_frames(
        cls,
        snapshot: pd.DataFrame,
        scores: pd.DataFrame,
        offer_uplift: np.ndarray | None = None,
    ) -> PriorityInputs:
        """From a feature snapshot with a ``stage`` column and the model scores frame (and
        the offer-uplift model's predictions, when it applies)."""
        stage = pd.Categorical(snapshot["stage"].astype(str), categories=_STAGE_CODES)

        def col(name: str, default: float = np.nan) -> np.ndarray:
            if name in snapshot.columns:
                return snapshot[name].to_numpy(float)
            return np.full(len(snapshot), default)

        return cls(
            index=snapshot.index.to_numpy().astype(str),
            stage=np.asarray(stage.codes, np.int8),
            p0=np.clip(scores["p_buy_30d"].to_numpy(float), 0.0, 1.0),
            basket=_finite_or(col("basket_value", 0.0), 0.0),
            recency=col("recency_days", 0.0),
            purchase_days=col("purchase_days", 1.0),
            price_index=col("price_index"),
            top_family_share=col("top_family_share"),
            return_rate_value=_finite_or(col("return_rate_value", 0.0), 0.0),
            days_since_return=col("days_since_return"),
            offer_uplift=offer_uplift,
        )

    def take(self, positions: np.ndarray | slice) -> PriorityInputs:
        """The rows at ``positions`` (a slice gives views of these arrays, not copies)."""
        return PriorityInputs(
            **{k: None if v is None else v[positions] for k, v in self.__dict__.items()}
        )

    def __len__(self) -> int:
        return len(self.index)


class PreparedRow(NamedTuple):
    """One customer's rows of :class:`Prepared` (plain lists: indexing numpy is slow)."""

    inputs: PriorityInputs  # one row
    cause_scores: list[list[float]]  # [without, with] message fatigue, each over CAUSES
    intent_by_cause: list[int]  # intent code when that cause is the primary one
    reach: float  # :func:`_reach` of the customer


@dataclass(frozen=True)
class Prepared:
    """The parts of a decision that depend only on the snapshot, the models and the params.

    The cause scores (with and without message fatigue), the intent each primary cause
    leads to and the reach of a message, for every customer at once when a snapshot loads,
    by the same vectorised :func:`_causes` / :func:`_intents` the batch ranking uses. One
    decision then reads its row instead of running them on a one-row array (numpy's
    per-call overhead, ~0.15 ms).
    """

    inputs: PriorityInputs
    cause_scores: np.ndarray  # (2, n, len(CAUSES))
    intent_by_cause: np.ndarray  # (n, len(CAUSES))
    reach: np.ndarray  # (n,) share of customers still reachable (:func:`_reach`)

    @classmethod
    def build(cls, inputs: PriorityInputs, params: PolicyParams = DEFAULT_PARAMS) -> Prepared:
        """Evaluate the static terms for every row of ``inputs``."""
        n = len(inputs)
        scores = np.stack(
            [_causes(inputs, params, np.full(n, tired))[0] for tired in (False, True)]
        )
        intents = np.stack([_intents(inputs, np.full(n, k)) for k in range(len(CAUSES))], axis=1)
        return cls(inputs, scores, intents.astype(np.int16), _reach(inputs.recency, params))

    def row(self, pos: int) -> PreparedRow:
        """Customer ``pos``'s row."""
        return PreparedRow(
            self.inputs.take(slice(pos, pos + 1)),
            self.cause_scores[:, pos, :].tolist(),
            self.intent_by_cause[pos].tolist(),
            float(self.reach[pos]),
        )


@dataclass
class Priorities:
    """Vectorised result: best (offer, channel) per customer and its economics."""

    index: np.ndarray
    priority: np.ndarray  # currency; -inf where no offer/channel is available
    cost: np.ndarray  # expected spend: contact + incentive
    uplift: np.ndarray
    offer: np.ndarray  # index into OFFER_TYPES, -1 none
    channel: np.ndarray  # index into CHANNELS, -1 none
    intent: np.ndarray  # index into INTENTS
    cause: np.ndarray  # index into CAUSES, -1 when not asleep
    revive: np.ndarray  # bool
    offer_by_model: np.ndarray | None = None  # bool: the offer-uplift model chose the offer


def _causes(
    inp: PriorityInputs, p: PolicyParams, fatigue: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cause scores (n × len(CAUSES)) from features (and fatigue flags), and the primary."""
    n = len(inp)
    with np.errstate(invalid="ignore"):
        recent_return = inp.days_since_return <= p.returns_recent_days
        rate = np.clip(inp.return_rate_value / (2 * p.returns_rate), 0.0, 1.0)
        returns = np.where(
            recent_return,
            0.6 + 0.4 * rate,
            np.where(inp.return_rate_value >= p.returns_rate, 0.4 + 0.4 * rate, 0.0),
        )
        price = np.where(
            inp.price_index <= p.price_index,
            0.5 + 0.4 * np.clip((p.price_index - inp.price_index) / 0.3, 0.0, 1.0),
            0.0,
        )
        need = np.where(
            (inp.top_family_share >= p.need_met_share) & (inp.purchase_days <= p.need_met_max_days),
            0.35 + 0.3 * _finite_or(inp.top_family_share, 0.0),
            0.0,
        )
    fat = np.zeros(n) if fatigue is None else np.where(fatigue, 0.8, 0.0)
    forgotten = np.full(n, 0.3)
    scores = np.column_stack([returns, fat, price, need, forgotten])
    return scores, np.argmax(scores, axis=1)  # ties: the order of CAUSES


_INTENT_OF_CAUSE = np.array([INTENTS.index(INTENTS_BY_CAUSE[c]) for c in CAUSES])


def _intents(inp: PriorityInputs, cause: np.ndarray) -> np.ndarray:
    asleep = inp.stage >= _FIRST_ASLEEP
    by_cause = _INTENT_OF_CAUSE
    awake = np.where(
        inp.stage == _STAGE_CODES.index("loyal"),
        INTENTS.index("value_reminder"),
        np.where(
            (inp.stage == _STAGE_CODES.index("new")) | (inp.purchase_days < 2),
            INTENTS.index("cross_sell"),
            INTENTS.index("replenishment"),
        ),
    )
    return np.where(asleep, by_cause[cause], awake)


def _tables(settings: Settings, p: PolicyParams) -> tuple:
    """Per (settings, params) constants of the formula, computed once (both are immutable)."""
    return _memo(_build_tables, settings, p)


def _build_tables(settings: Settings, p: PolicyParams) -> tuple:
    allowed, rates, response = _offer_tables(settings, p)
    costs = np.array(
        [settings.channels[c].cost if c in settings.channels else 0.0 for c in CHANNELS]
    )
    monetary = np.array([o in _MONETARY for o in OFFER_TYPES])
    boost = np.array([p.cause_offer_boost.get(c, 1.0) for c in CAUSES])
    # offer response when each cause is the primary one: monetary offers boosted (C x O)
    by_cause = response[None, :] + np.where(
        monetary[None, :], (response[None, :] - 1.0) * (boost[:, None] - 1.0), 0.0
    )
    return allowed, rates, by_cause, costs, _preference(settings)


def _offer_tables(settings: Settings, p: PolicyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intent × offer availability, offer cost rates, base response multipliers)."""
    in_catalogue = {o.type for o in settings.offers}
    allowed = np.zeros((len(INTENTS), len(OFFER_TYPES)), bool)
    for i, intent in enumerate(INTENTS):
        for offer in INTENT_OFFERS[intent]:
            if offer in in_catalogue:
                allowed[i, OFFER_TYPES.index(offer)] = True
    rates = np.array(
        [settings.offer(o).cost_rate if o in in_catalogue else 0.0 for o in OFFER_TYPES]
    )
    response = np.array([p.offer_response.get(o, 1.0) for o in OFFER_TYPES])
    return allowed, rates, response


def _preference(settings: Settings) -> np.ndarray:
    """Tiny tie-breaker (intent × offer): earlier offers in INTENT_OFFERS win exact ties."""
    pref = np.zeros((len(INTENTS), len(OFFER_TYPES)))
    for i, intent in enumerate(INTENTS):
        for rank, offer in enumerate(INTENT_OFFERS[intent]):
            pref[i, OFFER_TYPES.index(offer)] = -1e-9 * rank
    return pref


def _reach(recency: np.ndarray, p: PolicyParams) -> np.ndarray:
    return np.exp(-np.clip(recency - 365.0, 0.0, None) / p.lost_decay_days)


def _matrix(
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

    ``reach``: :func:`_reach` of ``inp.recency`` when the caller has it already.
    """
    allowed, rates, by_cause, costs, preference = _tables(settings, p)
    m = by_cause[cause]  # (n, O)
    margin = settings.value_tiers.gross_margin
    p0 = inp.p0[:, None, None]
    raw = (
        p.uplift_prior
        * (q[:, None, :] / p.reference_engagement)
        * m[:, :, None]
        * (1.0 - p0)
        * (_reach(inp.recency, p) if reach is None else reach)[:, None, None]
    )
    uplift = np.minimum(raw, 1.0 - p0)
    offer_ok = allowed[intent]  # (n, O)
    by_model = np.zeros(len(inp), bool)
    tau = net = None
    if inp.offer_uplift is not None:
        by_model, use, scaled, model_ok, tau, net = _model_offers(
            inp, allowed, rates, intent, q, margin, p
        )
        uplift = np.where(use[:, :, None], scaled, uplift)
        offer_ok = np.where(by_model[:, None], model_ok, offer_ok)
    basket = inp.basket[:, None, None]
    value = margin * basket
    incentive = rates[None, :, None] * basket * (p0 + uplift)
    contact = (costs if segments is None else costs * segments)[None, None, :]
    priority = uplift * value - incentive - contact
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
    """:func:`_matrix` for one customer as plain lists ``[offer][channel]`` (one decision
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
        """Customer ``row`` of a :func:`_matrix` result."""
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


def _row_economics(
    inp: PriorityInputs,
    settings: Settings,
    p: PolicyParams,
    q: Sequence[float],
    cause: int,
    intent: int,
    reach: float,
) -> RowEconomics:
    """:func:`_matrix` of one customer under the rules (no offer-uplift model), in floats.

    The same operations in the same order as the vectorised formula, so the same IEEE
    results to the last bit (a test checks the real log's customers); ~20 numpy calls
    on one-element arrays cost several times the arithmetic.
    """
    if inp.offer_uplift is not None or len(inp) != 1:
        raise ValueError("_row_economics: one customer under the rules only")
    allowed, rates, by_cause, costs, preference = _tables(settings, p)
    m = by_cause[cause].tolist()
    p0 = float(inp.p0[0])
    basket = float(inp.basket[0])
    scale = [p.uplift_prior * (qc / p.reference_engagement) for qc in q]
    cap = 1.0 - p0
    value = settings.value_tiers.gross_margin * basket
    contact = costs.tolist()
    uplift, incentive, priority = [], [], []
    for o, rate in enumerate(rates.tolist()):
        ups = [_nan_min(s * m[o] * cap * reach, cap) for s in scale]
        inc = [rate * basket * (p0 + u) for u in ups]
        uplift.append(ups)
        incentive.append(inc)
        priority.append([u * value - i - k for u, i, k in zip(ups, inc, contact, strict=True)])
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


def _economics(
    inp: PriorityInputs,
    settings: Settings,
    p: PolicyParams,
    q: np.ndarray,
    cause: int,
    intent: int,
    reach: float,
) -> RowEconomics:
    """One customer's economics: in floats under the rules, else via :func:`_matrix`."""
    if inp.offer_uplift is None:
        return _row_economics(inp, settings, p, q.tolist(), cause, intent, reach)
    mat = _matrix(
        inp, settings, p, q[None, :], np.array([cause]), np.array([intent]), np.array([reach])
    )
    return RowEconomics.of(mat)


_NONE = OFFER_TYPES.index("none")


def _offer_reason(
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


_IS_NONE = np.array([o == "none" for o in OFFER_TYPES])


def _model_offers(
    inp: PriorityInputs,
    allowed: np.ndarray,
    rates: np.ndarray,
    intent: np.ndarray,
    q: np.ndarray,
    margin: float,
    p: PolicyParams,
) -> tuple[np.ndarray, ...]:
    """The offer-uplift model's terms (module doc, "Offer choice").

    Returns ``by_model`` (n: rows it decides — it has an arm for one of the intent's offers
    or for "none"), ``use`` (n x O: uplift taken from the model), the channel-scaled uplift
    (n x O x C), the offers that may be chosen (n x O: net of incentive > 0, else "none"),
    the predicted uplift ``tau`` and its net value per order window (n x O, at e-mail's
    reference engagement, the setting the model learned in).
    """
    p0 = inp.p0[:, None]
    covered = np.isfinite(inp.offer_uplift)
    none_ok = bool(allowed[:, _NONE].any())  # "none" is in the catalogue
    cand = covered & (allowed[intent] | (_IS_NONE & none_ok)[None, :])
    by_model = cand.any(axis=1)
    tau = np.minimum(np.maximum(np.where(covered, inp.offer_uplift, 0.0), -p0), 1.0 - p0)
    basket = inp.basket[:, None]
    net = np.where(cand, tau * margin * basket - rates[None, :] * basket * (p0 + tau), -np.inf)
    pays = net > 0
    ok = pays.copy()
    if none_ok:
        ok[:, _NONE] |= ~pays.any(axis=1)  # nothing pays: no offer, a plain reminder
    scaled = tau[:, :, None] * (q[:, None, :] / p.reference_engagement)
    scaled = np.minimum(np.maximum(scaled, -p0[:, :, None]), 1.0 - p0[:, :, None])
    return by_model, covered & by_model[:, None], scaled, ok, tau, net


def _default_channels(settings: Settings, p: PolicyParams) -> tuple[np.ndarray, np.ndarray]:
    """Channel availability and engagement for customers the store knows nothing about."""
    ok = np.array(
        [
            c in settings.channels
            and settings.channels[c].enabled
            and c in settings.implied_consent
            and settings.channels[c].identifier in settings.account_identifiers
            for c in CHANNELS
        ]
    )
    q = np.array(
        [settings.channels[c].base_engagement if c in settings.channels else 0.0 for c in CHANNELS]
    )
    return ok, q


def rank_inputs(
    inp: PriorityInputs,
    settings: Settings,
    params: PolicyParams = DEFAULT_PARAMS,
    *,
    channel_ok: np.ndarray | None = None,
    channel_q: np.ndarray | None = None,
    fatigue: np.ndarray | None = None,
    chunk: int = 16_384,
) -> Priorities:
    """:func:`priorities` on prepared arrays (the service keeps them between requests).

    ``channel_ok`` / ``channel_q`` are (n × channels) or (channels,) availability and
    engagement; by default every customer gets the configured channels with implied consent
    at their base engagement (no store lookups: the batch path).
    """
    n = len(inp)
    d_ok, d_q = _default_channels(settings, params)
    ok = np.broadcast_to(d_ok if channel_ok is None else channel_ok, (n, len(CHANNELS)))
    q = np.broadcast_to(d_q if channel_q is None else channel_q, (n, len(CHANNELS)))
    _, cause = _causes(inp, params, fatigue)
    asleep = inp.stage >= _FIRST_ASLEEP
    intent = _intents(inp, cause)
    out = Priorities(
        index=inp.index,
        priority=np.full(n, -np.inf),
        cost=np.zeros(n),
        uplift=np.zeros(n),
        offer=np.full(n, -1, np.int16),
        channel=np.full(n, -1, np.int16),
        intent=intent.astype(np.int16),
        cause=np.where(asleep, cause, -1).astype(np.int16),
        revive=np.zeros(n, bool),
        offer_by_model=np.zeros(n, bool),
    )
    n_ch = len(CHANNELS)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        part = inp.take(np.arange(sl.start, sl.stop))
        mat = _matrix(part, settings, params, q[sl], cause[sl], intent[sl])
        mask = mat["offer_ok"][:, :, None] & ok[sl][:, None, :]
        score = np.where(mask, mat["priority"] + mat["pref"][:, :, None], -np.inf)
        flat = score.reshape(len(part), -1)
        best = np.argmax(flat, axis=1)
        rows = np.arange(len(part))
        o, c = np.divmod(best, n_ch)
        found = np.isfinite(flat[rows, best])
        out.priority[sl] = np.where(found, mat["priority"][rows, o, c], -np.inf)
        out.cost[sl] = np.where(found, mat["contact"][rows, o, c] + mat["incentive"][rows, o, c], 0)
        out.uplift[sl] = np.where(found, mat["uplift"][rows, o, c], 0.0)
        out.offer[sl] = np.where(found, o, -1)
        out.channel[sl] = np.where(found, c, -1)
        out.offer_by_model[sl] = mat["by_model"] & found
    out.revive = np.isfinite(out.priority) & (out.priority > settings.value_tiers.min_priority)
    return out


def priorities(
    snapshot: pd.DataFrame,
    scores: pd.DataFrame,
    settings: Settings,
    params: PolicyParams = DEFAULT_PARAMS,
    offer_uplift: np.ndarray | None = None,
    **kwargs: Any,
) -> Priorities:
    """Vectorised priority (currency), best offer and channel for every snapshot row.

    ``snapshot``: feature rows with a ``stage`` column; ``scores``: ``p_buy_30d`` (and the
    other model outputs) aligned with it; ``offer_uplift``: the offer-uplift model's
    predictions (n × ``OFFER_TYPES``, NaN = no arm) when it applies. Same formula as
    :func:`decide`, with the channel defaults of :func:`rank_inputs` instead of
    per-customer store lookups.
    """
    inp = PriorityInputs.from_frames(snapshot, scores, offer_uplift=offer_uplift)
    return rank_inputs(inp, settings, params, **kwargs)


# --------------------------------------------------------------------------- one decision


def _f(features: Mapping[str, float], name: str) -> float:
    value = features.get(name, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _f0(features: Mapping[str, float], name: str) -> float:
    value = _f(features, name)
    return value if math.isfinite(value) else 0.0


def _round(x: float, nd: int = 4) -> float:
    return float(round(x, nd)) if math.isfinite(x) else 0.0


class Posterior(NamedTuple):
    """Beta(a, b) posterior of one customer's engagement on one channel (see the module doc).

    ``prior`` is the channel's population rate m (itself shrunk to ``base_engagement``);
    ``trials`` and ``successes`` are the customer's recency-weighted messages and engaged
    messages.
    """

    a: float
    b: float
    prior: float
    trials: float
    successes: float

    @property
    def mean(self) -> float:
        """Posterior mean a / (a + b): the engagement estimate of the mean rule."""
        return self.a / (self.a + self.b) if self.a + self.b > 0 else 0.0


def recency_weight(age_days: float, half_life_days: float) -> float:
    """Weight of an outcome ``age_days`` old: 2^(-age / half-life); future ones weigh 1."""
    return 0.5 ** (max(age_days, 0.0) / half_life_days)


def engagement_posterior(
    own: Engagement,
    population: Engagement,
    base_engagement: float,
    now: datetime,
    half_life_days: float,
    params: PolicyParams = DEFAULT_PARAMS,
) -> Posterior:
    """Beta-Binomial posterior of a customer's engagement (opened or clicked) on a channel.

    Prior Beta(k·m, k·(1−m)) with k = ``engagement_prior_weight`` and m = the population's
    engaged/trials shrunk towards ``base_engagement`` with ``population_prior_weight``
    pseudo-messages. Evidence: the customer's messages, each weighted by
    :func:`recency_weight` of its age at ``now``; counts without message times (hand-made or
    aggregate :class:`Engagement`) weigh 1. Conjugate update (Gelman et al., *Bayesian Data
    Analysis*, ch. 2): a = k·m + Σw·engaged, b = k·(1−m) + Σw·(1 − engaged).
    """
    k_pop = params.population_prior_weight
    m = (population.engaged + k_pop * base_engagement) / (population.trials + k_pop)
    if own.messages:
        now_s = now.timestamp()
        weights = [
            (recency_weight((now_s - t) / 86400.0, half_life_days), hit) for t, hit in own.messages
        ]
        n = math.fsum(w for w, _ in weights)
        hits = math.fsum(w for w, hit in weights if hit)
    else:
        n, hits = float(own.trials), float(own.engaged)
    k = params.engagement_prior_weight
    return Posterior(a=k * m + hits, b=k * (1.0 - m) + n - hits, prior=m, trials=n, successes=hits)


def _engagement_rates(
    history: ContactHistory, settings: Settings, p: PolicyParams, now: datetime
) -> tuple[np.ndarray, dict[str, Posterior]]:
    """Per channel: the posterior mean engagement (array over CHANNELS) and the posterior."""
    rates = np.zeros(len(CHANNELS))
    detail: dict[str, Posterior] = {}
    half_life = settings.engagement_half_life_days
    for i, ch in enumerate(CHANNELS):
        base = settings.channels[ch].base_engagement if ch in settings.channels else 0.0
        own = history.engagement.get(ch)
        population = history.population.get(ch, _NO_ENGAGEMENT)
        if own is None:
            post = _prior_posterior(population, base, half_life, p)
        else:
            post = engagement_posterior(own, population, base, now, half_life, p)
        rates[i] = post.mean
        detail[ch] = post
    return rates, detail


_NO_ENGAGEMENT = Engagement()


def _prior_posterior(
    population: Engagement, base: float, half_life_days: float, p: PolicyParams
) -> Posterior:
    """:func:`engagement_posterior` of a customer with no messages on the channel: the prior
    alone, the same for every such customer (per population aggregate, which the runtime
    keeps for a while)."""
    return _memo(_build_prior, population, p, base, half_life_days)


def _build_prior(
    population: Engagement, p: PolicyParams, base: float, half_life_days: float
) -> Posterior:
    return engagement_posterior(_NO_ENGAGEMENT, population, base, _EPOCH, half_life_days, p)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # unused by a posterior without messages


def thompson_draws(posteriors: Mapping[str, Posterior], seed_key: str) -> np.ndarray:
    """One draw per channel (CHANNELS order) from its Beta posterior (Thompson 1933; Chapelle
    & Li 2011), with a generator seeded from ``seed_key`` so a decision is reproducible."""
    seed = int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    out = np.zeros(len(CHANNELS))
    for i, ch in enumerate(CHANNELS):
        post = posteriors.get(ch)
        if post is not None:
            out[i] = rng.beta(max(post.a, 1e-9), max(post.b, 1e-9))
    return out


def _fatigue(
    history: ContactHistory, p: PolicyParams, posteriors: Mapping[str, Posterior]
) -> tuple[bool, dict[str, Any]]:
    """Many recent messages, (almost) none engaged: recency-weighted engaged messages below
    ``fatigue_open_ratio`` x the channels' mean prior times the weighted messages."""
    sends = math.fsum(post.trials for post in posteriors.values())
    engaged = math.fsum(post.successes for post in posteriors.values())
    priors = [post.prior for post in posteriors.values()]
    prior = math.fsum(priors) / len(priors) if priors else 0.0
    tired = sends >= p.fatigue_min_sends and engaged <= p.fatigue_open_ratio * prior * sends
    return bool(tired), {
        "sends": sum(e.sends for e in history.engagement.values()),
        "opens": sum(e.opens for e in history.engagement.values()),
        "weighted_messages": _round(sends, 2),
        "weighted_engaged": _round(engaged, 2),
    }


def _consent(ch: str, history: ContactHistory, profile: Profile, settings: Settings) -> str | None:
    """None if consented, else the reason (explicit revoke wins; else profile; else implied)."""
    stored = history.consents.get(ch)
    if stored is False:
        return "consent_revoked"
    if stored is True:
        return None
    given = profile.consents.get(ch)
    if given is not None:
        return None if given else "consent_refused"
    return None if ch in settings.implied_consent else "no_consent"


def _reachable(
    ch: str, history: ContactHistory, profile: Profile, settings: Settings
) -> str | None:
    ident = settings.channels[ch].identifier
    if ident not in profile.identifiers and ident not in settings.account_identifiers:
        return f"no_{ident}"
    eng = history.engagement.get(ch)
    if (
        eng is not None
        and eng.bounces > 0
        and (eng.last_send_ts is None or eng.bounces >= eng.sends)
    ):
        return "bounced"
    return None


def regulars(bought: Mapping[str, tuple[float, int]], limit: int | None = None) -> list[str]:
    """A customer's own items, most bought first (then most recent, then id)."""
    order = sorted(bought.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
    return [item for item, _ in order[:limit]]


def _items(
    intent: str,
    view: CustomerView,
    candidates: Sequence[str],
    now_s: float,
    k: int,
    p: PolicyParams,
) -> tuple[list[str], list[str]]:
    """Up to ``k`` items for the message, and the reasons; returned items never pass.

    Intents in :data:`OWN_ITEM_INTENTS` name the customer's own most-bought items (falling
    back to the cross-sell candidates when none qualifies); the others name candidates.
    """
    returned_cut = now_s - p.return_block_days * 86400.0
    recent_cut = now_s - p.recent_purchase_days * 86400.0
    returned, bought = view.returned, view.bought  # looked up per item: O(k), not O(history)
    dropped = {"returned": 0, "recent": 0}

    def pick(pool: Sequence[str]) -> list[str]:
        chosen: list[str] = []
        for item in pool:
            if returned.get(item, -math.inf) >= returned_cut:
                dropped["returned"] += 1
            elif bought.get(item, _NEVER)[0] >= recent_cut:
                dropped["recent"] += 1
            elif item not in chosen:
                chosen.append(item)
                if len(chosen) == k:
                    break
        return chosen

    chosen: list[str] = []
    source = "als"
    if intent in OWN_ITEM_INTENTS:
        chosen = pick(view.regulars or regulars(view.bought))
        source = "own_regulars"
    if not chosen:
        chosen = pick(candidates)
        source = "als" if source == "als" else "als_fallback"
    reasons = [f"items:{source}:{len(chosen)}"]
    if dropped["returned"]:
        reasons.append(f"excluded_returned_{p.return_block_days:g}d:{dropped['returned']}")
    if dropped["recent"]:
        reasons.append(f"excluded_bought_{p.recent_purchase_days:g}d:{dropped['recent']}")
    return chosen, reasons


_NEVER = (-math.inf, 0)


def _naive_local(dt: datetime, zone: ZoneInfo) -> datetime:
    return dt.astimezone(zone).replace(tzinfo=None)


def _one_row_inputs(view: CustomerView, stage: str, scores: ModelScores) -> PriorityInputs:
    """The priority inputs of one customer from their feature row (no :class:`Prepared`)."""
    f = view.features
    applies = scores.offer_model is not None and scores.offer_model.applies
    return PriorityInputs(
        index=np.array([view.customer_id]),
        stage=np.array([_STAGE_CODES.index(stage)], np.int8),
        p0=np.array([min(max(scores.p_buy_30d, 0.0), 1.0)]),
        basket=np.array([_f0(f, "basket_value")]),
        recency=np.array([_f(f, "recency_days")]),
        purchase_days=np.array([_f(f, "purchase_days")]),
        price_index=np.array([_f(f, "price_index")]),
        top_family_share=np.array([_f(f, "top_family_share")]),
        return_rate_value=np.array([_f0(f, "return_rate_value")]),
        days_since_return=np.array([_f(f, "days_since_return")]),
        offer_uplift=np.array([scores.offer_uplift], float)
        if scores.offer_uplift is not None and applies
        else None,
    )


def _cause_outs(
    view: CustomerView,
    now: datetime,
    cause_row: list[float],
    fatigue_ev: dict[str, Any],
    past: list[ContactRecord],
    last_contact: datetime | None,
    p: PolicyParams,
) -> list[dict[str, Any]]:
    """The causes with a positive score, highest first, each with its evidence (the fields
    of :class:`CauseOut`)."""
    f = view.features
    cut = now.timestamp() - p.return_block_days * 86400.0
    returned_90 = sorted(i for i, ts in view.returned.items() if ts >= cut)
    evidence = {
        "returns": {
            "return_orders": _f(f, "return_orders"),
            "return_rate_value": _round(_f(f, "return_rate_value")),
            "days_since_return": _round(_f(f, "days_since_return"), 1),
            "items_returned_90d": returned_90[:10],
        },
        "message_fatigue": fatigue_ev,
        "price_sensitivity": {"price_index": _round(_f(f, "price_index"))},
        "need_met": {
            "top_family_share": _round(_f(f, "top_family_share")),
            "purchase_days": _f(f, "purchase_days"),
        },
        "forgotten": {
            "contacts_last_days": len(past),
            "days": p.forgotten_days,
            "last_contact": last_contact.isoformat() if last_contact else None,
        },
    }
    causes = [
        {"cause": c, "score": _round(cause_row[i], 3), "evidence": evidence[c]}
        for i, c in enumerate(CAUSES)
        if cause_row[i] > 0
    ]
    causes.sort(key=lambda c: -c["score"])
    return causes


def decide(*args: Any, **kwargs: Any) -> Decision:
    """:func:`decide_data` (same arguments) validated as a :class:`Decision`."""
    return Decision.model_validate(decide_data(*args, **kwargs))


def encode_decision(data: Mapping[str, Any]) -> bytes:
    """:func:`decide_data`'s output as the JSON of its :class:`Decision` (pydantic-core's
    serialiser with the models' settings: NaN and infinities as ``null``)."""
    return pydantic_core.to_json(data, inf_nan_mode="null")


def decide_data(
    view: CustomerView,
    scores: ModelScores,
    candidates: Sequence[str],
    history: ContactHistory,
    settings: Settings,
    now: datetime,
    *,
    campaign_id: str = "lifecycle",
    channels: Sequence[str] | None = None,
    item_names: Mapping[str, str] | None = None,
    model_versions: Mapping[str, str] | None = None,
    params: PolicyParams = DEFAULT_PARAMS,
    decision_id: str | None = None,
    unavailable: Mapping[str, str] | None = None,
    explore: bool | None = None,
    prepared: PreparedRow | None = None,
) -> Decision:
    """Decide for one customer (see the module docstring for the policy), as plain data.

    The result is a :class:`Decision` as a dict (fields in its order, values in its types),
    not validated: the served path encodes it at once with :func:`encode_decision`, and
    validating the engine's own output on every request would cost as much as encoding it.
    :func:`decide` returns the validated model; a test checks on every customer of the real
    log that both give the same JSON, byte for byte.

    ``candidates``: ALS items, best first (already excluding seen items where the model knows
    them; the item-history filter here is what guarantees nothing returned in the last
    ``return_block_days`` is offered). ``channels`` restricts the channels the caller allows.
    ``unavailable`` marks channels as unusable with a reason (e.g. a cap the store refused at
    reservation time). ``explore`` picks the channel rule for this call: True Thompson
    sampling, False the posterior mean, None the ``channel_selection`` setting.
    ``prepared``: the customer's row of :class:`Prepared` for the snapshot ``view`` comes
    from (the same decision, cheaper); ignored when a later purchase changed the stage.
    Raises :class:`UnknownCampaign`.
    """
    if now.tzinfo is None:
        raise ValueError("decide needs a timezone-aware now")
    now = now.astimezone(UTC)
    p = params
    campaign = campaign_by_id(settings, campaign_id)
    names = item_names or {}
    reasons: dict[str, list[str]] = {
        k: [] for k in ("who", "why", "what", "channel", "when", "holdout")
    }
    f = view.features
    profile = view.profile
    log_zone = settings.zone
    zone = _zone(profile.timezone, settings.default_timezone)
    locale = profile.locale if profile.locale in ("zh-CN", "en") else settings.default_locale

    # ---- perception: stage overlay for a purchase reported after the snapshot
    stage = view.stage
    just_bought = False
    if view.last_purchase_at is not None and view.last_purchase_at > view.snapshot_at:
        days = (now - view.last_purchase_at).total_seconds() / 86400.0
        if stage in ASLEEP_STAGES:
            reasons["who"].append(f"purchase_since_snapshot:{stage}->active")
            stage = "active"
        just_bought = 0 <= days <= p.just_bought_days
    stale = (now - view.snapshot_at).total_seconds() / 86400.0
    if stale > p.stale_snapshot_days:
        reasons["who"].append(f"snapshot_age_days:{stale:.0f}")

    # ---- why asleep
    rates, posteriors = _engagement_rates(history, settings, p, now)
    tired, fatigue_ev = _fatigue(history, p, posteriors)
    if prepared is not None and stage == view.stage:
        inp = prepared.inputs
        cause_row = list(prepared.cause_scores[int(tired)])
    else:
        prepared = None
        inp = _one_row_inputs(view, stage, scores)
        cause_row = _causes(inp, p, np.array([tired]))[0][0].tolist()
    lookback = now - timedelta(days=p.forgotten_days)
    past = [c for c in history.contacts if lookback <= c.ts <= now]
    last_contact = max((c.ts for c in past), default=None)
    forgotten = last_contact is None
    if not forgotten:
        cause_row[CAUSES.index("forgotten")] = 0.0
    primary_i = cause_row.index(max(cause_row))  # ties: the order of CAUSES, like np.argmax
    asleep = stage in ASLEEP_STAGES
    causes: list[dict[str, Any]] = []
    if asleep:
        causes = _cause_outs(view, now, cause_row, fatigue_ev, past, last_contact, p)
    cause = CAUSES[primary_i]
    why = {"primary": cause, "causes": causes} if asleep else None
    if asleep:
        reasons["why"].append(f"{stage}: primary cause {cause}")
        reasons["why"] += [f"{c['cause']}:{c['score']}" for c in causes]
    else:
        reasons["why"].append(f"{stage}: not asleep")
    intent_i = (
        prepared.intent_by_cause[primary_i]
        if prepared is not None
        else int(_intents(inp, np.array([primary_i]))[0])
    )
    intent = INTENTS[intent_i]

    # ---- when (the same for every channel)
    expected_next: datetime | None = None
    if view.last_purchase_at is not None and view.last_purchase_at > view.snapshot_at:
        gap = _f(f, "gap_shrunk")
        if math.isfinite(gap):
            expected_next = view.last_purchase_at + timedelta(days=gap)
    elif math.isfinite(scores.expected_days):
        expected_next = view.snapshot_at + timedelta(days=float(scores.expected_days))
    reminder_at = None
    if stage in ("active", "loyal") and expected_next is not None:
        reminder_at = expected_next - timedelta(days=settings.reminder_days_before)
    usual = _f(f, "usual_hour")
    send_at, when_reasons = plan_send_at(
        now,
        customer_zone=zone,
        log_zone=log_zone,
        quiet=settings.quiet_hours,
        usual_hour=usual if math.isfinite(usual) else None,
        reminder_at=reminder_at,
    )
    reasons["when"] += when_reasons

    # ---- which channels are usable
    allowed_by_caller = set(CHANNELS if channels is None else channels)
    ok = np.zeros(len(CHANNELS), bool)
    why_not: dict[str, str] = {}
    # a hold-out customer is capped like their treated twin (the store's shadow contacts)
    control = in_holdout(
        view.customer_id, campaign.id, settings.holdout_salt, settings.holdout_share
    )
    counts = count_contacts(
        cap_contacts(history.contacts, history.shadows, campaign.id, control), send_at
    )
    for i, ch in enumerate(CHANNELS):
        policy = settings.channels.get(ch)
        reason: str | None
        if policy is None or not policy.enabled:
            reason = "disabled"
        elif ch not in allowed_by_caller:
            reason = "not_requested"
        elif unavailable and ch in unavailable:
            reason = unavailable[ch]
        else:
            reason = (
                _consent(ch, history, profile, settings)
                or _reachable(ch, history, profile, settings)
                or counts.cap_reason(caps_for(settings, ch), ch)
            )
        if reason is None:
            ok[i] = True
        else:
            why_not[ch] = reason

    # ---- economics of every (offer, channel); walk them best first until a message fits
    # economics at the posterior mean; the ranking at a Thompson draw when exploring
    reach = prepared.reach if prepared is not None else float(_reach(inp.recency, p)[0])
    mat = _economics(inp, settings, p, rates, primary_i, intent_i, reach)
    prio, pref, offer_ok = mat.priority, mat.pref, mat.offer_ok
    usable = ok.tolist()
    ranked = sorted(
        (
            (prio[o][c] + pref[o], o, c)
            for o in range(len(OFFER_TYPES))
            for c in range(len(CHANNELS))
            if offer_ok[o] and usable[c]
        ),
        key=lambda t: -t[0],
    )
    thompson = settings.channel_selection == "thompson" if explore is None else explore
    draws: np.ndarray | None = None
    if thompson:
        # Thompson picks the channel only: each channel keeps its best offer at the mean and
        # is ranked by that offer's priority at the channel's draw.
        seed_key = decision_id or f"{view.customer_id}\x1f{campaign.id}\x1f{now.isoformat()}"
        draws = thompson_draws(posteriors, seed_key)
        sampled = _economics(inp, settings, p, draws, primary_i, intent_i, reach).priority
        best_offer: dict[int, int] = {}
        for _, o, c in ranked:
            best_offer.setdefault(c, o)
        score = {c: sampled[o][c] for c, o in best_offer.items()}
        ranked.sort(key=lambda t: (score[t[2]], t[0]), reverse=True)
    rule = "thompson" if thompson else "mean"
    origin = "setting channel_selection" if explore is None else f"request explore={explore}"
    rendered: RenderedMessage | None = None
    chosen: tuple[int, int] | None = None
    items: list[str] = []
    item_reasons: list[str] = []
    too_long: set[int] = set()
    for _, o, c in ranked:
        if c in too_long:
            continue
        offer = settings.offer(OFFER_TYPES[o])
        if not items and not item_reasons:
            items, item_reasons = _items(
                intent,
                view,
                candidates,
                now.timestamp(),
                settings.value_tiers.max_items,
                p,
            )
        ch = CHANNELS[c]
        try:
            rendered = render_message(
                intent,  # type: ignore[arg-type]
                ch,  # type: ignore[arg-type]
                locale,  # type: ignore[arg-type]
                brand=settings.brand,
                items=[names.get(i) or i for i in items],
                offer_text=offer.text(locale, settings.currency_symbol),  # type: ignore[arg-type]
                channel_policy=settings.channels[ch],
                name=profile.name,
                link=str(settings.landing_url) if settings.landing_url else None,
            )
        except MessageTooLong:
            too_long.add(c)
            why_not[ch] = "message_too_long"
            continue
        chosen = (o, c)
        break

    # best hypothetical offer when no channel is usable (for the priority report)
    if chosen is None:
        any_ok = [(prio[o][c], o, c) for o in range(len(OFFER_TYPES)) for c in range(len(CHANNELS))]
        any_ok = [t for t in any_ok if offer_ok[t[1]]]
        o, c = max(any_ok)[1:] if any_ok else (OFFER_TYPES.index("none"), 0)
    else:
        o, c = chosen
    segments = rendered.segments if rendered is not None else 1
    contact_cost = mat.contact[c] * segments
    uplift = mat.uplift[o][c]
    incentive = mat.incentive[o][c]
    value = mat.value
    priority = uplift * value - incentive - contact_cost
    # who is judged at the best option at the posterior mean; an explored channel's shortfall
    # from it is the price of exploring (reported)
    who_priority = priority
    if draws is not None and chosen is not None:
        who_priority = max(priority, max(t[0] for t in ranked if t[2] not in too_long))
        if who_priority > priority + 1e-9:
            reasons["channel"].append(f"exploration_cost:{who_priority - priority:.4f}")
    p0 = float(inp.p0[0])
    econ = {
        "p_buy_without_contact": _round(p0, 5),
        "p_buy_with_contact": _round(p0 + uplift, 5),
        "uplift": _round(uplift, 6),
        "value_if_buy": _round(value, 2),
        "expected_incremental_value": _round(uplift * value, 4),
        "contact_cost": _round(contact_cost, 4),
        "incentive_cost": _round(incentive, 4),
        "priority": _round(priority, 4),
    }

    # the output is assembled as plain data in the output models' field order (see the
    # docstring: the served path encodes it without building the models)
    options: list[dict[str, Any]] = []
    best_offer_for = {
        c2: max((prio[o2][c2] for o2 in range(len(OFFER_TYPES)) if offer_ok[o2]), default=-math.inf)
        for c2 in range(len(CHANNELS))
    }
    for i, ch in enumerate(CHANNELS):
        if ch not in settings.channels:
            continue
        pr = best_offer_for[i]
        options.append(
            {
                "channel": ch,
                "eligible": ch not in why_not,
                "reason": why_not.get(
                    ch, "chosen" if chosen and chosen[1] == i else "lower_priority"
                ),
                "engagement": _round(float(rates[i]), 4),
                "cost": settings.channels[ch].cost,
                "priority": _round(float(pr), 4) if math.isfinite(pr) else None,
                "posterior_a": _round(posteriors[ch].a),
                "posterior_b": _round(posteriors[ch].b),
                "sample": _round(float(draws[i])) if draws is not None else None,
            }
        )

    # ---- who: revive?
    # campaign windows are judged at the moment the message would land
    blocker = blocking_campaign(settings, campaign, send_at)
    revive = True
    if not campaign.is_active(send_at):
        revive = False
        reasons["who"].append(f"campaign_not_active:{campaign.id}")
    if blocker is not None:
        revive = False
        reasons["who"].append(f"blackout:{blocker.id}(priority {blocker.priority})")
    if just_bought:
        revive = False
        reasons["who"].append("purchased_since_snapshot")
    if chosen is None:
        revive = False
        reasons["channel"].append("no_channel")
    if who_priority <= settings.value_tiers.min_priority:
        revive = False
        reasons["who"].append(
            f"priority {who_priority:.4f} <= min_priority {settings.value_tiers.min_priority:g}"
        )
    elif revive:
        reasons["who"].append(
            f"priority {who_priority:.4f} {settings.currency} > min_priority "
            f"{settings.value_tiers.min_priority:g}"
        )
    for ch, r in why_not.items():
        reasons["channel"].append(f"{ch}:{r}")
    if chosen is not None:
        post = posteriors[CHANNELS[c]]
        how = f"thompson sample {draws[c]:.3f} from" if draws is not None else "posterior mean of"
        reasons["channel"].insert(
            0,
            f"{CHANNELS[c]}: best {how} Beta(a={post.a:.2f}, b={post.b:.2f}), "
            f"mean {post.mean:.3f}, net of cost {contact_cost:.4f}",
        )
    reasons["channel"].append(f"rule:{rule} ({origin})")
    reasons["channel"] += [
        f"posterior:{ch} mean={post.mean:.3f} a={post.a:.2f} b={post.b:.2f}"
        for ch, post in posteriors.items()
        if ch in settings.channels
    ]

    offer_out: dict[str, Any] | None = None
    reasons["what"].append(_offer_reason(scores.offer_model, mat, o, intent, settings))
    if chosen is not None:
        offer = settings.offer(OFFER_TYPES[o])
        offer_out = {
            "type": offer.type,
            "discount_pct": offer.discount_pct,
            "min_spend": offer.min_spend,
            "text": offer.text(locale, settings.currency_symbol),  # type: ignore[arg-type]
            "items": [{"item_id": i, "name": names.get(i)} for i in items],
        }
        reasons["what"].append(f"offer:{offer.type} (best net value for intent {intent})")
        reasons["what"] += item_reasons

    # ---- hold-out
    holdout = False
    if revive:
        holdout = control
        reasons["holdout"].append(
            f"{'control' if holdout else 'treatment'} (share {settings.holdout_share:g})"
        )
    contact = revive and not holdout and chosen is not None

    message = None
    if rendered is not None:
        message = {
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
    horizon = math.isfinite(scores.expected_days)
    return {
        "decision_id": decision_id or str(uuid.uuid4()),
        "customer_id": view.customer_id,
        "campaign_id": campaign.id,
        "decided_at": now,
        "snapshot_at": view.snapshot_at,
        "stage": stage,
        "tier": view.tier,
        "value_score": _round(view.value_score, 2),
        "scores": {
            "p_churn": _round(scores.p_churn),
            "p_buy_30d": _round(scores.p_buy_30d),
            "expected_days": _round(scores.expected_days, 1) if horizon else 0.0,
            "expected_next_order": expected_next.astimezone(log_zone).date()
            if expected_next
            else None,
            "predicted_value": _round(scores.predicted_value, 2),
        },
        "revive": revive,
        "priority": _round(priority, 4),
        "currency": settings.currency,
        "economics": econ,
        "why_asleep": why,
        "intent": intent,
        "offer": offer_out,
        "channel": CHANNELS[c] if chosen is not None else None,
        "channel_options": options,
        "send_at": send_at if chosen is not None else None,
        "send_at_local": _naive_local(send_at, zone).isoformat(timespec="minutes")
        if chosen is not None
        else None,
        "timezone": zone.key,
        "holdout": holdout,
        "contact": contact,
        "blocked_by": blocker.id if blocker is not None else None,
        "message": message,
        "reasons": {k: v for k, v in reasons.items() if v},
        "model_versions": dict(model_versions or {}),
        "dispatch": None,
    }
