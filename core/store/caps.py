"""Frequency caps and what one decision reads about a customer, in plain Python.

The decision engine counts contacts and checks caps with these; it must not depend on
persistence, so nothing here imports SQLAlchemy.

What counts as a *contact* (frequency caps, ``ContactStore.recent_contacts``):

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.store.records import ContactRecord, InvalidRecord

__all__ = [
    "DAY",
    "WEEK",
    "CapSpec",
    "ContactCounts",
    "CustomerHistory",
    "Engagement",
    "cap_contacts",
    "count_contacts",
]

DAY = timedelta(hours=24)
WEEK = timedelta(days=7)


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

    Channel learning (:func:`service.engine.engagement_posterior`) reads ``engaged`` —
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
    """What one decision reads about a customer: contacts, consents and engagement, the
    shadow contacts of their hold-out decisions (see the module docstring), and the purchase
    events and returns stored since the serving snapshot (time, item ids), oldest first."""

    contacts: list[ContactRecord]
    consents: dict[str, bool]
    engagement: dict[str, Engagement]
    shadows: list[ContactRecord] = field(default_factory=list)
    purchases: list[tuple[datetime, tuple[str, ...]]] = field(default_factory=list)
    returns: list[tuple[datetime, tuple[str, ...]]] = field(default_factory=list)


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
