"""What the engine reads: one customer as perceived at decision time (:class:`CustomerView`,
:class:`ModelScores`, :class:`ContactHistory`, :class:`Profile`) and the per-customer arrays
of the vectorised priority formula (:class:`PriorityInputs`). See docs/design.md,
"Decision engine"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.store.caps import Engagement
from core.store.records import ContactRecord
from service.engine.policy import STAGE_CODES

if TYPE_CHECKING:
    from service.engine.offers import OfferModel


def finite_or(a: np.ndarray, default: float) -> np.ndarray:
    return np.where(np.isfinite(a), a, default)


def feature(features: Mapping[str, float], name: str) -> float:
    value = features.get(name, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def feature0(features: Mapping[str, float], name: str) -> float:
    value = feature(features, name)
    return value if math.isfinite(value) else 0.0


@dataclass(frozen=True)
class Profile:
    """What the caller or the profile source knows about the customer (all optional)."""

    locale: str | None = None
    timezone: str | None = None
    name: str | None = None
    identifiers: Mapping[str, str] = field(default_factory=dict)
    consents: Mapping[str, bool] = field(default_factory=dict)
    country: str | None = None


@dataclass(frozen=True)
class CustomerView:
    """A customer as perceived at decision time.

    ``bought`` maps item → (last purchase, epoch seconds UTC; number of purchase lines);
    ``returned`` maps item → last return (epoch seconds UTC). ``last_purchase_at`` is a
    purchase reported after the snapshot (live events), if any. ``points_balance`` is the
    customer's loyalty points at decision time, ``points_expiring`` the part of it that
    expires within ``loyalty.expiry_reminder_days`` (:mod:`core.store.points`).
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
    points_balance: int = 0
    points_expiring: int = 0


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
class ContactHistory:
    """What the store knows: contacts (past and scheduled), consents, message outcomes."""

    contacts: Sequence[ContactRecord] = ()
    consents: Mapping[str, bool] = field(default_factory=dict)
    engagement: Mapping[str, Engagement] = field(default_factory=dict)
    population: Mapping[str, Engagement] = field(default_factory=dict)
    shadows: Sequence[ContactRecord] = ()  # hold-out decisions (the store's shadow contacts)


@dataclass
class PriorityInputs:
    """The per-customer arrays the priority formula needs (aligned with ``index``)."""

    index: np.ndarray  # customer ids
    stage: np.ndarray  # stage codes into STAGE_CODES
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
        stage = pd.Categorical(snapshot["stage"].astype(str), categories=STAGE_CODES)

        def col(name: str, default: float = np.nan) -> np.ndarray:
            if name in snapshot.columns:
                return snapshot[name].to_numpy(float)
            return np.full(len(snapshot), default)

        return cls(
            index=snapshot.index.to_numpy().astype(str),
            stage=np.asarray(stage.codes, np.int8),
            p0=np.clip(scores["p_buy_30d"].to_numpy(float), 0.0, 1.0),
            basket=finite_or(col("basket_value", 0.0), 0.0),
            recency=col("recency_days", 0.0),
            purchase_days=col("purchase_days", 1.0),
            price_index=col("price_index"),
            top_family_share=col("top_family_share"),
            return_rate_value=finite_or(col("return_rate_value", 0.0), 0.0),
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


@dataclass(frozen=True)
class JourneyAsk:
    """A journey step's question to the engine (:mod:`service.journeys`): the trigger has
    already chosen *who* and *when*, so the engine's revive verdict (just bought, the
    ``min_priority`` floor, its own hold-out draw — the journey has its own) and its
    next-order timing do not apply; the engine still picks channel, offer and message under
    consent, caps, quiet hours and campaign blackouts. ``intent`` fixes the message (a
    ``send`` step), ``offers`` limits the offer types (a coupon is then chosen only when its
    net value beats the others'), ``items`` are the trigger's own items (a cart)."""

    journey_id: str
    intent: str | None = None
    offers: tuple[str, ...] | None = None
    items: tuple[str, ...] | None = None


def one_row_inputs(view: CustomerView, stage: str, scores: ModelScores) -> PriorityInputs:
    """The priority inputs of one customer from their feature row (no :class:`Prepared`)."""
    f = view.features
    applies = scores.offer_model is not None and scores.offer_model.applies
    return PriorityInputs(
        index=np.array([view.customer_id]),
        stage=np.array([STAGE_CODES.index(stage)], np.int8),
        p0=np.array([min(max(scores.p_buy_30d, 0.0), 1.0)]),
        basket=np.array([feature0(f, "basket_value")]),
        recency=np.array([feature(f, "recency_days")]),
        purchase_days=np.array([feature(f, "purchase_days")]),
        price_index=np.array([feature(f, "price_index")]),
        top_family_share=np.array([feature(f, "top_family_share")]),
        return_rate_value=np.array([feature0(f, "return_rate_value")]),
        days_since_return=np.array([feature(f, "days_since_return")]),
        offer_uplift=np.array([scores.offer_uplift], float)
        if scores.offer_uplift is not None and applies
        else None,
    )
