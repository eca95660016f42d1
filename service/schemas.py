"""Request and response types of the decision API (pydantic; shared by runtime and service).

Request models are strict: unknown keys are refused (a misspelt field is named, not
silently ignored), nothing is coerced (``"yes"`` is not a boolean, ``"9"`` not a number, an
integer not a date), every number has bounds and every time stamp lies in
:data:`MOMENT_RANGE`. Time stamps without a zone are read in the configured
``default_timezone``. Response models are plain (built by the service, not the caller).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.store import BEHAVIOUR_EVENTS, EVENT_TYPES, ApiKey
from features.lifecycle import STAGES, TIERS
from service.api_config import Scope
from service.config import ChannelName, Identifier, Locale
from service.engine import Decision

__all__ = [
    "JourneyCustomerRequest",
    "JourneyCustomerResponse",
    "JourneyDryRunRequest",
    "JourneyDryRunResponse",
    "JourneyEnrolmentOut",
    "JourneyOut",
    "JourneyPauseRequest",
    "JourneyPauseResponse",
    "JourneyStepCounts",
    "JourneyStepRunOut",
    "JourneysRequest",
    "JourneysResponse",
    "PlannedMessage",
    "PointsOut",
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
    "MOMENT_RANGE",
    "Day",
    "Moment",
    "Whole",
    "KeyCreateRequest",
    "KeyCreated",
    "KeyList",
    "KeyListRequest",
    "KeyOut",
    "KeyRevokeRequest",
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
EventType = Literal[(*EVENT_TYPES, *BEHAVIOUR_EVENTS)]  # type: ignore[valid-type]
# Names and ids are stripped; the pattern (a character that is not stripped: Unicode
# White_Space, which pydantic strips) tells the OpenAPI description what stripping implies,
# so "  " is invalid there as it is here. Spelled out, since regex engines disagree on \s.
NOT_BLANK = r"[^\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"


def _name(max_length: int) -> Any:
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=max_length, pattern=NOT_BLANK
        ),
    ]


Id = _name(128)
ItemId = _name(64)


# Time stamps a request may carry: wide enough for any real log, narrow enough that date
# arithmetic (windows, time zones, half-lives) can never overflow.
MOMENT_RANGE = (datetime(1970, 1, 1), datetime(2100, 1, 1))


def _in_range(value: datetime) -> datetime:
    lo, hi = MOMENT_RANGE
    # a day's margin on each side leaves room for any time zone offset
    if not lo + timedelta(days=1) <= value.replace(tzinfo=None) < hi - timedelta(days=1):
        raise ValueError(f"must lie between {lo:%Y-%m-%d} and {hi:%Y-%m-%d}")
    return value


def _iso_text(value: Any) -> Any:
    """Only ISO 8601 text (or a datetime from Python) is a time: no unix numbers, as numbers
    or as digit strings (lax parsing would read both as seconds since 1970)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 date-time string, e.g. 2011-09-06T10:00:00+01:00")
    return value


_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
# Strict(False): ISO text is parsed as usual (a bare date is its midnight), see _iso_text.
Moment = Annotated[datetime, Strict(False), BeforeValidator(_iso_text), AfterValidator(_in_range)]


def _iso_day(value: Any) -> Any:
    """Only ``YYYY-MM-DD`` text (or a date from Python) is a day: no unix numbers."""
    if isinstance(value, date):
        return value.date() if isinstance(value, datetime) else value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return value.strip()
    raise ValueError("must be an ISO 8601 date string, e.g. 1985-03-02")


def _integral(value: Any) -> Any:
    """A JSON number without a fraction (``401.0`` is the integer 401 in JSON Schema) is an
    int; text, booleans and fractions stay refused by the strict int after it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Day = Annotated[date, Strict(False), BeforeValidator(_iso_day)]
Whole = Annotated[int, BeforeValidator(_integral)]


class _In(BaseModel):
    """A request: strict, closed, finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Out(BaseModel):
    """A response (built by the service)."""

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
    now: Moment | None = None
    channels: list[ChannelName] | None = Field(default=None, max_length=8)
    profile: ProfileIn | None = None
    dispatch: bool = False
    dry_run: bool = False
    decision_id: Id | None = None
    explore: bool | None = None


class BatchRequest(_In):
    """Who to revive: customer ids, or every customer of the given stages/tiers."""

    customer_ids: list[Id] | None = Field(default=None, max_length=200_000)
    stages: list[Stage] | None = Field(default=None, max_length=len(STAGES))
    tiers: list[Tier] | None = Field(default=None, max_length=len(TIERS))
    campaign_id: Id = "lifecycle"
    now: Moment | None = None
    channels: list[ChannelName] | None = Field(default=None, max_length=8)
    budget: float | None = Field(
        default=None, ge=0, le=1e12, description="currency; cut the ranking"
    )
    max_customers: int | None = Field(
        default=None, ge=0, le=100_000_000, description="cut the ranking"
    )
    offset: int = Field(default=0, ge=0, le=100_000_000)
    limit: int = Field(default=100, ge=0, le=1000)
    decisions: bool = Field(default=True, description="full decisions for the page rows")
    record: bool = Field(default=False, description="record the page's decisions in the store")


