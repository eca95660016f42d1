"""Request and response types of the decision API (pydantic; shared by runtime and service).

Every request model forbids unknown keys, so a misspelt field is a 400 naming it rather
than a silently ignored option. Time stamps without a zone are read in the configured
``default_timezone``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.store import EVENT_TYPES
from features.lifecycle import STAGES, TIERS
from service.config import ChannelName, Identifier, Locale
from service.engine import Decision

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "BatchRow",
    "ConsentIn",
    "CustomerRequest",
    "CustomerResponse",
    "DecideRequest",
    "EventIn",
    "EventsRequest",
    "EventsResponse",
    "ProfileIn",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItem",
    "ReloadRequest",
    "ReloadResponse",
    "RetrainJobOut",
    "RetrainRequest",
    "RetrainStatusRequest",
    "ReportRequest",
]

# One source each: the lifecycle's stages and tiers, the store's event types.
Stage = Literal[STAGES]  # type: ignore[valid-type]
Tier = Literal[TIERS]  # type: ignore[valid-type]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
ItemId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ProfileIn(_In):
    """What the caller knows about the customer; overrides defaults for this request."""

    locale: Locale | None = None
    timezone: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=64)
    identifiers: dict[Identifier, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict
    )
    consents: dict[ChannelName, bool] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class DecideRequest(_In):
    """Decide for one customer of the snapshot.

    ``decision_id`` makes the call idempotent: a repeated request with an id that is already
    recorded returns that decision (and, with ``dispatch``, retries a failed send; a sent
    message is never sent again). ``dry_run`` computes without recording anything.
    ``explore`` overrides the ``channel_selection`` setting for this call: true picks the
    channel by Thompson sampling, false by the posterior mean.
    """

    customer_id: Id
    campaign_id: Id = "lifecycle"
    now: datetime | None = None
    channels: list[ChannelName] | None = Field(default=None, max_length=8)
    profile: ProfileIn | None = None
    dispatch: bool = False
    dry_run: bool = False
    decision_id: Id | None = None
    explore: bool | None = None


class BatchRequest(_In):
    """Who to revive: customer ids, or every customer of the given stages/tiers."""

    customer_ids: list[Id] | None = Field(default=None, max_length=200_000)
    stages: list[Stage] | None = None
    tiers: list[Tier] | None = None
    campaign_id: Id = "lifecycle"
    now: datetime | None = None
    channels: list[ChannelName] | None = Field(default=None, max_length=8)
    budget: float | None = Field(default=None, ge=0, description="currency; cut the ranking")
    max_customers: int | None = Field(default=None, ge=0, description="cut the ranking")
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=0, le=1000)
    decisions: bool = Field(default=True, description="full decisions for the page rows")
    record: bool = Field(default=False, description="record the page's decisions in the store")


class BatchRow(_In):
    rank: int
    customer_id: str
    stage: str
    tier: str
    priority: float
    expected_cost: float
    cumulative_cost: float
    offer: str | None
    channel: str | None
    holdout: bool
    decision: Decision | None = None


class BatchResponse(_In):
    campaign_id: str
    currency: str
    candidates: int = Field(description="customers considered")
    eligible: int = Field(description="worth contacting (priority > min_priority)")
    selected: int = Field(description="kept after the budget / count cut")
    selected_cost: float
    selected_priority: float
    offset: int
    limit: int
    next_offset: int | None
    unknown_customer_ids: list[str]
    rows: list[BatchRow]
    seconds: float


class RecommendRequest(_In):
    customer_id: Id
    k: int = Field(default=10, ge=1, le=100)
    now: datetime | None = None


class RecommendedItem(_In):
    item_id: str
    name: str | None
    rank: int


class RecommendResponse(_In):
    customer_id: str
    items: list[RecommendedItem]
    excluded_returned: int
    excluded_recent: int
    model_version: str | None


class CustomerRequest(_In):
    customer_id: Id
    now: datetime | None = None


class CustomerResponse(_In):
    customer_id: str
    snapshot_at: datetime
    stage: str
    tier: str
    value_score: float
    features: dict[str, float | None]
    scores: dict[str, Any]
    consents: dict[str, bool]
    engagement: dict[str, dict[str, Any]]
    recent_contacts: list[dict[str, Any]]
    latest_decision: dict[str, Any] | None
    top_items: list[dict[str, Any]]
    returned_items_90d: list[str]
    live_purchase_at: datetime | None
    model_versions: dict[str, str]


class EventIn(_In):
    """A message event or a purchase.

    A ``purchase`` needs ``order_id`` (the shop's order id: it is the event's dedup key, so a
    re-posted order is stored once) and ``ts`` (when the order was placed; never stamped
    with the server clock), and no ``dedup_key``; its ``value`` must be in
    ``[0, events.max_purchase_value]``. Other events may leave ``ts`` out (the request
    time) and carry ``dedup_key``; without one, the key is derived from the event's
    content, so a re-delivered batch is stored once. No ``ts`` may be later than the
    server clock plus ``events.future_tolerance_seconds``.
    """

    customer_id: Id
    event: EventType
    ts: datetime | None = None
    channel: ChannelName | None = None
    campaign_id: Id | None = None
    decision_id: Id | None = None
    value: float | None = None
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    order_id: Id | None = Field(
        default=None, description="purchase only (required there): the shop's order id"
    )
    item_ids: list[ItemId] = Field(default_factory=list, max_length=500)


class ConsentIn(_In):
    """A consent change. Re-delivered consents are stored once: with ``ts``, the same
    (customer, channel, granted, ts, source) is a duplicate; without ``ts``, a consent equal
    to the customer's current stored state for the channel is."""

    customer_id: Id
    channel: ChannelName
    granted: bool
    ts: datetime | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "api"


