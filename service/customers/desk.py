"""Customer data behind ``/customers``, ``/customers/unmerge``, ``/customers/erase`` and the
import CLI: profiles in, identity resolved, merges undone, customers erased.

A profile row is checked and normalised here (identifiers by :func:`core.identity.normalise`;
an error names the field, e.g. ``customers[3].identifiers.phone``), upserted and stitched by
the store (:meth:`core.store.ProfileStore.upsert`), and its consents are appended to the
consent log under the unified customer, each with its source and time — a re-import of the
same consent is stored once. Features and scores see a merge at the next snapshot (a
training run, or ``/reload`` with ``data``); decisions, caps and consents see it at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core.identity import InvalidIdentifier, normalise, profile_id
from core.store import ContactStore, ProfileRecord, UnknownMerge
from service.config import Settings
from service.customers.models import (
    CustomerIn,
    CustomersResponse,
    EraseResponse,
    MergeOut,
    SharedOut,
    UnmergeResponse,
)
from service.runtime.errors import Rejected, UnknownCustomer

__all__ = ["CustomerDesk", "RowError", "to_record"]


class RowError(ValueError):
    """A profile row that cannot be stored; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def to_record(c: CustomerIn, settings: Settings, where: str = "customer") -> ProfileRecord:
    """The store's record of one profile row, identifiers normalised (:class:`RowError`)."""
    ident = settings.identity
    ids = []
    for kind, raw in c.identifiers.items():
        try:
            ids.append((kind, normalise(kind, raw, ident.phone_region)))
        except InvalidIdentifier as exc:
            raise RowError(f"{where}.identifiers.{kind}", str(exc)) from None
    return ProfileRecord(
        profile_id=profile_id(
            c.source or ident.primary_source, c.customer_id, ident.primary_source
        ),
        source=c.source or ident.primary_source,
        identifiers=tuple(ids),
        locale=c.locale,
        timezone=c.timezone,
        country=c.country,
        birthday=c.birthday,
        name=c.name,
    )


def _consent_key(pid: str, channel: str, granted: bool, ts: datetime) -> str:
    text = f"profile|{pid}|{channel}|{granted}|{ts.isoformat()}"
    return "p:" + hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class CustomerDesk:
    """Profile upserts, merge undo and erasure over one store."""

    settings: Settings
    store: ContactStore

    def upsert(
        self, customers: Sequence[CustomerIn], now: datetime | None = None
    ) -> CustomersResponse:
        """Check every row first (:class:`Rejected` naming the field; nothing stored),
        then upsert, stitch and record the consents."""
        now = now or datetime.now(UTC)
        try:
            records = [
                to_record(c, self.settings, f"customers[{i}]") for i, c in enumerate(customers)
            ]
        except RowError as exc:
            raise Rejected(str(exc)) from None
        gone = self.store.profiles.erased([r.profile_id for r in records])
        for i, r in enumerate(records):
            if r.profile_id in gone:
                raise Rejected(
                    f"customers[{i}].customer_id: customer {r.profile_id!r} was erased; "
                    "an erased id is not reused"
                )
        return self.store_records(records, customers, now)

    def store_records(
        self, records: Sequence[ProfileRecord], customers: Sequence[CustomerIn], now: datetime
    ) -> CustomersResponse:
        """Upsert checked ``records`` (one per row of ``customers``) and their consents."""
        ident = self.settings.identity
        result = self.store.profiles.upsert(
            records, limit=ident.over_shared_limit, sources=ident.source_names, now=now
        )
        found = self.store.profiles.resolve([r.profile_id for r in records])
        recorded = 0
        for r, c in zip(records, customers, strict=True):
            for channel, given in c.consents.items():
                ts = given.ts or now
                recorded += self.store.set_consent(
                    found[r.profile_id],
                    channel,
                    given.granted,
                    ts,
                    given.source,
                    dedup_key=_consent_key(r.profile_id, channel, given.granted, ts),
                )
        return CustomersResponse(
            created=result.created,
            updated=result.updated,
            consents_recorded=recorded,
            customers=found,
            merges=[
                MergeOut(survivor=m.survivor, absorbed=m.absorbed, kind=m.kind)
                for m in result.merges
            ],
            over_shared=[
                SharedOut(kind=s.kind, value=s.value, profiles=s.profiles)
                for s in result.over_shared
            ],
        )

    def unmerge(self, merge_id: int, by: str) -> UnmergeResponse:
        """Undo a merge (:meth:`core.store.ProfileStore.undo`); 404 for an unknown one."""
        try:
            customers = self.store.profiles.undo(merge_id, by=by)
        except UnknownMerge as exc:
            raise UnknownCustomer(str(exc)) from None
        return UnmergeResponse(merge_id=merge_id, customers=customers)

    def erase(self, customer_id: str, reason: str, by: str) -> EraseResponse:
        """Erase the (already resolved) customer: :mod:`core.store.erasure`."""
        now = datetime.now(UTC)
        tombstone, rows = self.store.profiles.erase(customer_id, reason=reason, by=by, now=now)
        return EraseResponse(tombstone=tombstone, erased_at=now, rows=rows)
