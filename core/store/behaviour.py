"""Behaviour events in the shared store: carts left, returns, browsing — with their items.

They are what a customer did (not what a message did, which :data:`events` holds): the
triggers of journeys (a cart left without an order, a return) and, for a ``return``, items
that no offer may show again. Every event has a dedup key (the caller's, or one derived from
its content), so a re-delivered webhook is stored once. A return's items reach the next
decision on every replica with the customer's history (:func:`core.store.queries.history_statement`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from core.store.db import Database
from core.store.records import (
    BEHAVIOUR_EVENTS,
    InvalidRecord,
    StoreIntegrityError,
    _finite,
    _set,
    as_utc,
    check_channel,
    check_str,
)
from core.store.schema import behaviour

__all__ = ["BehaviourLog", "BehaviourRecord"]


@dataclass(frozen=True, kw_only=True)
class BehaviourRecord:
    """One behaviour event: ``event`` of :data:`BEHAVIOUR_EVENTS`, its items (at least
    one), an optional value (a cart's or a return's) and channel (where it happened)."""

    customer_id: str
    ts: datetime
    event: str
    items: tuple[str, ...]
    dedup_key: str
    value: float | None = None
    channel: str | None = None

    def __post_init__(self) -> None:
        check_str("customer_id", self.customer_id)
        if self.event not in BEHAVIOUR_EVENTS:
            raise InvalidRecord(f"event must be one of {BEHAVIOUR_EVENTS}, got {self.event!r}")
        _set(self, "items", tuple(self.items))
        if not self.items:
            raise InvalidRecord(f"a {self.event} event needs its items")
        for i, item in enumerate(self.items):
            check_str(f"items[{i}]", item)
        check_str("dedup_key", self.dedup_key, 255)
        check_channel(self.channel, optional=True)
        _set(self, "ts", as_utc(self.ts))
        value = _finite("value", self.value, optional=True)
        if value is not None and value < 0:
            raise InvalidRecord(f"value must not be negative, got {value!r}")
        _set(self, "value", value)


class BehaviourLog:
    """The ``behaviour`` table of a store (:attr:`core.store.SqlContactStore.behaviour`)."""

    def __init__(self, db: Database):
        self._db = db

    def record(self, records: Sequence[BehaviourRecord]) -> tuple[int, int]:
        """Append a batch in one transaction; ``(inserted, duplicates)`` by dedup key."""
        if not records:
            return 0, 0
        tries = 1 if self._db.dialect == "sqlite" else 3  # a concurrent duplicate: retry
        for attempt in range(tries):
            try:
                return self._insert(records)
            except StoreIntegrityError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert(self, records: Sequence[BehaviourRecord]) -> tuple[int, int]:
        now = datetime.now(UTC)
        keys = sorted({r.dedup_key for r in records})
        with self._db.tx(write=True) as conn:
            seen = set(
                conn.scalars(
                    sa.select(behaviour.c.dedup_key).where(behaviour.c.dedup_key.in_(keys))
                )
            )
            rows = []
            for r in records:
                if r.dedup_key in seen:
                    continue
                seen.add(r.dedup_key)
                rows.append(
                    {
                        "customer_id": r.customer_id,
                        "ts": r.ts,
                        "event": r.event,
                        "channel": r.channel,
                        "items": json.dumps(list(r.items)),
                        "value": r.value,
                        "dedup_key": r.dedup_key,
                        "recorded_at": now,
                    }
                )
            if rows:
                conn.execute(behaviour.insert(), rows)
        return len(rows), len(records) - len(rows)

    def between(
        self, start: datetime, end: datetime, event: str | None = None
    ) -> list[BehaviourRecord]:
        """The events in ``[start, end)``, oldest first (what journey triggers read)."""
        q = sa.select(behaviour).where(
            behaviour.c.ts >= as_utc(start), behaviour.c.ts < as_utc(end)
        )
        if event is not None:
            q = q.where(behaviour.c.event == event)
        with self._db.tx() as conn:
            rows = conn.execute(q.order_by(behaviour.c.ts, behaviour.c.behaviour_id)).all()
        return [
            BehaviourRecord(
                customer_id=r.customer_id,
                ts=r.ts,
                event=r.event,
                items=tuple(json.loads(r.items)),
                dedup_key=r.dedup_key,
                value=r.value,
                channel=r.channel,
            )
            for r in rows
        ]
