"""Contact-history store: decisions, message events, consents and dispatch attempts.

The decision service must remember whom it contacted, when and on which channel, to
enforce frequency caps, consent and fatigue, and to learn which channel works for whom.
:class:`ContactStore` is the small interface the rest of the service depends on;
:class:`SqlContactStore` implements it with SQLAlchemy Core on any SQLAlchemy URL
(SQLite by default, PostgreSQL later).

Every table is an append-only log: rows are inserted, never updated or deleted, so the
history can always be audited and replayed. "Current" state (consent, whether a decision
was sent) is derived by reading the log.

Time: every timestamp is stored as UTC (``DateTime(timezone=True)``); naive datetimes
passed in are taken to be UTC and every datetime handed back is timezone-aware UTC.

What counts as a *contact* (frequency caps, :meth:`ContactStore.recent_contacts`):

1. a decision with ``revive=True``, ``holdout=False`` and a channel that has no ``sent``
   event yet, at its planned time ``send_at`` (or the decision time ``ts`` when
   ``send_at`` is empty): a decision is a commitment to contact, so it counts from the
   moment it is recorded, even if the send later fails;
2. a ``sent`` event, at the event's ``ts`` (sends made outside this service count too),
   except a repeated ``sent`` event for a ``decision_id`` that already has an earlier one:
   one decision is one contact, and once its send is reported it counts at the actual
   send time instead of the planned one.

Frequency caps use windows centred on the new contact's time (``|t - now| < window``):
past contacts are history and future ones are sends already scheduled, which land in the
same rolling window. If every contact is admitted only when fewer than ``cap`` others lie
within ``window`` of it, no rolling window of that length ever holds more than ``cap``.

*Shadow contacts*: a hold-out decision (``revive=True``, ``holdout=True``, a channel) is the
contact the control customer would have had. It is never a contact, but a later hold-out
decision of the **same campaign** is capped on real contacts plus these shadows — exactly
what the customer's treated twin would have been capped on — so repeated rounds keep the
two arms drawn from the same eligible population (otherwise treated customers get capped
and hold-out customers never do, and the arms drift apart).
"""

from __future__ import annotations

import abc
import collections
import functools
import hashlib
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from features.contracts import EVENT_TYPES as CONTRACT_EVENT_TYPES

__all__ = [
    "DAY",
    "DISPATCH_STATUSES",
    "EVENT_TYPES",
    "KNOWN_CHANNELS",
    "WEEK",
    "AlreadyDispatched",
    "CapSpec",
    "ContactCounts",
    "ContactRecord",
    "ContactStore",
    "CustomerHistory",
    "DecisionRecord",
    "DispatchAttempt",
    "DispatchInProgress",
    "DuplicateDecision",
    "Engagement",
    "EventRecord",
    "InvalidRecord",
    "NotDispatchable",
    "SqlContactStore",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "UnknownDecision",
    "as_utc",
    "metadata",
    "cap_contacts",
    "count_contacts",
    "open_store",
]

# the message-event contract's types, plus complaints and purchases arriving live
EVENT_TYPES = (*CONTRACT_EVENT_TYPES, "complained", "purchase")
REVOKING_EVENTS = ("unsubscribed", "complained")
DISPATCH_STATUSES = ("sending", "sent", "failed")
# Channels a channel-less unsubscribe/complaint revokes (plus any channel seen for the customer).
KNOWN_CHANNELS = ("sms", "email", "wechat", "app_push")
DAY = timedelta(hours=24)
WEEK = timedelta(days=7)

log = logging.getLogger(__name__)

