"""Loyalty points in the shared store: an append-only ledger of earns, burns and adjustments.

A customer's balance is never stored: it is replayed from the ledger (:func:`replay`, a pure
function over entries, so the arithmetic is testable by hand). Each ``earn`` is a *lot*
that expires at its ``expires_at`` (the earn rule: so many points per currency unit, so many
days of life); a positive ``adjust`` is a lot too (expiring when given a date, else never).
A ``burn`` or a negative ``adjust`` spends the oldest unexpired lots first (FIFO), so the
points that expire soonest under one rule are used first. Every row carries a ``ref`` (the
order id, the caller's reference), unique per (customer, kind): a re-delivered purchase or
burn is stored once. A burn (or negative adjust) that would leave the customer short at any
moment of the replay is refused (:class:`InsufficientPoints`); the check and the insert run
in one transaction under the customer's lock, so two concurrent burns cannot both pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.store.db import Database
from core.store.records import InvalidRecord, StoreError, as_utc, check_str
from core.store.schema import points_ledger

__all__ = [
    "POINTS_KINDS",
    "EarnRule",
    "ExpiringPoints",
    "InsufficientPoints",
    "LedgerState",
    "PointsBalance",
    "PointsEntry",
    "PointsLedger",
    "points_balance",
    "replay",
]

POINTS_KINDS = ("earn", "burn", "adjust")
POINTS_MAX = 10**12  # per entry: far above any real grant, far below a BIGINT
_TICK = timedelta(microseconds=1)  # the store's time resolution
# A customer's ledger, oldest first; compiled once (Database.rows on the decision path)
_ENTRIES = (
    sa.select(
        points_ledger.c.kind,
        points_ledger.c.points,
        points_ledger.c.ts,
        points_ledger.c.expires_at,
        points_ledger.c.ref,
    )
    .where(points_ledger.c.customer_id == sa.bindparam("customer_id"))
    .order_by(points_ledger.c.ts, points_ledger.c.entry_id)
)


class InsufficientPoints(StoreError):
    """A burn (or negative adjustment) the customer's balance cannot cover; nothing written."""

    def __init__(self, customer_id: str, wanted: int, balance: int):
        self.customer_id, self.wanted, self.balance = customer_id, wanted, balance
        super().__init__(
            f"customer {customer_id!r} has {balance} points; {wanted} cannot be taken "
            "(the balance may not go below zero at any time)"
        )


@dataclass(frozen=True)
class EarnRule:
    """How a purchase earns: ``floor(spend * points_per_unit)`` points, valid for
    ``expire_after_days`` days from the purchase."""

    points_per_unit: float
    expire_after_days: float

    def points(self, spend: float) -> int:
        """The points ``spend`` (currency) earns; 0 for nothing or a refund."""
        if not math.isfinite(spend) or spend <= 0:
            return 0
        return int(math.floor(spend * self.points_per_unit + 1e-9))  # 19.99 * 100 is 1998.99…


@dataclass(frozen=True)
class PointsEntry:
    """One ledger row as the replay sees it: ``points`` > 0 for earn and burn, signed for
    adjust; ``expires_at`` for a lot (an earn, a positive adjust), None: never."""

    kind: str
    points: int
    ts: datetime
    expires_at: datetime | None = None
    ref: str = ""

    @property
    def delta(self) -> int:
        """The signed change of the balance."""
        return -self.points if self.kind == "burn" else self.points


@dataclass(frozen=True)
class LedgerState:
    """The ledger replayed up to a moment: the unexpired lots left ``(points, expires_at)``
    oldest first, points owed (``debt``: spent before they were there, paid by the next
    lot), the largest such shortfall seen, and the points that expired unspent."""

    lots: tuple[tuple[int, datetime | None], ...]
    debt: int
    shortfall: int
    expired: int

    @property
    def balance(self) -> int:
        return sum(p for p, _ in self.lots) - self.debt


@dataclass(frozen=True)
class PointsBalance:
    """A customer's points at a moment: ``balance``; ``expiring`` of them expire within the
    reminder window, all of them by ``expiring_by`` (None when none expire)."""

    balance: int
    expiring: int
    expiring_by: datetime | None