class BatchRow(_Out):
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


class BatchResponse(_Out):
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
    now: Moment | None = None


class RecommendedItem(_Out):
    item_id: str
    name: str | None
    rank: int


class RecommendResponse(_Out):
    customer_id: str
    items: list[RecommendedItem]
    excluded_returned: int
    excluded_recent: int
    model_version: str | None


class CustomerRequest(_In):
    customer_id: Id
    now: Moment | None = None


class PointsOut(_Out):
    """Loyalty points at a moment: ``balance``; ``expiring`` of them expire within
    ``loyalty.expiry_reminder_days``, all by ``expiring_by``."""

    balance: int
    expiring: int
    expiring_by: datetime | None


class CustomerResponse(_Out):
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
    points: PointsOut = Field(description="loyalty points at `now` (core/store/points.py)")
    profile: dict[str, Any] = Field(
        default_factory=dict,
        description="stored profile: member profiles, identifiers, facts, the locale and "
        "time zone messages use, merges",
    )


class EventIn(_In):
    """A message event, a purchase, or a behaviour event.

    Behaviour events (``cart_abandoned``, ``return``, ``browse``: journey triggers) need
    ``item_ids`` (the cart's, returned or viewed items) and take an optional ``value`` and
    ``channel`` (where it happened), no campaign or decision; a returned item is never
    offered to the customer again. A ``purchase`` needs ``order_id`` (the shop's order id: it is the event's dedup key, so a
    re-posted order is stored once) and ``ts`` (when the order was placed; never stamped
    with the server clock), and no ``dedup_key``; its ``value`` must be in
    ``[0, events.max_purchase_value]``. Other events may leave ``ts`` out (the request
    time) and carry ``dedup_key``; without one, the key is derived from the event's
    content, so a re-delivered batch is stored once. No ``ts`` may be later than the
    server clock plus ``events.future_tolerance_seconds``.
    """

    customer_id: Id
    event: EventType
    ts: Moment | None = None
    channel: ChannelName | None = None
    campaign_id: Id | None = None
    decision_id: Id | None = None
    value: float | None = None
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    order_id: Id | None = Field(
        default=None, description="purchase only (required there): the shop's order id"
    )
    item_ids: list[ItemId] = Field(
        default_factory=list,
        max_length=500,
        description="a purchase's items; required on cart_abandoned, return and browse",
    )


class ConsentIn(_In):
    """A consent change. Re-delivered consents are stored once: with ``ts``, the same
    (customer, channel, granted, ts, source) is a duplicate; without ``ts``, a consent equal
    to the customer's current stored state for the channel is."""

    customer_id: Id
    channel: ChannelName
    granted: bool
    ts: Moment | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "api"


class EventsRequest(_In):
    events: list[EventIn] = Field(default_factory=list, max_length=10_000)
    consents: list[ConsentIn] = Field(default_factory=list, max_length=10_000)


class EventsResponse(_Out):
    """``inserted``/``duplicates``: events stored / ignored as already stored (or repeated
    in the batch); ``consents``/``consent_duplicates``: the same for consents;
    ``points_earned``: loyalty points the batch's new purchases earned."""

    inserted: int
    duplicates: int
    consents: int
    consent_duplicates: int = 0
    points_earned: int = 0


class ReloadRequest(_In):
    data: bool = Field(default=False, description="also rebuild the snapshot from the log")


class ReloadResponse(_Out):
    model_versions: dict[str, str]
    previous_versions: dict[str, str]
    changed: bool
    snapshot_at: datetime
    customers: int
    seconds: float
    offer_choice: str = Field(
        default="", description="offer_uplift_model vN, or offer_rules: why the rules choose"
    )
    snapshot: str = Field(
        default="",
        description="where the served snapshot comes from: an MLflow run id or data:<path>",
    )
    generation: int = Field(
        description="the served-versions generation published: every replica sharing the "
        "store serves these versions within replica_sync_seconds"
    )


class ReportRequest(_In):
    """A campaign report (``service.report``) for decisions made in ``[start, end)``.

    ``campaign_id`` must be configured or have stored decisions (else 422 naming it); ``end``
    must be after ``start`` (else 422). Purchases count from the store's ``purchase`` events.
    """

    campaign_id: Id
    start: Moment | None = None
    end: Moment | None = None


