"""The store's records, errors and input checks: what goes into the contact store and back.

Records are frozen dataclasses validated on construction (a malformed one raises
:class:`InvalidRecord` before anything touches the database); every timestamp is normalised
to aware UTC (:func:`as_utc`: naive datetimes are taken to be UTC). The errors are the
store's own, so callers never handle driver or SQLAlchemy exceptions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from features.contracts import EVENT_TYPES as CONTRACT_EVENT_TYPES

__all__ = [
    "DISPATCH_STATUSES",
    "BEHAVIOUR_EVENTS",
    "EVENT_TYPES",
    "FRAME_MAX",
    "FRAME_MIN",
    "ID_MAX",
    "KNOWN_CHANNELS",
    "REVOKING_EVENTS",
    "AlreadyDispatched",
    "ContactRecord",
    "DecisionRecord",
    "DispatchAttempt",
    "DispatchInProgress",
    "DuplicateDecision",
    "EventRecord",
    "InvalidRecord",
    "NotDispatchable",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "UnknownDecision",
    "as_utc",
    "check_bool",
    "check_channel",
    "check_str",
    "dump_json",
    "opt_utc",
]

# the message-event contract's types, plus complaints and purchases arriving live
EVENT_TYPES = (*CONTRACT_EVENT_TYPES, "complained", "purchase")
# What a customer did, not what a message did (journey triggers; core.store.behaviour).
BEHAVIOUR_EVENTS = ("cart_abandoned", "return", "browse")
REVOKING_EVENTS = ("unsubscribed", "complained")
DISPATCH_STATUSES = ("sending", "sent", "failed")
# Channels a channel-less unsubscribe/complaint revokes (plus any channel seen for the customer).
KNOWN_CHANNELS = ("sms", "email", "wechat", "app_push")

ID_MAX = 128
# The range a frame's nanosecond timestamps can hold (pandas: 1677-09-21..2262-04-11): the
# frame readers (``decisions_between``, ``events_between``) clip their period to it, so a
# row dated e.g. in year 3000 is left out of every frame instead of failing the reader.
FRAME_MIN = datetime(1678, 1, 1, tzinfo=UTC)
FRAME_MAX = datetime(2262, 1, 1, tzinfo=UTC)
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


def opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def check_str(name: str, value: Any, max_len: int = ID_MAX, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise InvalidRecord(f"{name} is longer than {max_len} characters: {value[:40]!r}...")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on every backend alike
        raise InvalidRecord(f"{name} must not contain NUL characters: {value[:40]!r}")


def check_channel(value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not _CHANNEL_RE.match(value):
        raise InvalidRecord(
            f"channel must be a lowercase identifier like 'sms' or 'app_push', got {value!r}"
        )


def check_bool(name: str, value: Any) -> None:
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


def dump_json(name: str, value: Any) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"{name} is not JSON serialisable: {exc}") from None


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
            check_str(name, getattr(self, name))
        check_str("intent", self.intent, 64)
        check_str("offer_type", self.offer_type, 64)
        check_channel(self.channel, optional=True)
        check_bool("holdout", self.holdout)
        check_bool("revive", self.revive)
        _set(self, "ts", as_utc(self.ts))
        _set(self, "send_at", opt_utc(self.send_at))
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
    items: tuple[str, ...] = ()  # a purchase's item ids (what the next decision excludes)

    def __post_init__(self) -> None:
        check_str("customer_id", self.customer_id)
        _set(self, "items", tuple(self.items))
        for i, item in enumerate(self.items):
            check_str(f"items[{i}]", item)
        if self.items and self.event != "purchase":
            raise InvalidRecord(f"items belong to purchase events, not {self.event!r}")
        if self.event not in EVENT_TYPES:
            raise InvalidRecord(f"event must be one of {EVENT_TYPES}, got {self.event!r}")
        check_channel(self.channel, optional=True)
        check_str("campaign_id", self.campaign_id, optional=True)
        check_str("decision_id", self.decision_id, optional=True)
        check_str("dedup_key", self.dedup_key, 255, optional=True)
        _set(self, "ts", as_utc(self.ts))
        _set(self, "value", _finite("value", self.value, optional=True))


@dataclass(frozen=True)
class ContactRecord:
    """One contact (see :mod:`core.store.caps`): where it comes from and when it happens."""

    customer_id: str
    channel: str | None
    ts: datetime
    source: str  # "decision" (planned, not yet reported sent) or "event" (a sent event)
    decision_id: str | None = None
    campaign_id: str | None = None
    event_id: int | None = None
    shadow: bool = False  # a hold-out decision: counts only for its campaign's hold-out caps


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
        check_str("decision_id", self.decision_id)
        if self.status not in DISPATCH_STATUSES:
            raise InvalidRecord(f"status must be one of {DISPATCH_STATUSES}, got {self.status!r}")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise InvalidRecord(f"attempt must be a positive int, got {self.attempt!r}")
        check_str("provider_message_id", self.provider_message_id, 255, optional=True)
        _set(self, "ts", as_utc(self.ts))
        if self.error is not None:  # provider text: keep it storable (no NUL on PostgreSQL)
            _set(self, "error", str(self.error).replace("\x00", "\\x00")[:_ERROR_MAX])
