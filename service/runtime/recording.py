"""``/events``: message events, purchases and consent changes, checked and then stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.store import ContactStore, DecisionRecord, EventRecord, InvalidRecord
from service.config import Settings
from service.engine import UnknownCampaign, campaign_by_id
from service.runtime.clock import aware
from service.runtime.errors import Rejected
from service.runtime.overlay import PurchaseOverlay
from service.runtime.population import PopulationCache
from service.schemas import ConsentIn, EventIn, EventsResponse

__all__ = ["EventRecorder"]

_FUNNEL_EVENTS = ("delivered", "opened", "clicked", "converted")  # follow a send


@dataclass
class EventRecorder:
    """Validates and stores events and consents; purchases reach the overlay, any event
    makes the population priors refresh."""

    settings: Settings
    store: ContactStore
    overlay: PurchaseOverlay
    population: PopulationCache

    def record(self, events: Sequence[EventIn], consents: Sequence[ConsentIn]) -> EventsResponse:
        """Validate everything first, then append events (one transaction) and consents."""
        now = datetime.now(UTC)
        records: list[EventRecord] = []
        try:
            for i, e in enumerate(events):
                if e.item_ids and e.event != "purchase":
                    raise Rejected(f"events[{i}]: item_ids are only allowed on purchase events")
                records.append(
                    EventRecord(
                        customer_id=e.customer_id,
                        ts=aware(e.ts, self.settings, default=now),
                        event=e.event,
                        channel=e.channel,
                        campaign_id=e.campaign_id,
                        decision_id=e.decision_id,
                        value=e.value,
                        dedup_key=e.dedup_key,
                    )
                )
            pairs, repeated = self._checked(events, records)
            consent_rows = [
                (
                    c.customer_id,
                    c.channel,
                    c.granted,
                    aware(c.ts, self.settings, default=now),
                    c.source,
                )
                for c in consents
            ]
        except InvalidRecord as exc:
            raise Rejected(str(exc)) from None
        records = [rec for _, rec in pairs]
        inserted, duplicates = self.store.record_events(records) if records else (0, 0)
        for row in consent_rows:
            self.store.set_consent(*row)
        for e, rec in pairs:
            if e.event == "purchase":
                self.overlay.note(e.customer_id, rec.ts, e.item_ids)
        if records:
            self.population.events_recorded()
        return EventsResponse(
            inserted=inserted, duplicates=duplicates + repeated, consents=len(consent_rows)
        )

    def _checked(
        self, events: Sequence[EventIn], records: Sequence[EventRecord]
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
        for i, (e, r) in enumerate(zip(events, records, strict=True)):
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