@dataclass(frozen=True)
class ExpiringPoints:
    """A customer whose unspent ``points`` expire in a window, the first at ``expires_at``."""

    customer_id: str
    points: int
    expires_at: datetime


def replay(entries: Iterable[PointsEntry], as_of: datetime) -> LedgerState:
    """Replay ``entries`` with ``ts <= as_of`` in time order (credits before debits at the
    same instant). Before each entry, and at ``as_of``, lots with ``expires_at`` at or before
    that time expire; a debit takes the oldest lots first; what it cannot take becomes debt."""
    at = as_utc(as_of)
    due = sorted(
        (e for e in entries if as_utc(e.ts) <= at), key=lambda e: (as_utc(e.ts), e.delta < 0)
    )
    lots: list[list[Any]] = []  # [points left, expires_at], oldest first
    debt = shortfall = expired = 0

    def expire(t: datetime) -> None:
        nonlocal expired
        keep = []
        for lot in lots:
            if lot[1] is not None and lot[1] <= t:
                expired += lot[0]
            else:
                keep.append(lot)
        lots[:] = keep

    for e in due:
        expire(as_utc(e.ts))
        if e.delta > 0:
            paid = min(debt, e.delta)
            debt -= paid
            if e.delta > paid:
                lots.append(
                    [e.delta - paid, None if e.expires_at is None else as_utc(e.expires_at)]
                )
            continue
        need = -e.delta
        while need and lots:
            take = min(need, lots[0][0])
            lots[0][0] -= take
            need -= take
            if lots[0][0] == 0:
                lots.pop(0)
        debt += need
        shortfall = max(shortfall, debt)
    expire(at)
    return LedgerState(tuple((p, x) for p, x in lots), debt, shortfall, expired)


def points_balance(
    entries: Iterable[PointsEntry], as_of: datetime, window: timedelta
) -> PointsBalance:
    """The balance at ``as_of`` and the points of it that expire in ``(as_of, as_of + window]``."""
    state = replay(entries, as_of)
    end = as_utc(as_of) + window
    soon = [(p, x) for p, x in state.lots if x is not None and x <= end]
    return PointsBalance(
        balance=state.balance,
        expiring=sum(p for p, _ in soon),
        expiring_by=max((x for _, x in soon), default=None),
    )


def _expiring_in(
    entries: Sequence[PointsEntry], start: datetime, end: datetime
) -> tuple[int, datetime | None]:
    """Unspent points of lots expiring in ``[start, end)`` as the ledger stands just before
    ``start``, and the first such expiry."""
    state = replay(entries, as_utc(start) - _TICK)
    hits = [(p, x) for p, x in state.lots if x is not None and start <= x < end]
    return sum(p for p, _ in hits), min((x for _, x in hits), default=None)