_ID_MAX = 128
_CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
_ERROR_MAX = 2000


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of every error raised by a contact store."""


class InvalidRecord(StoreError, ValueError):
    """A record or argument is malformed; nothing was written."""


class DuplicateDecision(StoreError):
    """A decision with this ``decision_id`` is already stored; the store is unchanged."""

    def __init__(self, decision_id: str):
        self.decision_id = decision_id
        super().__init__(f"decision {decision_id!r} is already recorded; decisions are immutable")


class UnknownDecision(StoreError, LookupError):
    """The referenced ``decision_id`` is not in the store."""

    def __init__(self, decision_id: str):
        self.decision_id = decision_id
        super().__init__(f"decision {decision_id!r} is not recorded")


class StoreIntegrityError(StoreError):
    """The database rejected a write (constraint violation); the transaction was rolled back."""


class StoreUnavailable(StoreError):
    """The database could not be reached or stayed locked past the busy timeout."""


class AlreadyDispatched(StoreError):
    """The decision already has a successful dispatch; it must not be sent again."""

    def __init__(self, decision_id: str):
        self.decision_id = decision_id
        super().__init__(f"decision {decision_id!r} was already sent")


class DispatchInProgress(StoreError):
    """Another worker holds an open (unfinished, unexpired) attempt for this decision."""

    def __init__(self, decision_id: str, attempt: int):
        self.decision_id = decision_id
        self.attempt = attempt
        super().__init__(f"decision {decision_id!r}: attempt {attempt} is still in progress")


class NotDispatchable(StoreError):
    """The decision must not be sent (holdout, no contact, mismatch, consent revoked).

    The refusal is itself recorded as a ``failed`` attempt with ``reason`` as its error.
    """

    def __init__(self, decision_id: str, reason: str):
        self.decision_id = decision_id
        self.reason = reason
        super().__init__(f"decision {decision_id!r} not dispatchable: {reason}")


# --------------------------------------------------------------------------- validation


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken to be UTC."""
    if value.__class__ is datetime and value.tzinfo is UTC:
        return value  # the common case, first
    if not isinstance(value, datetime):
        raise InvalidRecord(f"expected a datetime, got {type(value).__name__}: {value!r}")
    if type(value) is not datetime and hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        value = value.to_pydatetime()
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _check_str(name: str, value: Any, max_len: int = _ID_MAX, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise InvalidRecord(f"{name} is longer than {max_len} characters: {value[:40]!r}...")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on every backend alike
        raise InvalidRecord(f"{name} must not contain NUL characters: {value[:40]!r}")


def _check_channel(value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not _CHANNEL_RE.match(value):
        raise InvalidRecord(
            f"channel must be a lowercase identifier like 'sms' or 'app_push', got {value!r}"
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidRecord(f"{name} must be a bool, got {value!r}")


def _finite(name: str, value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise InvalidRecord(f"{name} must be a finite number, got {value!r}")
    return out


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump_json(name: str, value: Any) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{name} is not JSON serialisable: {exc}") from None


@functools.lru_cache(maxsize=256)
def _versions_json(items: tuple[tuple[str, str], ...]) -> str:
    """A record's ``model_versions`` (sorted items) as stored JSON; cached, because every
    decision of a deployment carries one of a few such maps."""
    return _dump_json("model_versions", dict(items))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One decision for one customer; ``ts`` is the request's ``now``.

    ``payload`` is the whole decision as returned to the caller (stored as JSON, so
    datetimes inside it come back as ISO strings), as a mapping or as the JSON object text
    already encoded (the service passes pydantic's own encoding: one pass instead of two,
    taken on trust); read back it is always a dict. ``model_versions`` maps model name to
    version. Timestamps are normalised to aware UTC on construction.
    """

    decision_id: str
    customer_id: str
    campaign_id: str
    ts: datetime
    channel: str | None
    send_at: datetime | None
    intent: str
    offer_type: str
    holdout: bool
    revive: bool
    priority: float
    payload: Mapping[str, Any] | str = field(default_factory=dict)
    model_versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("decision_id", "customer_id", "campaign_id"):
            _check_str(name, getattr(self, name))
        _check_str("intent", self.intent, 64)
        _check_str("offer_type", self.offer_type, 64)
        _check_channel(self.channel, optional=True)
        _check_bool("holdout", self.holdout)
        _check_bool("revive", self.revive)
        _set(self, "ts", as_utc(self.ts))
        _set(self, "send_at", _opt_utc(self.send_at))
        if self.send_at is not None and self.send_at < self.ts:
            raise InvalidRecord(
                f"decision {self.decision_id!r}: send_at {self.send_at.isoformat()} "
                f"is before the decision time {self.ts.isoformat()}"
            )
        _set(self, "priority", _finite("priority", self.priority))
        if isinstance(self.payload, str):
            if not self.payload.startswith("{"):
                raise InvalidRecord("payload text must be a JSON object")
        elif not isinstance(self.payload, Mapping):
            raise InvalidRecord(f"payload must be a mapping, got {type(self.payload).__name__}")
        if not isinstance(self.model_versions, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.model_versions.items()
        ):
            raise InvalidRecord(f"model_versions must map str to str, got {self.model_versions!r}")

    @property
    def is_contact(self) -> bool:
        """True if this decision commits to contacting the customer (see module docstring)."""
        return self.revive and not self.holdout and self.channel is not None

    @property
    def contact_time(self) -> datetime:
        """When the contact happens: ``send_at``, or the decision time if sent at once."""
        return self.send_at or self.ts


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One message event (or a purchase) reported for a customer.

    ``dedup_key`` makes re-delivered webhooks harmless: a second event with the same key
    is ignored. ``decision_id`` links the event to the decision that caused the message.
    """

    customer_id: str
    ts: datetime
    event: str
    channel: str | None = None
    campaign_id: str | None = None
    decision_id: str | None = None
    value: float | None = None
    dedup_key: str | None = None

    def __post_init__(self) -> None:
        _check_str("customer_id", self.customer_id)
        if self.event not in EVENT_TYPES:
            raise InvalidRecord(f"event must be one of {EVENT_TYPES}, got {self.event!r}")
        _check_channel(self.channel, optional=True)
        _check_str("campaign_id", self.campaign_id, optional=True)
        _check_str("decision_id", self.decision_id, optional=True)
        _check_str("dedup_key", self.dedup_key, 255, optional=True)
        _set(self, "ts", as_utc(self.ts))
        _set(self, "value", _finite("value", self.value, optional=True))


@dataclass(frozen=True)
class ContactRecord:
    """One contact (see the module docstring): where it comes from and when it happens."""

    customer_id: str
    channel: str | None
    ts: datetime
    source: str  # "decision" (planned, not yet reported sent) or "event" (a sent event)
    decision_id: str | None = None
    campaign_id: str | None = None
    event_id: int | None = None
    shadow: bool = False  # a hold-out decision: counts only for its campaign's hold-out caps


@dataclass(frozen=True)
class CapSpec:
    """Frequency caps: contacts per channel per 24 h and per 7 days, all channels per 7 days."""

    per_day: int
    per_week: int
    global_week: int

    def __post_init__(self) -> None:
        for name in ("per_day", "per_week", "global_week"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidRecord(f"CapSpec.{name} must be a non-negative int, got {v!r}")


@dataclass(frozen=True)
class ContactCounts:
    """Contacts within 24 h / 7 days of ``now`` (either side: scheduled sends count)."""

    now: datetime
    channel_day: dict[str, int]
    channel_week: dict[str, int]
    global_day: int
    global_week: int

    def day(self, channel: str) -> int:
        """Contacts on ``channel`` within 24 h of ``now``."""
        return self.channel_day.get(channel, 0)

    def week(self, channel: str) -> int:
        """Contacts on ``channel`` within 7 days of ``now``."""
        return self.channel_week.get(channel, 0)

    def cap_reason(self, caps: CapSpec, channel: str) -> str | None:
        """The cap one more contact on ``channel`` would exceed, or None if it fits."""
        if self.day(channel) + 1 > caps.per_day:
            return "cap_channel_day"
        if self.week(channel) + 1 > caps.per_week:
            return "cap_channel_week"
        if self.global_week + 1 > caps.global_week:
            return "cap_global_week"
        return None


@dataclass(frozen=True)
class Engagement:
    """Message outcomes on one channel.

    Counts are of messages: events linked to a decision count once per decision (three
    opens of one e-mail are one opened message); events without a decision count each.
    ``conversions`` counts ``converted`` events, not purchases.

    Channel learning (:func:`service.decision.engagement_posterior`) reads ``engaged`` —
    messages opened *or* clicked (a click without a recorded open counts) — and, for one
    customer, ``messages``: ``(time, engaged)`` per message, oldest first, time in epoch
    seconds UTC of the message's first event (its send), so that outcomes can be weighted
    by recency at decision time. A message is a decision's sent/opened/clicked events on
    the channel; an event without a decision belongs to the channel's latest earlier
    message without a decision (a ``sent`` one starts a new one; an open or click before
    any is a message of its own). The population aggregate has no ``messages`` and
    approximates the unlinked part of ``engaged`` as max(unlinked opens, unlinked clicks).
    """

    sends: int = 0
    opens: int = 0
    clicks: int = 0
    conversions: int = 0
    last_open_ts: datetime | None = None
    last_send_ts: datetime | None = None
    unsubscribes: int = 0
    bounces: int = 0
    complaints: int = 0
    engaged: int = 0
    messages: tuple[tuple[float, bool], ...] = ()

    @property
    def trials(self) -> int:
        """Messages known to have reached the channel: sends, or more if more were engaged."""
        return max(self.sends, self.engaged, len(self.messages))


@dataclass(frozen=True)
class CustomerHistory:
    """What one decision reads about a customer: contacts, consents and engagement, and the
    shadow contacts of their hold-out decisions (see the module docstring)."""

    contacts: list[ContactRecord]
    consents: dict[str, bool]
    engagement: dict[str, Engagement]
    shadows: list[ContactRecord] = field(default_factory=list)


def cap_contacts(
    contacts: Sequence[ContactRecord],
    shadows: Sequence[ContactRecord],
    campaign_id: str,
    holdout: bool,
) -> list[ContactRecord]:
    """What a decision is capped on: real contacts, plus for a hold-out decision the shadow
    contacts of the same campaign."""
    if not holdout:
        return list(contacts)
    return [*contacts, *(c for c in shadows if c.campaign_id == campaign_id)]


@dataclass(frozen=True, kw_only=True)
class DispatchAttempt:
    """One row of the dispatch log: an attempt starting (``sending``) or its outcome."""

    decision_id: str
    attempt: int
    status: str
    ts: datetime
    provider_status_code: int | None = None
    error: str | None = None
    provider_message_id: str | None = None
    tries: int | None = None  # HTTP requests the provider made within this attempt

    def __post_init__(self) -> None:
        _check_str("decision_id", self.decision_id)
        if self.status not in DISPATCH_STATUSES:
            raise InvalidRecord(f"status must be one of {DISPATCH_STATUSES}, got {self.status!r}")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise InvalidRecord(f"attempt must be a positive int, got {self.attempt!r}")
        _check_str("provider_message_id", self.provider_message_id, 255, optional=True)
        _set(self, "ts", as_utc(self.ts))
        if self.error is not None:  # provider text: keep it storable (no NUL on PostgreSQL)
            _set(self, "error", str(self.error).replace("\x00", "\\x00")[:_ERROR_MAX])


# --------------------------------------------------------------------------- interface


class ContactStore(abc.ABC):
    """The contact history the decision service reads and appends to."""

    @abc.abstractmethod
    def record_decision(self, decision: DecisionRecord) -> None:
        """Append ``decision``; raise :class:`DuplicateDecision` if its id is taken."""

    @abc.abstractmethod
    def reserve_contact(self, decision: DecisionRecord, caps: CapSpec) -> tuple[bool, str | None]:
        """Atomically check ``caps`` and record ``decision`` only if it fits.

        Returns ``(True, None)`` when recorded, ``(False, reason)`` with reason
        ``cap_channel_day``/``cap_channel_week``/``cap_global_week`` when refused.
        """

    @abc.abstractmethod
    def decide_and_reserve(
        self,
        customer_id: str,
        since: datetime,
        decide: Callable[[CustomerHistory], tuple[DecisionRecord, CapSpec | None]],
    ) -> tuple[DecisionRecord, str | None]:
        """Read the history, ``decide`` on it and record the result, atomically.

        The customer's history since ``since`` is read, ``decide`` turns it into a record
        (and the caps that bound it, or None), and the record is stored only if it fits the
        caps as counted on that same history — no other writer can take the slot in
        between. Returns ``(record, None)`` when stored, ``(record, reason)`` when refused
        (nothing stored). ``since`` must reach a week before the contact time.
        """

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """The stored decision, or None."""
        return self.get_decisions([decision_id]).get(decision_id)

    @abc.abstractmethod
    def get_decisions(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        """The stored decisions among ``decision_ids``, by id (unknown ids are left out)."""

    @abc.abstractmethod
    def first_sends(self, decision_ids: Iterable[str]) -> dict[tuple[str, str], datetime]:
        """The earliest stored ``sent`` event of each (customer, decision) among events that
        reference ``decision_ids``, keyed by ``(customer_id, decision_id)``."""

    @abc.abstractmethod
    def latest_decision(
        self, customer_id: str, before: datetime | None = None
    ) -> DecisionRecord | None:
        """The customer's most recent decision (decision time strictly before ``before``)."""

    @abc.abstractmethod
    def record_event(self, event: EventRecord) -> bool:
        """Append ``event``; False if its ``dedup_key`` was already stored (ignored)."""

    @abc.abstractmethod
    def record_events(self, events: Sequence[EventRecord]) -> tuple[int, int]:
        """Append a batch in one transaction; return ``(inserted, duplicates)``."""

    @abc.abstractmethod
    def recent_contacts(
        self,
        customer_id: str,
        since: datetime,
        channel: str | None = None,
        until: datetime | None = None,
    ) -> list[ContactRecord]:
        """Contacts with ``since <= time`` (and ``time < until``), oldest first."""

    @abc.abstractmethod
    def contact_counts(self, customer_id: str, now: datetime) -> ContactCounts:
        """Contact counts within 24 h and 7 days of ``now``, for frequency caps."""

    @abc.abstractmethod
    def engagement(self, customer_id: str, since: datetime | None = None) -> dict[str, Engagement]:
        """Per-channel message outcomes of one customer (events at or after ``since``)."""

    @abc.abstractmethod
    def population_engagement(self, since: datetime | None = None) -> dict[str, Engagement]:
        """Per-channel message outcomes over all customers (priors for channel learning)."""

    @abc.abstractmethod
    def set_consent(
        self, customer_id: str, channel: str, granted: bool, ts: datetime, source: str
    ) -> None:
        """Append a consent change for ``(customer_id, channel)``."""

    @abc.abstractmethod
    def consents(self, customer_id: str, as_of: datetime | None = None) -> dict[str, bool]:
        """Current consent per channel that has any consent history.

        Latest wins between consent rows and revoking events (``unsubscribed``,
        ``complained``; a channel-less one revokes every channel); on equal timestamps a
        revocation wins. Channels without any history are absent (caller's default).
        """

    def customer_history(self, customer_id: str, since: datetime) -> CustomerHistory:
        """:meth:`recent_contacts` since ``since`` (scheduled ones included), current
        :meth:`consents` and all-time :meth:`engagement`, read together (in one transaction
        where the backend allows: the decision service calls this on every decision)."""
        return CustomerHistory(
            self.recent_contacts(customer_id, since),
            self.consents(customer_id),
            self.engagement(customer_id),
        )

    @abc.abstractmethod
    def decisions_between(
        self, start: datetime, end: datetime, campaign_id: str | None = None
    ) -> pd.DataFrame:
        """Decisions with ``start <= ts < end`` as a frame (timestamps tz-aware UTC)."""

    @abc.abstractmethod
    def events_between(
        self,
        start: datetime,
        end: datetime,
        customer_id: str | None = None,
        event: str | None = None,
        campaign_id: str | None = None,
    ) -> pd.DataFrame:
        """Events with ``start <= ts < end`` as a frame (timestamps tz-aware UTC)."""

    @abc.abstractmethod
    def begin_dispatch(
        self, decision_id: str, customer_id: str, channel: str, ts: datetime, lease_s: float = 300.0
    ) -> int:
        """Open a dispatch attempt (log ``sending``) and return its number.

        Raises :class:`UnknownDecision`, :class:`AlreadyDispatched`,
        :class:`DispatchInProgress` (an attempt opened less than ``lease_s`` ago has no
        outcome yet) or :class:`NotDispatchable` (recorded as a failed attempt).
        """

    @abc.abstractmethod
    def finish_dispatch(self, outcome: DispatchAttempt) -> bool:
        """Log the outcome of an open attempt.

        For ``sent`` it also marks the decision sent and appends a ``sent`` event, in the
        same transaction. Returns True only if this outcome is the decision's (first)
        success: False for ``failed`` and for a ``sent`` that another attempt beat.
        """

    @abc.abstractmethod
    def dispatch_success(self, decision_id: str) -> DispatchAttempt | None:
        """The successful attempt of ``decision_id``, if any."""

    @abc.abstractmethod
    def dispatch_attempts(self, decision_id: str) -> list[DispatchAttempt]:
        """The dispatch log of ``decision_id`` in order."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Row count per table (to prove a rejected request left the store unchanged)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> ContactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- schema


class UtcDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always binds and returns aware UTC datetimes.

    Backends without a timezone-aware type (SQLite) store the UTC wall-clock time, so
    string comparison there orders correctly. On SQLite the bind is one function:
    ``isoformat(" ", "microseconds")`` of the naive UTC time is exactly SQLAlchemy's own
    ``DATETIME`` storage text (``YYYY-MM-DD HH:MM:SS.ffffff``, a test pins it), in C instead
    of its ``%``-formatting of a dict, and without the decorator's chain of calls (a recorded
    decision binds five datetimes). Reads are SQLAlchemy's own.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: Any) -> str | None:
            if value is None:
                return None
            return as_utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else as_utc(value)


_Id = sa.String(_ID_MAX)
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid alias


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", _Id, primary_key=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("campaign_id", _Id, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("send_at", UtcDateTime),
    sa.Column("intent", sa.String(64), nullable=False),
    sa.Column("offer_type", sa.String(64), nullable=False),
    sa.Column("holdout", sa.Boolean, nullable=False),
    sa.Column("revive", sa.Boolean, nullable=False),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "campaign_id", "ts"),
    sa.Index(None, "ts"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("campaign_id", _Id),
    sa.Column("decision_id", _Id),  # no FK: events come from outside and may reference anything
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("dedup_key", sa.String(255), unique=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(_in("event", EVENT_TYPES), name="event_type"),
    sa.Index(None, "customer_id", "ts"),
    sa.Index(None, "decision_id", "event"),
    sa.Index(None, "ts"),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("consent_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", _Id, nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Index(None, "customer_id", "channel", "ts"),
)

dispatches = sa.Table(
    "dispatches",
    metadata,
    sa.Column("dispatch_id", _BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "decision_id", _Id, sa.ForeignKey("decisions.decision_id"), nullable=False, index=True
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("provider_status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("provider_message_id", sa.String(255)),
    sa.Column("tries", sa.Integer),
    sa.CheckConstraint(_in("status", DISPATCH_STATUSES), name="status"),
    sa.UniqueConstraint("decision_id", "attempt", "status"),
)

# At most one success per decision: the primary key turns a second success into an
# IntegrityError inside the transaction that logs it.
dispatch_success = sa.Table(
    "dispatch_success",
    metadata,
    sa.Column("decision_id", _Id, sa.ForeignKey("decisions.decision_id"), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("provider_status_code", sa.Integer),
    sa.Column("provider_message_id", sa.String(255)),
)

_TABLES = (decisions, events, consents, dispatches, dispatch_success)
_DECISION_COLUMNS = [c.name for c in decisions.columns]
_EVENT_COLUMNS = [c.name for c in events.columns]


# --------------------------------------------------------------------------- statements
# The read paths run on every decision: their statements are built once (with bind
# parameters) so SQLAlchemy neither rebuilds the expression nor recomputes its cache key.

_ENGAGEMENT_KINDS = {
    "sent": "sends",
    "opened": "opens",
    "clicked": "clicks",
    "converted": "conversions",
    "unsubscribed": "unsubscribes",
    "bounced": "bounces",
    "complained": "complaints",
}


_DECISION_EXISTS = sa.select(decisions.c.decision_id).where(
    decisions.c.decision_id == sa.bindparam("decision_id")
)
_INSERT_DECISION = decisions.insert()


def _one_of(column: sa.ColumnElement, values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN (...)`` for a fixed list, without SQLAlchemy's per-execution expansion."""
    return sa.or_(*(column == sa.literal(v, literal_execute=False) for v in values))


@functools.cache
def _contact_statement(with_hi: bool, with_channel: bool) -> sa.CompoundSelect:
    """Planned decisions (incl. hold-out ones) and sent events as one statement for
    ``_contacts`` (one round trip): ``source`` "decision" or "event", ``decision_id``,
    ``campaign_id``, ``channel``, ``ts``, ``holdout`` (decisions) and ``event_id`` (events);
    binds customer_id, lo, hi, channel."""
    d, e, e2 = decisions, events, events.alias("e2")
    planned = sa.func.coalesce(d.c.send_at, d.c.ts)
    has_sent = (
        sa.select(e2.c.event_id)
        .where(e2.c.decision_id == d.c.decision_id, e2.c.event == "sent")
        .exists()
    )
    q_dec = sa.select(
        sa.literal_column("'decision'", sa.String).label("source"),
        d.c.decision_id,
        d.c.campaign_id,
        d.c.channel,
        planned.label("ts"),
        d.c.holdout,
        sa.cast(sa.null(), _BigId).label("event_id"),
    ).where(
        d.c.customer_id == sa.bindparam("customer_id"),
        d.c.revive.is_(True),
        d.c.channel.is_not(None),
        ~has_sent,
        planned >= sa.bindparam("lo", type_=UtcDateTime),
    )
    earlier_sent = (
        sa.select(e2.c.event_id)
        .where(
            e2.c.decision_id == e.c.decision_id,
            e2.c.event == "sent",
            sa.or_(e2.c.ts < e.c.ts, sa.and_(e2.c.ts == e.c.ts, e2.c.event_id < e.c.event_id)),
        )
        .exists()
    )
    q_ev = sa.select(
        sa.literal_column("'event'", sa.String),
        e.c.decision_id,
        e.c.campaign_id,
        e.c.channel,
        e.c.ts,
        sa.false(),
        e.c.event_id,
    ).where(
        e.c.customer_id == sa.bindparam("customer_id"),
        e.c.event == "sent",
        e.c.ts >= sa.bindparam("lo", type_=UtcDateTime),
        sa.or_(e.c.decision_id.is_(None), ~earlier_sent),
    )
    if with_hi:
        q_dec = q_dec.where(planned <= sa.bindparam("hi", type_=UtcDateTime))
        q_ev = q_ev.where(e.c.ts <= sa.bindparam("hi", type_=UtcDateTime))
    if with_channel:
        q_dec = q_dec.where(d.c.channel == sa.bindparam("channel"))
        q_ev = q_ev.where(e.c.channel == sa.bindparam("channel"))
    return sa.union_all(q_dec, q_ev)


@functools.cache
def _engagement_statement(with_customer: bool, with_since: bool) -> sa.Select | sa.CompoundSelect:
    """Engagement rows on channels; binds customer_id and since.

    One customer: its raw message-event rows, oldest first (:func:`_summarise_engagement`
    counts them and keeps each message's time for recency weights). Population: per
    (channel, event) the messages linked to a decision (distinct decisions), the events
    without one and the last time, plus per channel a row ``engaged`` (decisions opened or
    clicked). Portable SQL only (SQLite and PostgreSQL).
    """
    e = events.c
    where = [e.channel.is_not(None), _one_of(e.event, _ENGAGEMENT_KINDS)]
    if with_since:
        where.append(e.ts >= sa.bindparam("since", type_=UtcDateTime))
    if with_customer:
        where.append(e.customer_id == sa.bindparam("customer_id"))
        return (
            sa.select(e.channel, e.event, e.decision_id, e.ts, e.event_id)
            .where(*where)
            .order_by(e.ts, e.event_id)
        )
    linked = sa.func.count(sa.distinct(e.decision_id))
    unlinked = sa.func.sum(sa.case((e.decision_id.is_(None), 1), else_=0))
    per_event = (
        sa.select(
            e.channel,
            e.event,
            linked.label("linked"),
            unlinked.label("unlinked"),
            sa.func.max(e.ts).label("last"),
        )
        .where(*where)
        .group_by(e.channel, e.event)
    )
    engaged = (
        sa.select(
            e.channel,
            sa.literal("engaged", sa.String(16)).label("event"),
            linked.label("linked"),
            sa.literal(0, sa.Integer).label("unlinked"),
            sa.func.max(e.ts).label("last"),
        )
        .where(*where, _one_of(e.event, ("opened", "clicked")))
        .group_by(e.channel)
    )
    return sa.union_all(per_event, engaged)


def _summarise_engagement(rows: Iterable[Any]) -> dict[str, Engagement]:
    """Per-channel :class:`Engagement` of one customer from its event rows, oldest first
    (rows with ``channel``, ``event``, ``decision_id``, ``ts``; see :class:`Engagement`)."""
    acc: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str, str]] = set()  # (channel, event, decision) counted once
    linked: dict[tuple[str, str], list[Any]] = {}  # (channel, decision) -> [time, engaged]
    unlinked: dict[str, list[list[Any]]] = {}  # channel -> messages without a decision
    for r in rows:
        ch, ev, did, ts = r.channel, r.event, r.decision_id, as_utc(r.ts)
        f = acc.setdefault(ch, {})
        if did is None or (ch, ev, did) not in seen:
            if did is not None:
                seen.add((ch, ev, did))
            key = _ENGAGEMENT_KINDS[ev]
            f[key] = f.get(key, 0) + 1
        if ev == "sent":
            f["last_send_ts"] = max(f.get("last_send_ts") or ts, ts)
        elif ev == "opened":
            f["last_open_ts"] = max(f.get("last_open_ts") or ts, ts)
        if ev not in ("sent", "opened", "clicked"):
            continue
        hit = ev != "sent"
        if did is not None:
            msg = linked.setdefault((ch, did), [ts.timestamp(), False])
            msg[1] = msg[1] or hit
            continue
        own = unlinked.setdefault(ch, [])
        if ev == "sent" or not own:
            own.append([ts.timestamp(), hit])
        else:
            own[-1][1] = True
    for (ch, _), msg in linked.items():
        unlinked.setdefault(ch, []).append(msg)
    out = {}
    for ch, f in sorted(acc.items()):
        msgs = tuple(sorted((float(t), bool(hit)) for t, hit in unlinked.get(ch, [])))
        out[ch] = Engagement(**f, engaged=sum(hit for _, hit in msgs), messages=msgs)
    return out


@functools.cache
def _consent_statement(with_as_of: bool) -> sa.CompoundSelect:
    """Consent rows (``kind`` 0) and revoking events (``kind`` 1, not granted) as one
    statement for ``_consents``: ``kind``, ``id``, ``channel``, ``granted``, ``ts``; binds
    customer_id and as_of."""
    c, e = consents.c, events.c
    qc = sa.select(
        sa.literal_column("0", sa.Integer).label("kind"),
        c.consent_id.label("id"),
        c.channel,
        c.granted,
        c.ts,
    ).where(c.customer_id == sa.bindparam("customer_id"))
    qe = sa.select(
        sa.literal_column("1", sa.Integer), e.event_id, e.channel, sa.false(), e.ts
    ).where(e.customer_id == sa.bindparam("customer_id"), _one_of(e.event, REVOKING_EVENTS))
    if with_as_of:
        qc = qc.where(c.ts <= sa.bindparam("as_of", type_=UtcDateTime))
        qe = qe.where(e.ts <= sa.bindparam("as_of", type_=UtcDateTime))
    return sa.union_all(qc, qe)


@functools.cache
def _history_statement() -> sa.CompoundSelect:
    """What a decision reads about a customer as one statement (one round trip, not three):
    the rows of :func:`_contact_statement` (``part`` 0), :func:`_consent_statement`
    (``part`` 1) and the customer's :func:`_engagement_statement` (``part`` 2), each under
    the union of their column names (NULL where a part has no such column); binds
    customer_id and lo."""
    subs = [
        part.subquery()
        for part in (
            _contact_statement(False, False),
            _consent_statement(False),
            _engagement_statement(True, False).order_by(None),
        )
    ]
    columns: dict[str, sa.types.TypeEngine] = {}  # name -> type, first part that has it
    for sub in subs:
        for col in sub.c:
            columns.setdefault(col.key, col.type)
    selects = [
        sa.select(
            sa.literal_column(str(number), sa.Integer).label("part"),
            *(
                sa.type_coerce(sub.c[name], type_).label(name)
                if name in sub.c
                else sa.cast(sa.null(), type_).label(name)
                for name, type_ in columns.items()
            ),
        )
        for number, sub in enumerate(subs)
    ]
    return sa.union_all(*selects)


def _contact_records(
    customer_id: str, rows: Iterable[Any]
) -> tuple[list[ContactRecord], list[ContactRecord]]:
    """(contacts, shadow contacts) from :func:`_contact_statement` rows, in time order."""
    out: list[ContactRecord] = []
    shadows: list[ContactRecord] = []
    for r in rows:
        if r.source == "event":
            out.append(
                ContactRecord(
                    customer_id,
                    r.channel,
                    r.ts,
                    "event",
                    r.decision_id,
                    r.campaign_id,
                    int(r.event_id),
                )
            )
            continue
        held = bool(r.holdout)
        (shadows if held else out).append(
            ContactRecord(
                customer_id,
                r.channel,
                r.ts,
                "decision",
                r.decision_id,
                r.campaign_id,
                shadow=held,
            )
        )
    out.sort(key=lambda c: (c.ts, c.source, c.decision_id or "", c.event_id or 0))
    shadows.sort(key=lambda c: (c.ts, c.decision_id or ""))
    return out, shadows


def _consent_state(rows: Iterable[Any]) -> dict[str, bool]:
    """Per channel the latest consent from :func:`_consent_statement` rows (a revocation
    wins a tie; a row without a channel applies to every channel)."""
    # (ts, revocation-last so it wins ties, insertion order) -> (channel, granted)
    timeline = [((r.ts, int(r.kind), int(r.id)), r.channel, bool(r.granted)) for r in rows]
    timeline.sort(key=lambda t: t[0])
    universe = set(KNOWN_CHANNELS) | {ch for _, ch, _ in timeline if ch is not None}
    state: dict[str, bool] = {}
    for _, channel, granted in timeline:
        for ch in [channel] if channel is not None else sorted(universe):
            state[ch] = granted
    return dict(sorted(state.items()))


_SQLITE_MMAP_BYTES = 256 * 2**20


def _observed(target: Connection | sa.Engine) -> bool:
    """Somebody listens to cursor executions (audits, tracing): raw DBAPI calls would hide
    statements from them."""
    d = target.dispatch
    return bool(d.before_cursor_execute or d.after_cursor_execute)


@contextmanager
def _db_errors() -> Iterator[None]:
    """Driver and SQLAlchemy errors as the store's own (what callers can act on)."""
    try:
        yield
    except (sa_exc.IntegrityError, sqlite3.IntegrityError) as exc:
        raise StoreIntegrityError(f"write rejected by the database: {_short(exc)}") from exc
    except (sa_exc.OperationalError, sqlite3.OperationalError) as exc:
        raise StoreUnavailable(f"database unavailable or locked: {_short(exc)}") from exc
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        raise StoreError(f"database error: {_short(exc)}") from exc


class _Fast:
    """One statement compiled once for SQLite and run on the raw DBAPI connection.

    A recorded decision runs two statements (its history, the insert) between BEGIN and
    COMMIT; SQLAlchemy's per-execution work (execution context,
    cache-key lookup, result set-up) costs several times SQLite's own. Same SQL, same
    bind/result type processing (taken from the compiled statement), same connection and
    therefore the same transaction; driver errors are mapped by ``_db_errors``.
    """

    __slots__ = ("sql", "names", "static", "procs", "results", "row")

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect, column_keys: Any = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        self.static = {k: b.value for k, b in compiled.binds.items() if not b.required}
        binds = compiled._bind_processors
        self.procs = tuple(binds.get(n) for n in self.names)
        cols = getattr(compiled, "_result_columns", None) or []
        self.results = tuple(c.type._cached_result_processor(dialect, None) for c in cols)
        self.row = collections.namedtuple("Row", [c.keyname for c in cols]) if cols else None

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        static = self.static
        out = []
        for name, proc in zip(self.names, self.procs, strict=True):
            v = values[name] if name in values else static[name]
            out.append(v if proc is None else proc(v))
        return tuple(out)

    def rows(self, dbapi: sqlite3.Connection, values: Mapping[str, Any]) -> list[Any]:
        cur = dbapi.execute(self.sql, self.params(values))
        make, procs = self.row._make, self.results
        return [
            make([v if p is None else p(v) for p, v in zip(procs, r, strict=True)])
            for r in cur.fetchall()
        ]


# --------------------------------------------------------------------------- SQL store


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``values`` in pieces small enough for one ``IN (...)`` list on every backend."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _lock_id(key: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` (``hash()`` is per-process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _enable_wal(dbapi_conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch a SQLite file to WAL (persistent), retrying while other connections hold locks.

    Changing the journal mode needs an exclusive lock and fails at once with "database is
    locked" instead of waiting on ``busy_timeout``, which happens when several workers open
    a fresh file together.
    """
    if str(dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline, delay = time.monotonic() + timeout_s, 0.005
    while True:
        try:
            mode = str(dbapi_conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)
    if mode != "wal":
        log.warning("SQLite kept journal_mode=%s (WAL unsupported here?)", mode)


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0][:300]


def count_contacts(contacts: Iterable[ContactRecord], at: datetime) -> ContactCounts:
    """Contacts within 24 h / 7 days of ``at`` (either side): what the frequency caps count."""
    day: dict[str, int] = {}
    week: dict[str, int] = {}
    global_day = global_week = 0
    for c in contacts:
        gap = abs(c.ts - at)
        if gap >= WEEK:
            continue
        global_week += 1
        if c.channel is not None:
            week[c.channel] = week.get(c.channel, 0) + 1
        if gap < DAY:
            global_day += 1
            if c.channel is not None:
                day[c.channel] = day.get(c.channel, 0) + 1
    return ContactCounts(at, day, week, global_day, global_week)


class SqlContactStore(ContactStore):
    """:class:`ContactStore` on SQLAlchemy Core, for SQLite files and PostgreSQL.

    SQLite: WAL journal, ``busy_timeout`` and foreign keys are set on every connection;
    write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the
    lock instead of failing on a stale snapshot. Several processes may share one file.
    PostgreSQL (``postgresql+psycopg://user@host:port/db``): cap checks serialise per
    customer with ``pg_advisory_xact_lock`` (needs the default READ COMMITTED isolation so
    counts see the previous holder's commit), so several processes sharing one database
    enforce one cap; ``busy_timeout_ms`` becomes ``lock_timeout`` and the connect timeout.
    The schema is created on start-up if missing (serialised by an advisory lock too).
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000, echo: bool = False):
        try:
            self.url = make_url(url)
        except sa_exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {exc}") from exc
        self._dialect = self.url.get_backend_name()
        self._closed = False
        self._fast_cache: dict[int, tuple[sa.ClauseElement, _Fast]] = {}
        self._local = threading.local()  # the decision path's connection per thread
        self._pins: list[sqlite3.Connection] = []
        self._pin_lock = threading.Lock()
        kwargs: dict[str, Any] = {"echo": echo}
        memory = False
        if self._dialect == "sqlite":
            database = self.url.database or ""
            memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if memory:
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        if self._dialect == "postgresql":
            # busy_timeout's PostgreSQL twin: a writer queued on another's lock (the per
            # customer advisory lock, a row lock) gives up after it -> StoreUnavailable.
            kwargs["connect_args"] = {
                "connect_timeout": max(1, math.ceil(busy_timeout_ms / 1000)),
                "options": f"-c lock_timeout={int(busy_timeout_ms)}",
            }
        try:
            self._engine = sa.create_engine(self.url, **kwargs)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                f"cannot open store {self.url.render_as_string(hide_password=True)}: {exc}"
            ) from exc
        # an in-memory database lives in the pool's one shared connection: never detach it
        self._pin_ok = self._dialect == "sqlite" and not memory
        if self._dialect == "sqlite":
            self._install_sqlite_hooks(busy_timeout_ms, wal=not memory)
        try:
            self._create_schema()
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for event listeners in tests and for reports)."""
        return self._engine

    # ----------------------------------------------------------------- plumbing

    def _install_sqlite_hooks(self, busy_timeout_ms: int, wal: bool) -> None:
        @sa_event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys = ON")
            # Read pages through a memory map instead of a read() system call each, which
            # matters once the file outgrows SQLite's 2 MB page cache. The file is
            # append-only (never truncated), so the map's SIGBUS hazard does not arise.
            cur.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP_BYTES}")
            cur.close()
            if wal:
                _enable_wal(dbapi_conn, busy_timeout_ms / 1000)
                # WAL + NORMAL never corrupts the file; a power cut may lose the last
                # commits (not an application crash). FULL doubles the cost of every
                # decision's write with an fsync.
                dbapi_conn.execute("PRAGMA synchronous = NORMAL")

        @sa_event.listens_for(self._engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    @contextmanager
    def _tx(self, write: bool = False, lock: str | None = None) -> Iterator[Connection]:
        """A transaction; ``write`` takes SQLite's write lock up front, ``lock`` a PG lock."""
        if self._closed:
            raise StoreError("store is closed")
        with _db_errors(), self._engine.connect() as conn:
            if write and self._dialect == "sqlite":
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if lock is not None and self._dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(lock))))
                yield conn

    @contextmanager
    def _hot_tx(
        self, write: bool = False, lock: str | None = None
    ) -> Iterator[Connection | sqlite3.Connection]:
        """:meth:`_tx` for the decision path (statements via ``_rows`` / ``_insert_one``).

        On a SQLite file it is the thread's own DBAPI connection (:meth:`_pinned`) between
        ``BEGIN [IMMEDIATE]`` and ``COMMIT``: SQLAlchemy's per-transaction bookkeeping
        (connection object, begin event, commit, close) and the pool's check-out and return
        cost more than SQLite's own transaction. Not while anybody listens to cursor
        executions (they see every statement) and not on other databases.
        """
        if not self._pin_ok or _observed(self._engine):
            with self._tx(write, lock) as conn:
                yield conn
            return
        if self._closed:
            raise StoreError("store is closed")
        with _db_errors():
            dbapi = self._pinned()
            dbapi.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield dbapi
                dbapi.execute("COMMIT")
            finally:
                if dbapi.in_transaction:  # the body or COMMIT failed
                    with suppress(sqlite3.Error):
                        dbapi.execute("ROLLBACK")

    def _pinned(self) -> sqlite3.Connection:
        """This thread's SQLite connection for the decision path: taken from the pool once
        (so the pool's connect hooks ran) and detached from it; closed with the store."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            fairy = self._engine.raw_connection()
            conn = fairy.driver_connection
            fairy.detach()  # the pool forgets it: ours until close()
            with self._pin_lock:
                if self._closed:
                    conn.close()
                    raise StoreError("store is closed")
                self._pins.append(conn)
            self._local.conn = conn
        return conn

    def _fast(self, stmt: sa.ClauseElement, column_keys: Any = None) -> _Fast:
        fast = self._fast_cache.get(id(stmt))
        if fast is None or fast[0] is not stmt:
            fast = (stmt, _Fast(stmt, self._engine.dialect, column_keys))
            self._fast_cache[id(stmt)] = fast
        return fast[1]

    def _raw_ok(self, conn: Connection) -> bool:
        """SQLite, and nobody listens to cursor executions (audits, tracing): they see all."""
        return self._dialect == "sqlite" and not _observed(conn)

    def _dbapi(self, conn: Connection | sqlite3.Connection) -> sqlite3.Connection | None:
        """The SQLite connection to run :class:`_Fast` statements on, if they may be."""
        if isinstance(conn, sqlite3.Connection):
            return conn  # from _hot_tx
        return conn.connection.driver_connection if self._raw_ok(conn) else None

    def _rows(
        self, conn: Connection | sqlite3.Connection, stmt: sa.ClauseElement, params: Mapping
    ) -> list:
        """All rows of a hot-path SELECT (raw DBAPI on SQLite, see :class:`_Fast`)."""
        dbapi = self._dbapi(conn)
        if dbapi is not None:
            return self._fast(stmt).rows(dbapi, params)
        return list(conn.execute(stmt, params))

    def _insert_one(
        self, conn: Connection | sqlite3.Connection, stmt: sa.ClauseElement, row: Mapping
    ) -> None:
        """Insert one full row of a hot-path table (raw DBAPI on SQLite)."""
        dbapi = self._dbapi(conn)
        if dbapi is not None:
            fast = self._fast(stmt, list(row))
            dbapi.execute(fast.sql, fast.params(row))
        else:
            conn.execute(stmt, row)

    def _create_schema(self) -> None:
        # Serialised so that several workers starting at once do not race on CREATE TABLE.
        with self._tx(write=True, lock="revival:schema") as conn:
            metadata.create_all(conn, checkfirst=True)

    # ----------------------------------------------------------------- decisions

    @staticmethod
    def _decision_row(d: DecisionRecord) -> dict[str, Any]:
        return {
            "decision_id": d.decision_id,
            "customer_id": d.customer_id,
            "campaign_id": d.campaign_id,
            "ts": d.ts,
            "channel": d.channel,
            "send_at": d.send_at,
            "intent": d.intent,
            "offer_type": d.offer_type,
            "holdout": d.holdout,
            "revive": d.revive,
            "priority": d.priority,
            "payload": d.payload
            if isinstance(d.payload, str)
            else _dump_json("payload", dict(d.payload)),
            "model_versions": _versions_json(tuple(sorted(d.model_versions.items()))),
            "recorded_at": _utcnow(),
        }

    @staticmethod
    def _decision_from(row: Mapping[str, Any]) -> DecisionRecord:
        return DecisionRecord(
            decision_id=row["decision_id"],
            customer_id=row["customer_id"],
            campaign_id=row["campaign_id"],
            ts=row["ts"],
            channel=row["channel"],
            send_at=row["send_at"],
            intent=row["intent"],
            offer_type=row["offer_type"],
            holdout=bool(row["holdout"]),
            revive=bool(row["revive"]),
            priority=row["priority"],
            payload=json.loads(row["payload"]),
            model_versions=json.loads(row["model_versions"]),
        )

    def _decision_exists(self, conn: Connection | sqlite3.Connection, decision_id: str) -> bool:
        return bool(self._rows(conn, _DECISION_EXISTS, {"decision_id": decision_id}))

    def record_decision(self, decision: DecisionRecord) -> None:
        if not isinstance(decision, DecisionRecord):
            raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
        row = self._decision_row(decision)  # validates the JSON before opening a transaction
        try:
            with self._tx(write=True, lock=f"customer:{decision.customer_id}") as conn:
                if self._decision_exists(conn, decision.decision_id):
                    raise DuplicateDecision(decision.decision_id)
                self._insert_one(conn, _INSERT_DECISION, row)
        except StoreIntegrityError:
            if self.get_decision(decision.decision_id) is not None:  # lost a race on the PK
                raise DuplicateDecision(decision.decision_id) from None
            raise

    def reserve_contact(self, decision: DecisionRecord, caps: CapSpec) -> tuple[bool, str | None]:
        if not isinstance(decision, DecisionRecord):
            raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
        if not isinstance(caps, CapSpec):
            raise InvalidRecord(f"expected a CapSpec, got {type(caps).__name__}")
        # the caps look a week either side of the contact: read from a week before it
        _, reason = self.decide_and_reserve(
            decision.customer_id, decision.contact_time - WEEK, lambda _h: (decision, caps)
        )
        return reason is None, reason

    def decide_and_reserve(
        self,
        customer_id: str,
        since: datetime,
        decide: Callable[[CustomerHistory], tuple[DecisionRecord, CapSpec | None]],
    ) -> tuple[DecisionRecord, str | None]:
        # One write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the customer's advisory
        # lock) around read + decide + insert: half the round trips of a read followed by
        # a checked reservation, and no lost races to retry. The engine's ~0.5 ms runs
        # under the lock, which bounds one SQLite file to ~2,000 recorded decisions/s.
        # Hold-outs are capped like their treated twins (shadow contacts, module docstring).
        since = as_utc(since)
        decision: DecisionRecord | None = None
        try:
            with self._hot_tx(write=True, lock=f"customer:{customer_id}") as conn:
                history = self._history(conn, customer_id, since)
                decision, caps = decide(history)
                if not isinstance(decision, DecisionRecord):
                    raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
                if decision.customer_id != customer_id:
                    raise InvalidRecord(
                        f"decision is for {decision.customer_id!r}, not {customer_id!r}"
                    )
                if caps is not None and not isinstance(caps, CapSpec):
                    raise InvalidRecord(f"expected a CapSpec, got {type(caps).__name__}")
                row = self._decision_row(decision)  # validates the JSON, refused or not
                if caps is not None and decision.revive and decision.channel is not None:
                    at = decision.contact_time
                    if at - WEEK < since:
                        raise InvalidRecord(f"history since {since} misses the cap window")
                    mine = cap_contacts(
                        history.contacts, history.shadows, decision.campaign_id, decision.holdout
                    )
                    reason = count_contacts(mine, at).cap_reason(caps, decision.channel)
                    if reason is not None:
                        if self._decision_exists(conn, decision.decision_id):
                            raise DuplicateDecision(decision.decision_id)
                        return decision, reason
                self._insert_one(conn, _INSERT_DECISION, row)
        except StoreIntegrityError:
            if decision is not None and self.get_decision(decision.decision_id) is not None:
                raise DuplicateDecision(decision.decision_id) from None
            raise
        return decision, None

    def get_decisions(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        ids = sorted(set(decision_ids))
        found: dict[str, DecisionRecord] = {}
        with self._tx() as conn:
            for chunk in _chunks(ids):
                q = sa.select(decisions).where(decisions.c.decision_id.in_(chunk))
                for row in conn.execute(q).mappings():
                    found[row["decision_id"]] = self._decision_from(row)
        return found

    def first_sends(self, decision_ids: Iterable[str]) -> dict[tuple[str, str], datetime]:
        ids = sorted(set(decision_ids))
        first: dict[tuple[str, str], datetime] = {}
        key = (events.c.customer_id, events.c.decision_id)
        with self._tx() as conn:
            for chunk in _chunks(ids):
                q = (
                    sa.select(*key, sa.func.min(events.c.ts).label("ts"))
                    .where(events.c.decision_id.in_(chunk), events.c.event == "sent")
                    .group_by(*key)
                )
                for customer_id, decision_id, ts in conn.execute(q):
                    first[(customer_id, decision_id)] = as_utc(ts)
        return first

    def latest_decision(
        self, customer_id: str, before: datetime | None = None
    ) -> DecisionRecord | None:
        q = sa.select(decisions).where(decisions.c.customer_id == customer_id)
        if before is not None:
            q = q.where(decisions.c.ts < as_utc(before))
        q = q.order_by(
            decisions.c.ts.desc(), decisions.c.recorded_at.desc(), decisions.c.decision_id.desc()
        ).limit(1)
        with self._tx() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else self._decision_from(row)

    # ----------------------------------------------------------------- events

    @staticmethod
    def _event_row(e: EventRecord, recorded_at: datetime) -> dict[str, Any]:
        return {
            "customer_id": e.customer_id,
            "ts": e.ts,
            "channel": e.channel,
            "campaign_id": e.campaign_id,
            "decision_id": e.decision_id,
            "event": e.event,
            "value": e.value,
            "dedup_key": e.dedup_key,
            "recorded_at": recorded_at,
        }

    @staticmethod
    def _existing_keys(conn: Connection, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            q = sa.select(events.c.dedup_key).where(events.c.dedup_key.in_(keys[i : i + 500]))
            found.update(conn.execute(q).scalars())
        return found

    def record_event(self, event: EventRecord) -> bool:
        inserted, _ = self.record_events([event])
        return inserted == 1

    def record_events(self, events_: Sequence[EventRecord]) -> tuple[int, int]:
        for i, e in enumerate(events_):
            if not isinstance(e, EventRecord):
                raise InvalidRecord(f"events[{i}]: expected an EventRecord, got {type(e).__name__}")
        if not events_:
            return 0, 0
        # Dedup keys are checked inside the write transaction; on SQLite the write lock
        # makes that race-free, elsewhere a concurrent insert of the same key surfaces as an
        # IntegrityError and the batch is retried (the retry then sees the key).
        tries = 1 if self._dialect == "sqlite" else 3
        for attempt in range(tries):
            try:
                return self._insert_events(events_)
            except StoreIntegrityError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_events(self, events_: Sequence[EventRecord]) -> tuple[int, int]:
        now = _utcnow()
        with self._tx(write=True) as conn:
            keys = sorted({e.dedup_key for e in events_ if e.dedup_key is not None})
            seen = self._existing_keys(conn, keys) if keys else set()
            rows = []
            for e in events_:
                if e.dedup_key is not None:
                    if e.dedup_key in seen:
                        continue
                    seen.add(e.dedup_key)
                rows.append(self._event_row(e, now))
            if rows:
                conn.execute(events.insert(), rows)
        return len(rows), len(events_) - len(rows)

    def events_between(
        self,
        start: datetime,
        end: datetime,
        customer_id: str | None = None,
        event: str | None = None,
        campaign_id: str | None = None,
    ) -> pd.DataFrame:
        q = sa.select(*[events.c[n] for n in _EVENT_COLUMNS]).where(
            events.c.ts >= as_utc(start), events.c.ts < as_utc(end)
        )
        if customer_id is not None:
            q = q.where(events.c.customer_id == customer_id)
        if event is not None:
            q = q.where(events.c.event == event)
        if campaign_id is not None:
            q = q.where(events.c.campaign_id == campaign_id)
        with self._tx() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(events.c.event_id)).mappings()]
        df = pd.DataFrame(rows, columns=_EVENT_COLUMNS)
        df["event_id"] = df["event_id"].astype("int64")
        df["value"] = df["value"].astype("float64")
        for col in ("ts", "recorded_at"):
            df[col] = pd.to_datetime(df[col], utc=True)
        return df

    # ----------------------------------------------------------------- contacts

    def _contacts(
        self,
        conn: Connection | sqlite3.Connection,
        customer_id: str,
        lo: datetime,
        hi: datetime | None,
        channel: str | None = None,
    ) -> tuple[list[ContactRecord], list[ContactRecord]]:
        """(contacts, shadow contacts) with ``lo <= time <= hi`` (see the module docstring)."""
        q = _contact_statement(hi is not None, channel is not None)
        params: dict[str, Any] = {"customer_id": customer_id, "lo": lo}
        if hi is not None:
            params["hi"] = hi
        if channel is not None:
            params["channel"] = channel
        return _contact_records(customer_id, self._rows(conn, q, params))

    def recent_contacts(
        self,
        customer_id: str,
        since: datetime,
        channel: str | None = None,
        until: datetime | None = None,
    ) -> list[ContactRecord]:
        lo, hi = as_utc(since), _opt_utc(until)
        with self._tx() as conn:
            found, _ = self._contacts(conn, customer_id, lo, hi, channel)
        return [c for c in found if hi is None or c.ts < hi]

    def contact_counts(self, customer_id: str, now: datetime) -> ContactCounts:
        now = as_utc(now)
        with self._tx() as conn:
            found, _ = self._contacts(conn, customer_id, now - WEEK, now + WEEK)
        return count_contacts(found, now)

    # ----------------------------------------------------------------- engagement

    def _engagement(self, customer_id: str | None, since: datetime | None) -> dict[str, Engagement]:
        """Per-channel engagement of one customer (``customer_id``) or of everybody (None)."""
        kinds = _ENGAGEMENT_KINDS
        q = _engagement_statement(customer_id is not None, since is not None)
        params: dict[str, Any] = {}
        if customer_id is not None:
            params["customer_id"] = customer_id
        if since is not None:
            params["since"] = as_utc(since)
        with self._tx() as conn:
            rows = self._rows(conn, q, params)
        if customer_id is not None:
            return _summarise_engagement(rows)
        acc: dict[str, dict[str, Any]] = {}
        unlinked: dict[str, dict[str, int]] = {}
        for r in rows:
            fields = acc.setdefault(r.channel, {})
            if r.event == "engaged":
                fields["engaged"] = fields.get("engaged", 0) + int(r.linked)
                continue
            fields[kinds[r.event]] = int(r.linked) + int(r.unlinked)
            unlinked.setdefault(r.channel, {})[r.event] = int(r.unlinked)
            if r.event == "sent":
                fields["last_send_ts"] = _opt_utc(r.last)
            elif r.event == "opened":
                fields["last_open_ts"] = _opt_utc(r.last)
        for ch, n in unlinked.items():
            acc[ch]["engaged"] = acc[ch].get("engaged", 0) + max(
                n.get("opened", 0), n.get("clicked", 0)
            )
        return {ch: Engagement(**f) for ch, f in sorted(acc.items())}

    def engagement(self, customer_id: str, since: datetime | None = None) -> dict[str, Engagement]:
        return self._engagement(customer_id, since)

    def population_engagement(self, since: datetime | None = None) -> dict[str, Engagement]:
        return self._engagement(None, since)

    def _history(
        self, conn: Connection | sqlite3.Connection, customer_id: str, since: datetime
    ) -> CustomerHistory:
        """Contacts since ``since``, consents and engagement: one statement, one round trip."""
        parts: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        params = {"customer_id": customer_id, "lo": as_utc(since)}
        for r in self._rows(conn, _history_statement(), params):
            parts[r.part].append(r)
        contacts, shadows = _contact_records(customer_id, parts[0])
        engagement = sorted(parts[2], key=lambda r: (r.ts, r.event_id))
        return CustomerHistory(
            contacts, _consent_state(parts[1]), _summarise_engagement(engagement), shadows
        )

    def customer_history(self, customer_id: str, since: datetime) -> CustomerHistory:
        with self._hot_tx() as conn:
            return self._history(conn, customer_id, since)

    # ----------------------------------------------------------------- consent

    def set_consent(
        self, customer_id: str, channel: str, granted: bool, ts: datetime, source: str
    ) -> None:
        _check_str("customer_id", customer_id)
        _check_channel(channel)
        _check_bool("granted", granted)
        _check_str("source", source, 64)
        row = {
            "customer_id": customer_id,
            "channel": channel,
            "granted": granted,
            "ts": as_utc(ts),
            "source": source,
            "recorded_at": _utcnow(),
        }
        with self._tx(write=True) as conn:
            conn.execute(consents.insert().values(row))

    def _consents(
        self, conn: Connection | sqlite3.Connection, customer_id: str, as_of: datetime | None
    ) -> dict[str, bool]:
        q = _consent_statement(as_of is not None)
        params: dict[str, Any] = {"customer_id": customer_id}
        if as_of is not None:
            params["as_of"] = as_utc(as_of)
        return _consent_state(self._rows(conn, q, params))

    def consents(self, customer_id: str, as_of: datetime | None = None) -> dict[str, bool]:
        with self._tx() as conn:
            return self._consents(conn, customer_id, as_of)

    # ----------------------------------------------------------------- reports

    def decisions_between(
        self, start: datetime, end: datetime, campaign_id: str | None = None
    ) -> pd.DataFrame:
        q = sa.select(decisions).where(
            decisions.c.ts >= as_utc(start), decisions.c.ts < as_utc(end)
        )
        if campaign_id is not None:
            q = q.where(decisions.c.campaign_id == campaign_id)
        q = q.order_by(decisions.c.ts, decisions.c.decision_id)
        with self._tx() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["payload"] = json.loads(r["payload"])
            r["model_versions"] = json.loads(r["model_versions"])
        df = pd.DataFrame(rows, columns=_DECISION_COLUMNS)
        for col in ("ts", "send_at", "recorded_at"):
            df[col] = pd.to_datetime(df[col], utc=True)
        df["holdout"] = df["holdout"].astype(bool)
        df["revive"] = df["revive"].astype(bool)
        df["priority"] = df["priority"].astype("float64")
        return df

    def counts(self) -> dict[str, int]:
        with self._tx() as conn:
            return {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in _TABLES
            }

    # ----------------------------------------------------------------- dispatch

    @staticmethod
    def _attempt_from(row: Any, status: str | None = None) -> DispatchAttempt:
        m = row._mapping
        return DispatchAttempt(
            decision_id=m["decision_id"],
            attempt=m["attempt"],
            status=status or m["status"],
            ts=m["ts"],
            provider_status_code=m["provider_status_code"],
            error=m.get("error"),
            provider_message_id=m["provider_message_id"],
            tries=m.get("tries"),
        )

    @staticmethod
    def _success(conn: Connection, decision_id: str) -> Any:
        q = sa.select(dispatch_success).where(dispatch_success.c.decision_id == decision_id)
        return conn.execute(q).first()

    def begin_dispatch(
        self, decision_id: str, customer_id: str, channel: str, ts: datetime, lease_s: float = 300.0
    ) -> int:
        ts = as_utc(ts)
        refused: str | None = None
        last = 0
        try:
            with self._tx(write=True) as conn:
                q = sa.select(decisions).where(decisions.c.decision_id == decision_id)
                row = conn.execute(q).mappings().first()
                if row is None:
                    raise UnknownDecision(decision_id)
                if self._success(conn, decision_id) is not None:
                    raise AlreadyDispatched(decision_id)
                log = conn.execute(
                    sa.select(dispatches.c.attempt, dispatches.c.status, dispatches.c.ts)
                    .where(dispatches.c.decision_id == decision_id)
                    .order_by(dispatches.c.attempt, dispatches.c.dispatch_id)
                ).all()
                last = max((r.attempt for r in log), default=0)
                outcome = [r for r in log if r.attempt == last and r.status != "sending"]
                opened = [r for r in log if r.attempt == last and r.status == "sending"]
                if opened and not outcome and opened[0].ts > ts - timedelta(seconds=lease_s):
                    raise DispatchInProgress(decision_id, last)
                refused = self._refusal(conn, row, customer_id, channel, ts)
                conn.execute(
                    dispatches.insert().values(
                        decision_id=decision_id,
                        attempt=last + 1,
                        ts=ts,
                        status="failed" if refused else "sending",
                        error=refused,
                    )
                )
        except StoreIntegrityError:  # another worker opened the same attempt number
            raise DispatchInProgress(decision_id, last + 1) from None
        if refused is not None:
            raise NotDispatchable(decision_id, refused)
        return last + 1

    def _refusal(
        self,
        conn: Connection,
        row: Mapping[str, Any],
        customer_id: str,
        channel: str,
        ts: datetime,
    ) -> str | None:
        """Why the decision in ``row`` must not be sent as ``(customer_id, channel)`` now."""
        if row["holdout"]:
            return "holdout decision: the customer must not be contacted"
        if not row["revive"] or row["channel"] is None:
            return "decision does not contact the customer (revive=False or no channel)"
        if row["customer_id"] != customer_id or row["channel"] != channel:
            return (
                f"message is for ({customer_id}, {channel}) but the decision is for "
                f"({row['customer_id']}, {row['channel']})"
            )
        if self._consents(conn, customer_id, ts).get(channel) is False:
            return f"consent for {channel} revoked"
        return None

    def finish_dispatch(self, outcome: DispatchAttempt) -> bool:
        if not isinstance(outcome, DispatchAttempt) or outcome.status == "sending":
            raise InvalidRecord("finish_dispatch needs a DispatchAttempt with status sent/failed")
        with self._tx(write=True) as conn:
            q = sa.select(decisions.c.customer_id, decisions.c.campaign_id, decisions.c.channel)
            decision = conn.execute(q.where(decisions.c.decision_id == outcome.decision_id)).first()
            opened = conn.execute(
                sa.select(dispatches.c.dispatch_id).where(
                    dispatches.c.decision_id == outcome.decision_id,
                    dispatches.c.attempt == outcome.attempt,
                    dispatches.c.status == "sending",
                )
            ).first()
            if decision is None or opened is None:
                raise StoreError(
                    f"decision {outcome.decision_id!r} has no open attempt {outcome.attempt}"
                )
            conn.execute(
                dispatches.insert().values(
                    decision_id=outcome.decision_id,
                    attempt=outcome.attempt,
                    ts=outcome.ts,
                    status=outcome.status,
                    provider_status_code=outcome.provider_status_code,
                    error=outcome.error,
                    provider_message_id=outcome.provider_message_id,
                    tries=outcome.tries,
                )
            )
            if outcome.status != "sent":
                return False
            if self._success(conn, outcome.decision_id) is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(
                        dispatch_success.insert().values(
                            decision_id=outcome.decision_id,
                            attempt=outcome.attempt,
                            ts=outcome.ts,
                            provider_status_code=outcome.provider_status_code,
                            provider_message_id=outcome.provider_message_id,
                        )
                    )
            except sa_exc.IntegrityError:  # a concurrent attempt succeeded first
                return False
            key = f"dispatch:{outcome.decision_id}"
            if not self._existing_keys(conn, [key]):
                sent = EventRecord(
                    customer_id=decision.customer_id,
                    ts=outcome.ts,
                    event="sent",
                    channel=decision.channel,
                    campaign_id=decision.campaign_id,
                    decision_id=outcome.decision_id,
                    dedup_key=key,
                )
                conn.execute(events.insert().values(self._event_row(sent, _utcnow())))
        return True

    def dispatch_success(self, decision_id: str) -> DispatchAttempt | None:
        with self._tx() as conn:
            row = self._success(conn, decision_id)
        return None if row is None else self._attempt_from(row, status="sent")

    def dispatch_attempts(self, decision_id: str) -> list[DispatchAttempt]:
        q = (
            sa.select(dispatches)
            .where(dispatches.c.decision_id == decision_id)
            .order_by(dispatches.c.attempt, dispatches.c.dispatch_id)
        )
        with self._tx() as conn:
            return [self._attempt_from(r) for r in conn.execute(q)]

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if not self._closed:
            with self._pin_lock:
                self._closed = True
                pins, self._pins = self._pins, []
            for conn in pins:
                with suppress(sqlite3.Error):
                    conn.close()
            self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqlContactStore({self.url.render_as_string(hide_password=True)!r})"


def open_store(url: str) -> ContactStore:
    """Open the contact store at ``url`` (any SQLAlchemy URL; e.g. ``sqlite:///var/c.db``)."""
    return SqlContactStore(url)
