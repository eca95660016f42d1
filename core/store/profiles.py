"""Stored customer profiles and identity resolution (:mod:`core.identity` applied to a store).

A profile is one source's record of a person (see :mod:`core.identity`); the store keeps its
facts (locale, timezone, country, birthday, name) and normalised identifiers, and which
unified customer it belongs to. :meth:`ProfileStore.upsert` stitches as it writes, under one
lock, so two replicas importing at once cannot split a customer. Every merge is an audit row
(what joined what, on which identifier, when) and can be undone; an undone pair is never
joined again. :meth:`ProfileStore.resolve` turns any reference — a customer id, a source's
profile id, or ``kind:value`` such as ``email:ann@example.com`` — into the unified customer.

Facts of a customer with several profiles combine by recency: for each field, the most
recently updated profile that has it wins (a later import corrects an earlier one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.identity import (
    IDENTIFIER_KINDS,
    STITCH_KINDS,
    Merge,
    Shared,
    erasure_hash,
    split_ref,
    stitch,
)
from core.store.db import Conn, Database
from core.store.erasure import erase, new_tombstone
from core.store.queries import consent_state, consent_statement
from core.store.records import InvalidRecord, StoreError, check_str
from core.store.schema import (
    consents,
    erased_ids,
    identifiers,
    merges,
    profiles,
    shared_identifiers,
)

__all__ = [
    "AmbiguousIdentifier",
    "ErasedCustomer",
    "ProfileRecord",
    "ProfileStore",
    "StoredProfile",
    "UnknownMerge",
    "UpsertResult",
]

FACTS = ("locale", "timezone", "country", "birthday", "name")
_CHUNK = 500  # values per IN (...) list
_LOCK = "identity"

# One customer's reads on the decision path, compiled once (Database.rows runs them on the
# pinned SQLite connection of Database.hot_tx, or on any connection).
_ERASED_ONE = sa.select(erased_ids.c.id_hash).where(erased_ids.c.id_hash == sa.bindparam("h"))
_CUSTOMER_OF = sa.select(profiles.c.customer_id).where(
    profiles.c.profile_id == sa.bindparam("profile_id")
)
_HOLDERS = (
    sa.select(profiles.c.customer_id)
    .distinct()
    .join(identifiers, identifiers.c.profile_id == profiles.c.profile_id)
    .where(identifiers.c.kind == sa.bindparam("kind"), identifiers.c.value == sa.bindparam("v"))
)
_PROFILES_OF = sa.select(profiles).where(profiles.c.customer_id == sa.bindparam("customer_id"))
_IDENTIFIERS_OF = (
    sa.select(identifiers)
    .join(profiles, identifiers.c.profile_id == profiles.c.profile_id)
    .where(profiles.c.customer_id == sa.bindparam("customer_id"))
)


class AmbiguousIdentifier(StoreError):
    """An identifier reference names more than one customer (it is over-shared)."""


class ErasedCustomer(StoreError):
    """The reference names a customer who was erased (:mod:`core.store.erasure`)."""


class UnknownMerge(StoreError):
    """No merge with that id, or it was already undone."""


@dataclass(frozen=True, kw_only=True)
class ProfileRecord:
    """One source's record of a person, identifiers already normalised
    (:func:`core.identity.normalise`); a fact left None keeps the stored value."""

    profile_id: str
    source: str
    identifiers: tuple[tuple[str, str], ...] = ()
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None
    birthday: date | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        check_str("profile_id", self.profile_id)
        check_str("source", self.source, 64)
        for kind, value in self.identifiers:
            if kind not in IDENTIFIER_KINDS:
                raise InvalidRecord(f"identifier kind must be one of {IDENTIFIER_KINDS}: {kind!r}")
            check_str(f"identifiers.{kind}", value, 256)

    def facts(self) -> dict[str, str]:
        out = {f: getattr(self, f) for f in FACTS if getattr(self, f) is not None}
        if self.birthday is not None:
            out["birthday"] = self.birthday.isoformat()
        return out


@dataclass(frozen=True)
class StoredProfile:
    """A unified customer's profile: its members' facts combined (newest wins) and every
    identifier (per kind, the most recently recorded first)."""

    customer_id: str
    members: tuple[str, ...]
    identifiers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    locale: str | None = None
    timezone: str | None = None
    country: str | None = None
    birthday: date | None = None
    name: str | None = None


@dataclass
class UpsertResult:
    """What one upsert did."""

    created: int = 0
    updated: int = 0
    merges: list[Merge] = field(default_factory=list)
    over_shared: list[Shared] = field(default_factory=list)


def _chunks(values: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(values), n):
        yield values[i : i + n]


class ProfileStore:
    """The profile and identity tables of a store (:attr:`SqlContactStore.profiles`)."""

    def __init__(self, db: Database):
        self._db = db

    # -- writes ---------------------------------------------------------------------------
    def upsert(
        self,
        records: Sequence[ProfileRecord],
        *,
        limit: int,
        sources: Sequence[str] = (),
        now: datetime | None = None,
    ) -> UpsertResult:
        """Create or update profiles and their identifiers, then stitch: profiles sharing an
        identifier of :data:`STITCH_KINDS` held by fewer than ``limit`` profiles join one
        customer (survivor by ``sources`` rank, :func:`core.identity.stitch`)."""
        if limit < 2:
            raise InvalidRecord(f"limit must be at least 2, got {limit}")
        now = now or datetime.now(UTC)
        by_id: dict[str, ProfileRecord] = {}
        for r in records:  # the last record of a profile in the batch wins
            by_id[r.profile_id] = r
        out = UpsertResult()
        with self._db.tx(write=True, lock=_LOCK) as conn:
            out.created, out.updated = self._write_profiles(conn, list(by_id.values()), now)
            touched = sorted(
                {(k, v) for r in by_id.values() for k, v in r.identifiers if k in STITCH_KINDS}
            )
            self._stitch(conn, touched, limit, sources, now, out)
        return out

    def _write_profiles(
        self, conn: Connection, records: list[ProfileRecord], now: datetime
    ) -> tuple[int, int]:
        ids = [r.profile_id for r in records]
        stored: set[str] = set()
        known: set[tuple[str, str, str]] = set()
        for part in _chunks(ids):
            stored |= set(
                conn.scalars(
                    sa.select(profiles.c.profile_id).where(profiles.c.profile_id.in_(part))
                )
            )
            q = sa.select(identifiers.c.kind, identifiers.c.value, identifiers.c.profile_id)
            known |= {tuple(r) for r in conn.execute(q.where(identifiers.c.profile_id.in_(part)))}
        new = [
            {"profile_id": r.profile_id, "source": r.source, "customer_id": r.profile_id}
            | {f: None for f in FACTS}
            | r.facts()
            | {"created_at": now, "updated_at": now}
            for r in records
            if r.profile_id not in stored
        ]
        if new:
            conn.execute(profiles.insert(), new)
        for r in records:
            if r.profile_id in stored:
                conn.execute(
                    profiles.update()
                    .where(profiles.c.profile_id == r.profile_id)
                    .values(**r.facts(), updated_at=now)
                )
        rows = [
            {"kind": k, "value": v, "profile_id": r.profile_id, "recorded_at": now}
            for r in records
            for k, v in dict.fromkeys(r.identifiers)
            if (k, v, r.profile_id) not in known
        ]
        if rows:
            conn.execute(identifiers.insert(), rows)
        return len(new), len(records) - len(new)

    def _stitch(
        self,
        conn: Connection,
        touched: Sequence[tuple[str, str]],
        limit: int,
        sources: Sequence[str],
        now: datetime,
        out: UpsertResult,
    ) -> None:
        """Stitch the profiles holding any of the ``touched`` identifiers."""
        links: list[tuple[str, str, str]] = []
        by_kind: dict[str, list[str]] = {}
        for k, v in touched:
            by_kind.setdefault(k, []).append(v)
        for kind, values in by_kind.items():
            for part in _chunks(values):
                q = sa.select(identifiers.c.profile_id, identifiers.c.kind, identifiers.c.value)
                q = q.where(identifiers.c.kind == kind, identifiers.c.value.in_(part))
                links += [tuple(r) for r in conn.execute(q)]
        pids = sorted({p for p, _, _ in links})
        current = self._customers_of(conn, pids)
        blocked = conn.execute(
            sa.select(merges.c.survivor, merges.c.absorbed).where(merges.c.undone_at.is_not(None))
        ).all()
        result = stitch(
            links,
            limit=limit,
            sources=sources,
            current=current,
            blocked=[tuple(b) for b in blocked],
        )
        for m in result.merges:
            conn.execute(
                profiles.update()
                .where(profiles.c.customer_id == m.absorbed)
                .values(customer_id=m.survivor, updated_at=now)
            )
            conn.execute(
                merges.insert().values(
                    survivor=m.survivor,
                    absorbed=m.absorbed,
                    kind=m.kind,
                    value=m.value,
                    reason=f"shared {m.kind}",
                    at=now,
                )
            )
            _carry_consents(conn, m, now)
        for s in result.over_shared:
            key = (shared_identifiers.c.kind == s.kind) & (shared_identifiers.c.value == s.value)
            conn.execute(shared_identifiers.delete().where(key))
            conn.execute(
                shared_identifiers.insert().values(
                    kind=s.kind, value=s.value, profiles=s.profiles, seen_at=now
                )
            )
        out.merges += result.merges
        out.over_shared += result.over_shared

    def undo(self, merge_id: int, by: str, now: datetime | None = None) -> list[str]:
        """Undo a merge: the customer it made splits back into the clusters its remaining
        (not undone) merges join, and the pair is never joined again. Returns the customer
        ids the old customer's profiles now belong to."""
        now = now or datetime.now(UTC)
        with self._db.tx(write=True, lock=_LOCK) as conn:
            row = conn.execute(sa.select(merges).where(merges.c.merge_id == merge_id)).first()
            if row is None or row.undone_at is not None:
                raise UnknownMerge(f"merge {merge_id} does not exist or is already undone")
            conn.execute(
                merges.update()
                .where(merges.c.merge_id == merge_id)
                .values(undone_at=now, undone_by=by[:255])
            )
            customer = self._customers_of(conn, [row.survivor]).get(row.survivor, row.survivor)
            members = list(
                conn.scalars(
                    sa.select(profiles.c.profile_id).where(profiles.c.customer_id == customer)
                )
            )
            active = conn.execute(
                sa.select(merges.c.survivor, merges.c.absorbed)
                .where(
                    merges.c.undone_at.is_(None),
                    merges.c.survivor.in_(members),
                    merges.c.absorbed.in_(members),
                )
                .order_by(merges.c.merge_id)
            ).all()
            parent = {p: p for p in members}

            def find(c: str) -> str:
                while parent[c] != c:
                    c = parent[c]
                return c

            for survivor, absorbed in active:  # replay the merges that stand, in order
                parent[find(absorbed)] = find(survivor)
            for p in members:
                conn.execute(
                    profiles.update()
                    .where(profiles.c.profile_id == p)
                    .values(customer_id=find(p), updated_at=now)
                )
        return sorted({find(p) for p in members})

    # -- reads ----------------------------------------------------------------------------
    @staticmethod
    def _customers_of(conn: Connection, pids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(list(pids)):
            q = sa.select(profiles.c.profile_id, profiles.c.customer_id)
            out |= dict(conn.execute(q.where(profiles.c.profile_id.in_(part))).all())
        return out

    @staticmethod
    def _erased(conn: Connection, ids: Sequence[str]) -> set[str]:
        hashes = {erasure_hash(i): i for i in ids}
        found: set[str] = set()
        for part in _chunks(list(hashes)):
            q = sa.select(erased_ids.c.id_hash).where(erased_ids.c.id_hash.in_(part))
            found |= {hashes[h] for h in conn.scalars(q)}
        return found

    def erased(self, ids: Sequence[str]) -> set[str]:
        """The ones of ``ids`` (customer or profile ids) that were erased: an erased id is
        never reused, so an upsert refuses it."""
        with self._db.tx() as conn:
            return self._erased(conn, ids)

    def resolve(self, refs: Sequence[str]) -> dict[str, str]:
        """The unified customer of each reference: ``kind:value`` (an identifier), a
        profile id, or a customer id. A reference the store does not know is its own
        customer (a customer of the transaction log without a profile). Raises
        :class:`ErasedCustomer` for an erased id and :class:`AmbiguousIdentifier` for an
        identifier held by several customers. One reference (a decision's) is read on the
        decision path's transaction, several in chunked queries."""
        if len(refs) == 1:
            with self._db.hot_tx() as conn:
                return {refs[0]: self._resolve_one(conn, refs[0])}
        out: dict[str, str] = {}
        named = {r: split_ref(r) for r in refs}
        plain = [r for r, kv in named.items() if kv is None]
        with self._db.tx() as conn:
            gone = self._erased(conn, plain)
            if gone:
                raise ErasedCustomer(f"customer {min(gone)!r} was erased")
            out |= self._customers_of(conn, plain)
            for ref, kv in named.items():
                if kv is not None:
                    out[ref] = self._holder(conn, kv) or ref
        return {r: out.get(r, r) for r in refs}

    def _resolve_one(self, conn: Conn, ref: str) -> str:
        kv = split_ref(ref)
        if kv is not None:
            return self._holder(conn, kv) or ref
        if self._db.rows(conn, _ERASED_ONE, {"h": erasure_hash(ref)}):
            raise ErasedCustomer(f"customer {ref!r} was erased")
        found = self._db.rows(conn, _CUSTOMER_OF, {"profile_id": ref})
        return found[0].customer_id if found else ref

    def _holder(self, conn: Conn, kv: tuple[str, str]) -> str | None:
        """The one customer holding identifier ``kv`` (None: nobody)."""
        found = self._db.rows(conn, _HOLDERS, {"kind": kv[0], "v": kv[1]})
        if len(found) > 1:
            raise AmbiguousIdentifier(
                f"{kv[0]} {kv[1]!r} is held by {len(found)} customers; name one by id"
            )
        return found[0].customer_id if found else None

    def members(self, customer_id: str) -> list[str]:
        """The profile ids of a unified customer (empty when it has no stored profile)."""
        with self._db.tx() as conn:
            q = sa.select(profiles.c.profile_id).where(profiles.c.customer_id == customer_id)
            return sorted(conn.scalars(q))

    def get(self, customer_id: str) -> StoredProfile | None:
        """The customer's combined profile (module docstring), or None without one (read
        on the decision path's transaction)."""
        key = {"customer_id": customer_id}
        with self._db.hot_tx() as conn:
            rows = self._db.rows(conn, _PROFILES_OF, key)
            ids = self._db.rows(conn, _IDENTIFIERS_OF, key) if rows else []
        return _combine(rows, ids).get(customer_id)

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredProfile]:
        """:meth:`get` for many customers in two queries per chunk (batch pages)."""
        rows: list = []
        ids: list = []
        with self._db.tx() as conn:
            for part in _chunks(sorted(set(customer_ids))):
                found = conn.execute(
                    sa.select(profiles).where(profiles.c.customer_id.in_(part))
                ).all()
                rows += found
                pids = [r.profile_id for r in found]
                for sub in _chunks(pids):
                    q = sa.select(identifiers).where(identifiers.c.profile_id.in_(sub))
                    ids += conn.execute(q).all()
        return _combine(rows, ids)

    def identity_map(self) -> dict[str, str]:
        """Every profile that belongs to another customer → that customer (what the
        feature build applies to the transaction sources)."""
        with self._db.tx() as conn:
            q = sa.select(profiles.c.profile_id, profiles.c.customer_id).where(
                profiles.c.profile_id != profiles.c.customer_id
            )
            return dict(conn.execute(q).all())

    def merge_log(self, customer_id: str | None = None) -> list[dict]:
        """The merge audit (oldest first), of one customer's members or of everyone."""
        q = sa.select(merges).order_by(merges.c.merge_id)
        with self._db.tx() as conn:
            if customer_id is not None:
                members = list(
                    conn.scalars(
                        sa.select(profiles.c.profile_id).where(
                            profiles.c.customer_id == customer_id
                        )
                    )
                ) or [customer_id]
                q = q.where(merges.c.survivor.in_(members) | merges.c.absorbed.in_(members))
            return [dict(r._mapping) for r in conn.execute(q)]

    def over_shared(self) -> list[Shared]:
        """Identifiers refused for stitching (held by too many profiles)."""
        with self._db.tx() as conn:
            rows = conn.execute(sa.select(shared_identifiers).order_by("kind", "value")).all()
        return [Shared(r.kind, r.value, r.profiles) for r in rows]

    def erased_hashes(self) -> set[str]:
        """:func:`core.identity.erasure_hash` of every erased id (the suppression list)."""
        with self._db.tx() as conn:
            return set(conn.scalars(sa.select(erased_ids.c.id_hash)))

    def erase(
        self, customer_id: str, *, reason: str, by: str, now: datetime | None = None
    ) -> tuple[str, dict[str, int]]:
        """Erase the unified customer and every member profile (:func:`core.store.erasure.erase`);
        returns the tombstone that now stands for them and the rows touched per table."""
        tombstone = new_tombstone()
        ids = [customer_id, *self.members(customer_id)]
        rows = erase(
            self._db, ids, tombstone=tombstone, reason=reason, by=by, now=now or datetime.now(UTC)
        )
        return tombstone, rows

    def birthdays(self) -> dict[str, date]:
        """Each customer's birthday (the newest profile's that has one)."""
        with self._db.tx() as conn:
            q = (
                sa.select(profiles.c.customer_id, profiles.c.birthday)
                .where(profiles.c.birthday.is_not(None))
                .order_by(profiles.c.updated_at)
            )
            return {c: date.fromisoformat(b) for c, b in conn.execute(q)}


