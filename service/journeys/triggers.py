"""Who enters which journey in a window of time ``[start, end)`` (the agent's intake).

Behaviour triggers read the store: ``cart_abandoned``, ``return`` and ``browse`` from the
behaviour table, ``purchase`` from the purchase events (its order id is the trigger key, so
a re-delivered order never enrols twice). Time triggers read the served snapshot, vectorised
over every customer: N days after the first or last order (from ``tenure_days`` and
``recency_days``), days before the expected next order (the next-purchase model), entering
a lifecycle stage (:func:`features.lifecycle.stage_after` at both ends of the window: the
recency rules moving a customer on), a named holiday's date in its own time zone, and the
birthday of a stored profile (:meth:`core.store.ProfileStore.birthdays`). The points trigger
reads the ledger: customers whose unspent points expire ``days_before`` after the window
(:meth:`core.store.PointsLedger.expiring_between`), keyed by the expiry date.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.store import ContactStore
from features.lifecycle import stage_after
from service.journeys.config import (
    EventTrigger,
    FactTrigger,
    HolidayTrigger,
    Journey,
    PointsTrigger,
    StageTrigger,
)
from service.runtime.state import State

__all__ = ["Entry", "entries"]


@dataclass(frozen=True)
class Entry:
    """A customer triggered a journey at ``at``; ``trigger_key`` names the occasion (an
    order id, a cart's key, a date), so the same occasion enrols once."""

    journey_id: str
    customer_id: str
    trigger_key: str
    at: datetime
    context: dict[str, Any] = field(default_factory=dict)


def entries(
    journeys: Sequence[Journey],
    store: ContactStore,
    state: State,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[Entry]:
    """Every trigger of ``journeys`` that fired in ``[start, end)``, in time order."""
    out: list[Entry] = []
    events = _Events(store, start, end)
    for journey in journeys:
        trig = journey.trigger
        if isinstance(trig, EventTrigger):
            out += events.entries(journey.id, trig)
        elif isinstance(trig, FactTrigger) and trig.fact == "birthday":
            birthdays = store.profiles.birthdays()
            out += _birthday_entries(journey.id, trig, birthdays, state, zone, start, end)
        elif isinstance(trig, FactTrigger):
            out += _fact_entries(journey.id, trig, state, zone, start, end)
        elif isinstance(trig, StageTrigger):
            out += _stage_entries(journey.id, trig, state, start, end)
        elif isinstance(trig, HolidayTrigger):
            out += _holiday_entries(journey.id, trig, state, start, end)
        elif isinstance(trig, PointsTrigger):
            out += _points_entries(journey.id, trig, store, start, end)
    return sorted(out, key=lambda e: (e.at, e.journey_id, e.customer_id))


class _Events:
    """The window's behaviour and purchase events, read once for every event journey."""

    def __init__(self, store: ContactStore, start: datetime, end: datetime):
        self._store, self._start, self._end = store, start, end
        self._behaviour: list | None = None
        self._purchases: pd.DataFrame | None = None

    def entries(self, journey_id: str, trig: EventTrigger) -> Iterator[Entry]:
        floor = trig.min_value
        if trig.event == "purchase":
            if self._purchases is None:
                self._purchases = self._store.events_between(
                    self._start, self._end, event="purchase"
                )
            for r in self._purchases.itertuples(index=False):
                value = None if pd.isna(r.value) else float(r.value)
                if floor is not None and (value is None or value < floor):
                    continue
                items = json.loads(r.items) if isinstance(r.items, str) else []
                ctx = {"items": items, "value": value, "event": "purchase"}
                yield Entry(journey_id, r.customer_id, str(r.dedup_key), _utc(r.ts), ctx)
            return
        if self._behaviour is None:
            self._behaviour = self._store.behaviour.between(self._start, self._end)
        for b in self._behaviour:
            if b.event != trig.event or (floor is not None and (b.value or 0.0) < floor):
                continue
            ctx = {"items": list(b.items), "value": b.value, "event": b.event}
            yield Entry(journey_id, b.customer_id, b.dedup_key, b.ts, ctx)


def _utc(ts: Any) -> datetime:
    return pd.Timestamp(ts).tz_convert(UTC).to_pydatetime()


def _local_moments(days: pd.Series, zone: ZoneInfo, at_local: time) -> pd.Series:
    """UTC moments ``at_local`` on the local dates of ``days`` (UTC timestamps)."""
    local = days.dt.tz_convert(zone).dt.normalize().dt.tz_localize(None)
    local = local + pd.Timedelta(hours=at_local.hour, minutes=at_local.minute)
    return local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward").dt.tz_convert(
        UTC
    )


def _fact_entries(
    journey_id: str, trig: FactTrigger, state: State, zone: ZoneInfo, start: datetime, end: datetime
) -> list[Entry]:
    """Customers whose fact + ``days`` (at ``at_local``) falls in the window."""
    snap = state.snapshot
    at = pd.Timestamp(snap.at)
    if trig.fact == "first_order":
        base = at - pd.to_timedelta(snap.features["tenure_days"].to_numpy(float), unit="D")
    elif trig.fact == "last_order":
        base = at - pd.to_timedelta(snap.features["recency_days"].to_numpy(float), unit="D")
    elif trig.fact == "expected_next_order":
        base = at + pd.to_timedelta(state.score_values[:, 2], unit="D")
    else:
        raise ValueError(f"{trig.fact}: not a snapshot fact")
    moments = _local_moments(pd.Series(base + pd.Timedelta(days=trig.days)), zone, trig.at_local)
    hit = ((moments >= start) & (moments < end)).to_numpy()
    ids = snap.features.index.astype(str).to_numpy()
    return [
        Entry(journey_id, ids[i], f"{trig.fact}:{moments.iloc[i].date()}", moments.iloc[i])
        for i in np.flatnonzero(hit)
    ]


def _birthday_entries(
    journey_id: str,
    trig: FactTrigger,
    birthdays: dict[str, date],
    state: State,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[Entry]:
    """Customers of the snapshot whose birthday (stored profile; 29 February is kept on
    28 February in a common year) + ``days``, at ``at_local``, falls in the window."""
    known = state.snapshot.positions
    out: list[Entry] = []
    lead = timedelta(days=trig.days)
    for year in range(start.year - 1, end.year + 2):
        for cid, born in birthdays.items():
            if cid not in known:
                continue
            day = (
                born.replace(year=year, day=28)
                if (born.month, born.day) == (2, 29) and not calendar.isleap(year)
                else born.replace(year=year)
            )
            moment = datetime.combine(day + lead, trig.at_local, zone).astimezone(UTC)
            if start <= moment < end:
                out.append(Entry(journey_id, cid, f"birthday:{year}", moment))
    return out


def _stage_entries(
    journey_id: str, trig: StageTrigger, state: State, start: datetime, end: datetime
) -> list[Entry]:
    """Customers the recency rules move into ``trig.stage`` within the window."""
    snap = state.snapshot
    d0 = (start - snap.at).total_seconds() / 86400.0
    d1 = (end - snap.at).total_seconds() / 86400.0
    if d1 <= 0:
        return []
    before = stage_after(snap.features, max(d0, 0.0))
    after = stage_after(snap.features, d1)
    hit = (after == trig.stage) & (before != trig.stage) & np.isin(state.tier, trig.tiers)
    ids = snap.features.index.astype(str).to_numpy()
    key = f"stage:{trig.stage}:{end.date()}"
    return [Entry(journey_id, ids[i], key, end, {"stage": trig.stage}) for i in np.flatnonzero(hit)]


def _holiday_entries(
    journey_id: str, trig: HolidayTrigger, state: State, start: datetime, end: datetime
) -> list[Entry]:
    """Every customer, ``days_before`` the holiday at ``at_local`` in its time zone."""
    zone = ZoneInfo(trig.timezone)
    out: list[Entry] = []
    ids = state.snapshot.features.index.astype(str)
    for year in range(start.year, end.year + 1):
        try:
            day = datetime(year, trig.month, trig.day, tzinfo=zone)
        except ValueError:  # 29 February in a common year
            continue
        moment = datetime.combine(
            (day - timedelta(days=trig.days_before)).date(), trig.at_local, zone
        ).astimezone(UTC)
        if start <= moment < end:
            key = f"holiday:{trig.holiday}:{year}"
            out += [Entry(journey_id, cid, key, moment) for cid in ids]
    return out


def _points_entries(
    journey_id: str, trig: PointsTrigger, store: ContactStore, start: datetime, end: datetime
) -> list[Entry]:
    """Customers with at least ``min_points`` unspent points expiring in ``[start, end) +
    days_before``; each enters ``days_before`` ahead of that expiry (the agent's admission
    then leaves out customers the snapshot lacks, as for every trigger)."""
    lead = timedelta(days=trig.days_before)
    out: list[Entry] = []
    for hit in store.points.expiring_between(start + lead, end + lead):
        if hit.points < trig.min_points:
            continue
        ctx = {"points": hit.points, "expires_at": hit.expires_at.isoformat()}
        key = f"points:{hit.expires_at.date().isoformat()}"
        out.append(Entry(journey_id, hit.customer_id, key, hit.expires_at - lead, ctx))
    return out