class EventsRequest(_In):
    events: list[EventIn] = Field(default_factory=list, max_length=10_000)
    consents: list[ConsentIn] = Field(default_factory=list, max_length=10_000)


class EventsResponse(_In):
    """``inserted``/``duplicates``: events stored / ignored as already stored (or repeated
    in the batch); ``consents``/``consent_duplicates``: the same for consents."""

    inserted: int
    duplicates: int
    consents: int
    consent_duplicates: int = 0


class ReloadRequest(_In):
    data: bool = Field(default=False, description="also rebuild the snapshot from the log")


class ReloadResponse(_In):
    model_versions: dict[str, str]
    previous_versions: dict[str, str]
    changed: bool
    snapshot_at: datetime
    customers: int
    seconds: float
    offer_choice: str = Field(
        default="", description="offer_uplift_model vN, or offer_rules: why the rules choose"
    )


class ReportRequest(_In):
    """A campaign report (``service.report``) for decisions made in ``[start, end)``.

    ``campaign_id`` must be configured or have stored decisions (else 422 naming it); ``end``
    must be after ``start`` (else 422). Purchases count from the store's ``purchase`` events.
    """

    campaign_id: Id
    start: datetime | None = None
    end: datetime | None = None


class RetrainRequest(_In):
    """Start ``python -m training.retrain`` as a background job (see ``service.jobs``)."""

    force: bool = Field(default=False, description="promote even if a champion gate says no")
    attribution_only: bool = Field(
        default=False, description="only attribute outcomes and summarise; train nothing"
    )
    since: datetime | None = Field(default=None, description="first decision time considered")
    window_days: float | None = Field(
        default=None, gt=0, le=365, description="attribution window (default: the setting)"
    )
    min_treated: int = Field(default=200, ge=1, description="treated rows an offer arm needs")
    min_control: int = Field(default=200, ge=1, description="hold-out rows an offer arm needs")
    max_cutoffs: int = Field(default=12, ge=1, le=60, description="training cutoffs")


class RetrainStatusRequest(_In):
    job_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class RetrainJobOut(_In):
    job_id: str
    status: Literal["running", "succeeded", "failed"]
    returncode: int | None
    pid: int
    started_at: datetime
    finished_at: datetime | None
    command: str
    log_path: str
    log_tail: list[str]
    result: dict[str, Any] | None = Field(
        default=None, description="the run's JSON summary (attribution, gates, versions)"
    )
