"""``/events``: message events, purchases and consent changes, checked and then stored."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.store import (
    BEHAVIOUR_EVENTS,
    BehaviourRecord,
    ContactStore,
    DecisionRecord,
    EventRecord,
    InvalidRecord,
)
from service.config import Settings
from service.engine import UnknownCampaign, campaign_by_id
from service.runtime.clock import aware
from service.runtime.errors import Rejected
from service.runtime.population import PopulationCache
from service.schemas import ConsentIn, EventIn, EventsResponse

__all__ = ["EventRecorder", "consent_key", "event_key"]

_FUNNEL_EVENTS = ("delivered", "opened", "clicked", "converted")  # follow a send


@dataclass
class EventRecorder:
    """Validates and stores events (a purchase with its items, which every replica's next
    decision reads, and the loyalty points it earns) and consents; any event makes the
    population priors refresh."""

    settings: Settings
    store: ContactStore
    population: PopulationCache

    def record(self, events: Sequence[EventIn], consents: Sequence[ConsentIn]) -> EventsResponse:
        """Validate everything first, then append events (one transaction) and consents.

        Every event gets a dedup key (a purchase: its ``order_id``; otherwise the caller's
        ``dedup_key`` or one derived from the content), so a re-delivered batch is stored
        once; consents likewise (:func:`consent_key`, or "no change" without ``ts``).
        """
        now = datetime.now(UTC)
        limits = self.settings.events
        latest = now + timedelta(seconds=limits.future_tolerance_seconds)
        records: list[EventRecord] = []
        behaviour: list[BehaviourRecord] = []
        message_events: list[EventIn] = []
        positions: list[int] = []  # each message event's index in the request
        try:
            for i, e in enumerate(events):
                _check_event(f"events[{i}]", e, limits.max_purchase_value)
                ts = aware(e.ts, self.settings, default=now)
                _check_not_future(f"events[{i}].ts", ts, latest, limits.future_tolerance_seconds)
                if e.event in BEHAVIOUR_EVENTS:
                    behaviour.append(
                        BehaviourRecord(
                            customer_id=e.customer_id,
                            ts=ts,
                            event=e.event,
                            items=tuple(e.item_ids),
                            dedup_key=e.dedup_key or event_key(e, ts),
                            value=e.value,
                            channel=e.channel,
                        )
                    )
                    continue
                message_events.append(e)
                positions.append(i)
                records.append(
                    EventRecord(
                        customer_id=e.customer_id,
                        ts=ts,
                        event=e.event,
                        channel=e.channel,
                        campaign_id=e.campaign_id,
                        decision_id=e.decision_id,
                        value=e.value,
                        dedup_key=e.order_id or e.dedup_key or event_key(e, ts),
                        items=tuple(e.item_ids),
                    )
                )
            pairs, repeated = self._checked(message_events, records, positions)
            consent_rows = []
            for i, c in enumerate(consents):
                ts = aware(c.ts, self.settings, default=now)
                _check_not_future(f"consents[{i}].ts", ts, latest, limits.future_tolerance_seconds)
                consent_rows.append((c, ts))
        except InvalidRecord as exc:
            raise Rejected(str(exc)) from None
        records = [rec for _, rec in pairs]
        inserted, duplicates = self.store.record_events(records) if records else (0, 0)
        earned = self._earn(records)
        more, again = self.store.behaviour.record(behaviour)
        inserted, duplicates = inserted + more, duplicates + again
        stored_consents = 0
        for c, ts in consent_rows:
            stored_consents += self.store.set_consent(
                c.customer_id,
                c.channel,
                c.granted,
                ts,
                c.source,
                dedup_key=None if c.ts is None else consent_key(c, ts),
                if_changed=c.ts is None,
            )
        if records:
            self.population.events_recorded()
        return EventsResponse(
            inserted=inserted,
            duplicates=duplicates + repeated,
            consents=stored_consents,
            consent_duplicates=len(consent_rows) - stored_consents,
            points_earned=earned,
        )

    def _earn(self, records: Sequence[EventRecord]) -> int:
        """Points earned by the purchases among ``records`` (``loyalty`` earn rule), keyed by
        the order id: a re-delivered order earns nothing more, and one whose earn was lost
        (the event stored, the process gone) earns when it is posted again."""
        rule, ledger, earned = self.settings.loyalty.rule, self.store.points, 0
        for r in records:
            if r.event == "purchase" and r.value is not None and r.dedup_key is not None:
                earned += ledger.earn(r.customer_id, r.value, r.ts, r.dedup_key, rule)
        return earned

    def _checked(
        self, events: Sequence[EventIn], records: Sequence[EventRecord], positions: Sequence[int]
    ) -> tuple[list[tuple[EventIn, EventRecord]], int]:
        """Check a batch against the stored decisions; drop events repeated in the batch.

        Rejected (naming ``events[i].field``): an unknown campaign (not configured and not the
        campaign of the referenced decision); a ``decision_id`` of another customer or
        campaign, or of a hold-out decision for a message event (never sent); an event before
        the decision it references was made; ``delivered/opened/clicked/converted`` before
        the decision's first ``sent`` (stored or in this batch). Decision ids the store does
        not know (sends made elsewhere) are accepted. Returns the kept pairs and how many
        identical repeats were dropped.
        """
        known = self.store.get_decisions(r.decision_id for r in records if r.decision_id)
        first_sent: dict[str, datetime] = {}
        seen: set[tuple] = set()
        kept: list[tuple[int, EventIn, EventRecord]] = []
        for i, e, r in zip(positions, events, records, strict=True):  # i: index in the request
            d = known.get(r.decision_id) if r.decision_id is not None else None
            if r.campaign_id is not None and (d is None or d.campaign_id != r.campaign_id):
                try:
                    campaign_by_id(self.settings, r.campaign_id)
                except UnknownCampaign as exc:
                    raise UnknownCampaign(f"events[{i}].campaign_id: {exc.args[0]}") from None
            if d is not None:
                _check_against_decision(f"events[{i}]", r, d)
            if r.decision_id is not None and r.event == "sent":
                prev = first_sent.get(r.decision_id)
                first_sent[r.decision_id] = r.ts if prev is None else min(prev, r.ts)
            key = (r, tuple(e.item_ids))
            if key in seen:
                continue
            seen.add(key)
            kept.append((i, e, r))
        funnel = [(i, r) for i, _, r in kept if r.decision_id and r.event in _FUNNEL_EVENTS]
        stored = self.store.first_sends(r.decision_id for _, r in funnel) if funnel else {}
        for i, r in funnel:
            sends = (stored.get((r.customer_id, r.decision_id)), first_sent.get(r.decision_id))
            candidates = [t for t in sends if t]
            if candidates and r.ts < min(candidates):
                raise Rejected(
                    f"events[{i}].ts: {r.event} at {r.ts.isoformat()} is before decision "
                    f"{r.decision_id!r} was sent ({min(candidates).isoformat()}): "
                    "events out of order"
                )
        return [(e, r) for _, e, r in kept], len(events) - len(kept)


def _check_event(where: str, e: EventIn, max_value: float) -> None:
    """:class:`Rejected` naming the field: a purchase without ``order_id`` or ``ts``, or with
    a ``dedup_key``; an ``order_id`` or ``item_ids`` on another event; a ``value`` that is
    not a finite number in ``[0, max_value]``."""
    if e.event in BEHAVIOUR_EVENTS:
        if not e.item_ids:
            raise Rejected(f"{where}.item_ids: a {e.event} event needs its items")
        for name in ("order_id", "campaign_id", "decision_id"):
            if getattr(e, name) is not None:
                raise Rejected(f"{where}.{name}: not allowed on a {e.event} event")
    elif e.event == "purchase":
        if e.order_id is None:
            raise Rejected(
                f"{where}.order_id: a purchase needs the shop's order id (its dedup key: "
                "a re-posted order is stored once)"
            )
        if e.dedup_key is not None:
            raise Rejected(
                f"{where}.dedup_key: not allowed on a purchase; send the order id as order_id "
                "(it is the purchase's dedup key)"
            )
        if e.ts is None:
            raise Rejected(
                f"{where}.ts: a purchase needs the time the order was placed (it is never "
                "stamped with the server clock)"
            )
    else:
        if e.order_id is not None:
            raise Rejected(f"{where}.order_id: only purchase events carry an order_id")
        if e.item_ids:
            raise Rejected(
                f"{where}: item_ids are only allowed on purchase and behaviour events "
                f"({', '.join(BEHAVIOUR_EVENTS)})"
            )
    if e.value is not None and not (math.isfinite(e.value) and 0.0 <= e.value <= max_value):
        raise Rejected(
            f"{where}.value: {e.value!r} is outside [0, {max_value:g}] (events.max_purchase_value)"
        )


def _check_not_future(where: str, ts: datetime, latest: datetime, tolerance: float) -> None:
    if ts > latest:
        raise Rejected(
            f"{where}: {ts.isoformat()} is later than the server clock plus "
            f"{tolerance:g} s (events.future_tolerance_seconds; latest accepted "
            f"{latest.isoformat(timespec='seconds')})"
        )


def _digest(fields: dict[str, object]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def event_key(e: EventIn, ts: datetime) -> str:
    """The dedup key of an event posted without one: ``sha256:`` + the hex digest of its
    content as canonical JSON (the time only when the caller gave it, as UTC), so the same
    event delivered again gets the same key and is stored once."""
    fields: dict[str, object] = {
        "customer_id": e.customer_id,
        "event": e.event,
        "channel": e.channel,
        "campaign_id": e.campaign_id,
        "decision_id": e.decision_id,
        "value": e.value,
        "item_ids": list(e.item_ids),
    }
    if e.ts is not None:
        fields["ts"] = ts.isoformat()
    return _digest(fields)


def consent_key(c: ConsentIn, ts: datetime) -> str:
    """The dedup key of a consent with a caller-given ``ts``: (customer, channel, granted,
    ts as UTC, source) as canonical JSON, hashed like :func:`event_key`."""
    return _digest(
        {
            "customer_id": c.customer_id,
            "channel": c.channel,
            "granted": c.granted,
            "ts": ts.isoformat(),
            "source": c.source,
        }
    )


def _check_against_decision(where: str, r: EventRecord, d: DecisionRecord) -> None:
    """:class:`Rejected` if the event cannot belong to the stored decision ``d``: another
    customer or campaign, a message event of a hold-out, or a time before the decision."""
    if d.customer_id != r.customer_id:
        raise Rejected(
            f"{where}.decision_id: decision {d.decision_id!r} is for customer "
            f"{d.customer_id!r}, not {r.customer_id!r}"
        )
    if r.campaign_id is not None and r.campaign_id != d.campaign_id:
        raise Rejected(
            f"{where}.campaign_id: {r.campaign_id!r} but decision "
            f"{d.decision_id!r} belongs to campaign {d.campaign_id!r}"
        )
    if d.holdout and r.event in ("sent", *_FUNNEL_EVENTS):
        raise Rejected(
            f"{where}.decision_id: decision {d.decision_id!r} is a hold-out "
            f"(control group, never sent): it cannot have a {r.event!r} event"
        )
    if r.ts < d.ts:
        raise Rejected(
            f"{where}.ts: {r.event} at {r.ts.isoformat()} is before decision "
            f"{d.decision_id!r} was made ({d.ts.isoformat()}): events out of order"
        )