def _consents_of(conn: Connection, customer_id: str) -> dict[str, bool]:
    rows = conn.execute(consent_statement(False), {"customer_id": customer_id}).all()
    return consent_state(rows)


def _carry_consents(conn: Connection, m: Merge, now: datetime) -> None:
    """The absorbed customer's consents reach the survivor, appended (the log is never
    rewritten): a revoke always, a grant where the survivor has no state for the channel.
    An undo keeps them — a revoke is never silently lifted."""
    theirs = _consents_of(conn, m.absorbed)
    ours = _consents_of(conn, m.survivor)
    rows = [
        {
            "customer_id": m.survivor,
            "channel": ch,
            "granted": granted,
            "ts": now,
            "source": f"merge of {m.absorbed}"[:64],
            "recorded_at": now,
        }
        for ch, granted in theirs.items()
        if (not granted and ours.get(ch) is not False) or (granted and ch not in ours)
    ]
    if rows:
        conn.execute(consents.insert(), rows)


def _combine(rows: Sequence, ids: Sequence) -> dict[str, StoredProfile]:
    """Profiles and identifier rows → one :class:`StoredProfile` per customer."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.customer_id, []).append(r)
    owner = {r.profile_id: r.customer_id for r in rows}
    found: dict[str, dict[str, list[tuple[datetime, str]]]] = {}
    for i in ids:
        found.setdefault(owner[i.profile_id], {}).setdefault(i.kind, []).append(
            (i.recorded_at, i.value)
        )
    out = {}
    for cid, members in groups.items():
        members.sort(key=lambda r: (r.updated_at, r.profile_id), reverse=True)
        facts: dict = {
            f: next((getattr(m, f) for m in members if getattr(m, f)), None) for f in FACTS
        }
        if facts["birthday"]:
            facts["birthday"] = date.fromisoformat(facts["birthday"])
        kinds = {
            k: tuple(dict.fromkeys(v for _, v in sorted(vs, reverse=True)))
            for k, vs in found.get(cid, {}).items()
        }
        out[cid] = StoredProfile(
            customer_id=cid,
            members=tuple(sorted(m.profile_id for m in members)),
            identifiers=kinds,
            **facts,
        )
    return out