class RetrainRequest(_In):
    """Start ``python -m training.retrain`` as a background job (see ``service.jobs``)."""

    force: bool = Field(default=False, description="promote even if a champion gate says no")
    attribution_only: bool = Field(
        default=False, description="only attribute outcomes and summarise; train nothing"
    )
    since: Moment | None = Field(default=None, description="first decision time considered")
    window_days: float | None = Field(
        default=None, gt=0, le=365, description="attribution window (default: the setting)"
    )
    min_treated: int = Field(
        default=200, ge=1, le=10_000_000, description="treated rows an offer arm needs"
    )
    min_control: int = Field(
        default=200, ge=1, le=10_000_000, description="hold-out rows an offer arm needs"
    )
    max_cutoffs: int = Field(default=12, ge=1, le=60, description="training cutoffs")


class RetrainStatusRequest(_In):
    job_id: _name(64)


class RetrainJobOut(_Out):
    """A retraining job as the shared store holds it (any replica answers the same)."""

    job_id: str
    status: Literal["running", "succeeded", "failed", "lost"] = Field(
        description="lost: running, but its supervisor stopped sending heartbeats"
    )
    returncode: int | None
    pid: int | None = Field(description="the job's process on its host, once started")
    host: str = Field(description="host:pid of the replica that started the job")
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    command: str
    log_path: str
    log_tail: list[str]
    result: dict[str, Any] | None = Field(
        default=None, description="the run's JSON summary (attribution, gates, versions)"
    )


class KeyCreateRequest(_In):
    name: _name(64)
    scopes: list[Scope] = Field(min_length=1, max_length=8)


class KeyListRequest(_In):
    revoked: bool = Field(default=True, description="include revoked keys")


class KeyRevokeRequest(_In):
    key_id: _name(32)


class KeyOut(_Out):
    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            key_id=key.key_id,
            name=key.name,
            scopes=list(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown once, store it in a secret manager")


class KeyList(_Out):
    keys: list[KeyOut]


# ----------------------------------------------------------------------------- journeys

JourneyId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class JourneysRequest(_In):
    """Every configured journey with its live counts."""


class JourneyStepCounts(_Out):
    step_id: str
    type: str
    outcomes: dict[str, int]  # waited, branched, sent, held_out, no_contact, skipped
    exited_here: int  # enrolments that left before this step (an exit rule)


class JourneyOut(_Out):
    journey_id: str
    name: str
    enabled: bool
    paused: bool
    priority: int
    trigger: dict[str, Any]
    enrolled: int
    active: int
    completed: int
    exited: int
    holdout: int
    converted: int
    conversion_treated: float | None  # converted / enrolled, treated enrolments
    conversion_holdout: float | None
    steps: list[JourneyStepCounts]


class JourneysResponse(_Out):
    journeys: list[JourneyOut]


class JourneyCustomerRequest(_In):
    customer_id: Id


class JourneyStepRunOut(_Out):
    step_id: str
    ran_at: datetime
    outcome: str
    decision_id: str | None
    channel: str | None
    send_at: datetime | None
    detail: str | None


class JourneyEnrolmentOut(_Out):
    journey_id: str
    trigger_key: str
    entered_at: datetime
    holdout: bool
    status: str
    next_step: str | None
    due_at: datetime | None
    note: str | None
    converted_at: datetime | None
    steps: list[JourneyStepRunOut]


class JourneyCustomerResponse(_Out):
    customer_id: str
    enrolments: list[JourneyEnrolmentOut]


class JourneyPauseRequest(_In):
    """Pause (no new entries, no steps; waiting customers stay) or resume a journey."""

    journey_id: JourneyId
    paused: bool


class JourneyPauseResponse(_Out):
    journey_id: str
    paused: bool


class JourneyDryRunRequest(_In):
    """What ``journey_id`` would send for triggers in ``[start, end)``, for a segment."""

    journey_id: JourneyId
    start: Moment
    end: Moment
    stages: list[Stage] | None = Field(default=None, max_length=len(STAGES))
    tiers: list[Tier] | None = Field(default=None, max_length=len(TIERS))
    limit: int = Field(default=200, ge=1, le=1000, description="entrants walked through")
    max_messages: int = Field(default=100, ge=0, le=5000, description="messages listed")

    @model_validator(mode="after")
    def _order(self) -> JourneyDryRunRequest:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > timedelta(days=366):
            raise ValueError("a dry run covers at most 366 days")
        return self


class PlannedMessage(_Out):
    customer_id: str
    step_id: str
    at: datetime
    channel: str
    intent: str
    offer: str
    cost: float


class JourneyDryRunResponse(_Out):
    journey_id: str
    start: datetime
    end: datetime
    entered: int  # entrants in the range and segment
    sampled: int  # of them walked through (``limit``)
    holdout: int  # sampled entrants in the journey's hold-out (never messaged)
    messages: list[PlannedMessage]
    by_channel: dict[str, dict[str, float]]
    no_contact: dict[str, int]  # why a message step would not contact, and how often
    total_cost: float  # of the sampled entrants' messages
    estimated_messages: int  # scaled to every entrant
    estimated_total_cost: float
    currency: str