def _check_points(name: str, value: Any, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{name} must be an integer, got {value!r}")
    if value == 0 or (value < 0 and not signed) or abs(value) > POINTS_MAX:
        allowed = "non-zero" if signed else "positive"
        raise InvalidRecord(f"{name} must be a {allowed} integer up to {POINTS_MAX}, got {value}")
    return value


class PointsLedger:
    """The ``points_ledger`` table of a store (:attr:`core.store.SqlContactStore.points`)."""

    def __init__(self, db: Database):
        self._db = db

    def _insert(self) -> Any:
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        return dialect.insert(points_ledger)

    # ------------------------------------------------------------------ writes

    def earn(self, customer_id: str, spend: float, ts: datetime, ref: str, rule: EarnRule) -> int:
        """Earn on a purchase of ``spend`` at ``ts`` (order ``ref``) by ``rule``; returns the
        points stored (0: nothing to earn, or this order has earned already)."""
        points = rule.points(spend)
        if points == 0:
            check_str("customer_id", customer_id)
            return 0
        expires = as_utc(ts) + timedelta(days=rule.expire_after_days)
        return points if self._append(customer_id, "earn", points, ts, ref, expires) else 0

    def burn(self, customer_id: str, points: int, ts: datetime, ref: str) -> bool:
        """Spend ``points`` at ``ts`` (oldest lots first); False when ``ref`` is stored already.
        :class:`InsufficientPoints` when the balance cannot cover it."""
        return self._append(customer_id, "burn", _check_points("points", points), ts, ref)

    def adjust(
        self,
        customer_id: str,
        points: int,
        ts: datetime,
        ref: str,
        note: str | None = None,
        expires_at: datetime | None = None,
    ) -> bool:
        """Correct the balance by ``points`` (signed): a positive adjustment is a lot
        (expiring at ``expires_at``, None: never), a negative one spends like a burn and is
        refused the same way. False when ``ref`` is stored already."""
        points = _check_points("points", points, signed=True)
        if points < 0 and expires_at is not None:
            raise InvalidRecord("expires_at: only a positive adjustment is a lot that expires")
        return self._append(customer_id, "adjust", points, ts, ref, expires_at, note)

    def _append(
        self,
        customer_id: str,
        kind: str,
        points: int,
        ts: datetime,
        ref: str,
        expires_at: datetime | None = None,
        note: str | None = None,
    ) -> bool:
        check_str("customer_id", customer_id)
        check_str("ref", ref, 255)
        check_str("note", note, 255, optional=True)
        ts = as_utc(ts)
        row = {
            "customer_id": customer_id,
            "kind": kind,
            "points": points,
            "ts": ts,
            "expires_at": None if expires_at is None else as_utc(expires_at),
            "ref": ref,
            "note": note,
            "recorded_at": datetime.now(UTC),
        }
        c = points_ledger.c
        with self._db.tx(write=True, lock=f"points:{customer_id}") as conn:
            seen = conn.scalar(
                sa.select(c.entry_id).where(
                    c.customer_id == customer_id, c.kind == kind, c.ref == ref
                )
            )
            if seen is not None:
                return False
            if kind == "burn" or points < 0:
                entries = self._read(conn, customer_id)
                new = PointsEntry(kind, points, ts)
                after = replay([*entries, new], datetime.max.replace(tzinfo=UTC))
                if after.shortfall > 0:
                    have = replay(entries, ts).balance
                    raise InsufficientPoints(customer_id, abs(points), have)
            stmt = self._insert().values(**row).on_conflict_do_nothing()
            return len(conn.execute(stmt.returning(c.entry_id)).all()) == 1

    # ------------------------------------------------------------------ reads

    def _read(self, conn: Any, customer_id: str) -> list[PointsEntry]:
        rows = self._db.rows(conn, _ENTRIES, {"customer_id": customer_id})
        return [PointsEntry(r.kind, int(r.points), r.ts, r.expires_at, r.ref) for r in rows]

    def entries(self, customer_id: str) -> list[PointsEntry]:
        """The customer's ledger, oldest first (read on the decision path's transaction)."""
        with self._db.hot_tx() as conn:
            return self._read(conn, customer_id)

    def balance(
        self, customer_id: str, as_of: datetime, window: timedelta = timedelta(days=30)
    ) -> PointsBalance:
        """The customer's balance at ``as_of`` and what of it expires within ``window``."""
        return points_balance(self.entries(customer_id), as_of, window)

    def expiring_between(self, start: datetime, end: datetime) -> list[ExpiringPoints]:
        """Customers with unspent points expiring in ``[start, end)`` (as the ledger stands
        just before ``start``), by customer id."""
        c = points_ledger.c
        start, end = as_utc(start), as_utc(end)
        q = (
            sa.select(c.customer_id)
            .where(c.expires_at >= start, c.expires_at < end)
            .distinct()
            .order_by(c.customer_id)
        )
        out: list[ExpiringPoints] = []
        with self._db.tx() as conn:
            for customer_id in conn.scalars(q).all():
                points, first = _expiring_in(self._read(conn, customer_id), start, end)
                if points > 0 and first is not None:
                    out.append(ExpiringPoints(customer_id, points, first))
        return out
