"""Journey state in the shared store: enrolments, step runs, pauses and the intake watermark.

Exactly once, whoever ticks (:mod:`service.journeys.agent`):

- an enrolment's id is derived from (journey, customer, trigger key), so enrolling twice is a
  no-op; the intake of a time window commits only if the watermark it started from is still
  the stored one (compare-and-set), so two agents never both enrol a window;
- due enrolments are *claimed* with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
  write lock of ``BEGIN IMMEDIATE`` on SQLite), so two agents work on different customers;
- a step's run is unique per (enrolment, step) and is written in the same transaction that
  moves the enrolment on, guarded by the step it expected: a step run again after a crash,
  or by an agent whose lease ran out, finds the row and changes nothing. The decision a step
  makes has an id derived from (enrolment, step), so the decision and its dispatch are made
  once too (the store's decision and dispatch rules).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.store.db import Database
from core.store.records import as_utc
from core.store.schema import journey_control, journey_enrolments, journey_steps

__all__ = [
    "STEP_OUTCOMES",
    "Enrolment",
    "JourneyState",
    "StepRun",
    "empty_counts",
    "enrolment_id",
]

STEP_OUTCOMES = ("waited", "branched", "sent", "held_out", "no_contact", "skipped")
_INTAKE = "intake"


def enrolment_id(journey_id: str, customer_id: str, trigger_key: str) -> str:
    """The enrolment's id: the same trigger of the same customer is one enrolment."""
    raw = f"{journey_id}\x1f{customer_id}\x1f{trigger_key}".encode()
    return hashlib.sha1(raw).hexdigest()


@dataclass(frozen=True)
class Enrolment:
    """A customer in a journey: the next ``step`` (index) runs at ``due_at``."""

    journey_id: str
    customer_id: str
    trigger_key: str
    entered_at: datetime
    holdout: bool
    context: dict[str, Any] = field(default_factory=dict)
    status: str = "active"
    step: int = 0
    due_at: datetime | None = None
    note: str | None = None
    converted_at: datetime | None = None

    @property
    def enrolment_id(self) -> str:
        return enrolment_id(self.journey_id, self.customer_id, self.trigger_key)


@dataclass(frozen=True)
class StepRun:
    """One step of one enrolment, run once: its outcome (:data:`STEP_OUTCOMES`) and, for a
    message step, the decision it made."""

    enrolment_id: str
    step_id: str
    journey_id: str
    customer_id: str
    ran_at: datetime
    outcome: str
    worker: str
    decision_id: str | None = None
    channel: str | None = None
    send_at: datetime | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in STEP_OUTCOMES:
            raise ValueError(f"outcome must be one of {STEP_OUTCOMES}, got {self.outcome!r}")


class _MovedOn(Exception):
    """The enrolment left the step meanwhile (raised inside the transaction to undo it)."""


def _enrolment(row: sa.Row) -> Enrolment:
    return Enrolment(
        journey_id=row.journey_id,
        customer_id=row.customer_id,
        trigger_key=row.trigger_key,
        entered_at=row.entered_at,
        holdout=row.holdout,
        context=json.loads(row.context),
        status=row.status,
        step=row.step,
        due_at=row.due_at,
        note=row.note,
        converted_at=row.converted_at,
    )


def _run(row: sa.Row) -> StepRun:
    return StepRun(**{c: getattr(row, c) for c in StepRun.__dataclass_fields__})


class JourneyState:
    """The journey tables of a store (:attr:`core.store.SqlContactStore.journeys`)."""

    def __init__(self, db: Database):
        self._db = db

    def _insert(self, table: sa.Table) -> Any:
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------------ intake

    def intake_at(self) -> datetime | None:
        """The end of the last enrolled time window (None before the first intake)."""
        with self._db.tx() as conn:
            return conn.scalar(
                sa.select(journey_control.c.at).where(journey_control.c.name == _INTAKE)
            )

    def enrol(
        self, since: datetime | None, until: datetime, entries: Sequence[Enrolment], by: str
    ) -> int | None:
        """Store the enrolments of the window ``(since, until]`` and move the watermark to
        ``until``, in one transaction — only if the watermark is still ``since`` (another
        agent did not take the window first: then None). Returns how many were new."""
        now = datetime.now(UTC)
        with self._db.tx(write=True) as conn:
            c = journey_control.c
            if since is None:
                moved = _count(
                    conn,
                    self._insert(journey_control)
                    .values(name=_INTAKE, at=until, updated_at=now, updated_by=by)
                    .on_conflict_do_nothing()
                    .returning(c.name),
                )
            else:
                moved = _count(
                    conn,
                    sa.update(journey_control)
                    .where(c.name == _INTAKE, c.at == as_utc(since))
                    .values(at=until, updated_at=now, updated_by=by)
                    .returning(c.name),
                )
            if moved != 1:
                return None
            if not entries:
                return 0
            rows = [
                {
                    "enrolment_id": e.enrolment_id,
                    "journey_id": e.journey_id,
                    "customer_id": e.customer_id,
                    "trigger_key": e.trigger_key,
                    "entered_at": e.entered_at,
                    "holdout": e.holdout,
                    "context": json.dumps(e.context, sort_keys=True),
                    "status": "active",
                    "step": 0,
                    "due_at": e.due_at or e.entered_at,
                    "updated_at": now,
                }
                for e in entries
            ]
            stmt = (
                self._insert(journey_enrolments)
                .on_conflict_do_nothing()
                .returning(journey_enrolments.c.enrolment_id)
            )
            return sum(_count(conn, stmt, chunk) for chunk in _chunks(rows))

    def last_entries(self, journey_id: str, customer_ids: Iterable[str]) -> dict[str, datetime]:
        """Each customer's latest entry into the journey (for its re-entry rule)."""
        c = journey_enrolments.c
        out: dict[str, datetime] = {}
        with self._db.tx() as conn:
            for chunk in _chunks(sorted(set(customer_ids))):
                q = (
                    sa.select(c.customer_id, sa.func.max(c.entered_at))
                    .where(c.journey_id == journey_id, c.customer_id.in_(chunk))
                    .group_by(c.customer_id)
                )
                out.update({cid: as_utc(ts) for cid, ts in conn.execute(q)})
        return out

    def mark_converted(self, customer_id: str, ts: datetime, windows: dict[str, float]) -> int:
        """Mark the customer's enrolments whose goal window (``windows``: journey -> days)
        holds the purchase at ``ts`` — after the entry, so the order that started a
        post-purchase journey is not its conversion — as converted (the first counts)."""
        c, n = journey_enrolments.c, 0
        with self._db.tx(write=True) as conn:
            for journey_id, days in windows.items():
                n += _count(
                    conn,
                    sa.update(journey_enrolments)
                    .where(
                        c.customer_id == customer_id,
                        c.journey_id == journey_id,
                        c.converted_at.is_(None),
                        c.entered_at < as_utc(ts),
                        c.entered_at > as_utc(ts) - timedelta(days=days),
                    )
                    .values(converted_at=as_utc(ts))
                    .returning(c.enrolment_id),
                )
        return n

    # ------------------------------------------------------------------ steps

    def claim(
        self,
        now: datetime,
        worker: str,
        limit: int,
        lease: timedelta,
        exclude: Iterable[str] = (),
    ) -> list[Enrolment]:
        """Up to ``limit`` active enrolments due at ``now`` that nobody holds, leased to
        ``worker`` until ``now + lease`` (wall clock), oldest due first; journeys in
        ``exclude`` (paused) are left where they are."""
        c, wall = journey_enrolments.c, datetime.now(UTC)
        q = (
            sa.select(journey_enrolments)
            .where(
                c.status == "active",
                c.due_at <= as_utc(now),
                sa.or_(c.lease_until.is_(None), c.lease_until < wall),
            )
            .order_by(c.due_at, c.enrolment_id)
            .limit(limit)
        )
        if skip := sorted(exclude):
            q = q.where(c.journey_id.not_in(skip))
        if self._db.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self._db.tx(write=True) as conn:
            rows = conn.execute(q).all()
            if rows:
                conn.execute(
                    sa.update(journey_enrolments)
                    .where(c.enrolment_id.in_([r.enrolment_id for r in rows]))
                    .values(lease_owner=worker, lease_until=wall + lease)
                )
        return [_enrolment(r) for r in rows]

    def release(self, worker: str) -> list[Enrolment]:
        """Drop every lease ``worker`` holds and return those enrolments (an agent restarted
        under the same name takes them back at once instead of waiting for the leases to
        run out, and knows which steps it was in the middle of)."""
        c = journey_enrolments.c
        with self._db.tx(write=True) as conn:
            rows = conn.execute(
                sa.update(journey_enrolments)
                .where(c.lease_owner == worker)
                .values(lease_owner=None, lease_until=None)
                .returning(*journey_enrolments.c)
            ).all()
        return [_enrolment(r) for r in rows]

    def advance(
        self,
        enrolment: Enrolment,
        run: StepRun | None,
        *,
        step: int,
        due_at: datetime | None,
        status: str = "active",
        note: str | None = None,
        keep_lease: bool = False,
    ) -> bool:
        """Record ``run`` and move the enrolment to ``step`` (due at ``due_at``), atomically
        and only from the step it was at: False (nothing changed) when the step has run
        already or the enrolment moved on meanwhile. The lease is dropped unless
        ``keep_lease`` (the worker goes straight on to the next step)."""
        try:
            return self._advance(enrolment, run, step, due_at, status, note, keep_lease)
        except _MovedOn:
            return False

    def _advance(
        self,
        enrolment: Enrolment,
        run: StepRun | None,
        step: int,
        due_at: datetime | None,
        status: str,
        note: str | None,
        keep_lease: bool,
    ) -> bool:
        c = journey_enrolments.c
        lease = {} if keep_lease else {"lease_owner": None, "lease_until": None}
        with self._db.tx(write=True) as conn:
            if run is not None:
                values = {f: getattr(run, f) for f in StepRun.__dataclass_fields__}
                stmt = self._insert(journey_steps).values(**values).on_conflict_do_nothing()
                if _count(conn, stmt.returning(journey_steps.c.step_id)) != 1:
                    return False
            moved = _count(
                conn,
                sa.update(journey_enrolments)
                .where(
                    c.enrolment_id == enrolment.enrolment_id,
                    c.step == enrolment.step,
                    c.status == "active",
                )
                .values(
                    step=step,
                    due_at=due_at if status == "active" else None,
                    status=status,
                    note=note,
                    updated_at=datetime.now(UTC),
                    **lease,
                )
                .returning(c.enrolment_id),
            )
            if moved != 1:
                raise _MovedOn  # rolls the step run back
        return True

    # ------------------------------------------------------------------ reads

    def enrolments(self, customer_id: str) -> list[Enrolment]:
        """The customer's enrolments, oldest first."""
        c = journey_enrolments.c
        q = sa.select(journey_enrolments).where(c.customer_id == customer_id)
        with self._db.tx() as conn:
            rows = conn.execute(q.order_by(c.entered_at, c.journey_id)).all()
        return [_enrolment(r) for r in rows]

    def step_runs(
        self, customer_id: str | None = None, since: datetime | None = None
    ) -> list[StepRun]:
        """Step runs (of one customer, and since a time, when given), in the order run."""
        c = journey_steps.c
        q = sa.select(journey_steps)
        if customer_id is not None:
            q = q.where(c.customer_id == customer_id)
        if since is not None:
            q = q.where(c.ran_at >= as_utc(since))
        with self._db.tx() as conn:
            rows = conn.execute(q.order_by(c.ran_at, c.enrolment_id, c.step_id)).all()
        return [_run(r) for r in rows]

    def sent_on(self, customer_id: str, start: datetime, end: datetime) -> list[StepRun]:
        """The customer's journey messages run in ``[start, end)`` (a day, for priority)."""
        c = journey_steps.c
        q = sa.select(journey_steps).where(
            c.customer_id == customer_id,
            c.outcome == "sent",
            c.ran_at >= as_utc(start),
            c.ran_at < as_utc(end),
        )
        with self._db.tx() as conn:
            return [_run(r) for r in conn.execute(q)]

    def counts(self) -> dict[str, dict[str, Any]]:
        """Per journey: enrolments by status, hold-out and converted; step runs by step and
        outcome."""
        e, s = journey_enrolments.c, journey_steps.c
        out: dict[str, dict[str, Any]] = {}
        with self._db.tx() as conn:
            q = sa.select(
                e.journey_id,
                e.status,
                e.holdout,
                sa.func.count(),
                sa.func.count(e.converted_at),
            ).group_by(e.journey_id, e.status, e.holdout)
            for journey_id, status, holdout, n, converted in conn.execute(q):
                j = out.setdefault(journey_id, empty_counts())
                j["enrolled"] += n
                j[status] += n
                j["holdout"] += n if holdout else 0
                j["converted"] += converted
                j["converted_holdout" if holdout else "converted_treated"] += converted
            q = sa.select(s.journey_id, s.step_id, s.outcome, sa.func.count()).group_by(
                s.journey_id, s.step_id, s.outcome
            )
            for journey_id, step_id, outcome, n in conn.execute(q):
                steps = out.setdefault(journey_id, empty_counts())["steps"]
                steps.setdefault(step_id, {})[outcome] = n
            q = (
                sa.select(e.journey_id, e.step, sa.func.count())
                .where(e.status == "exited")
                .group_by(e.journey_id, e.step)
            )
            for journey_id, step, n in conn.execute(q):
                out.setdefault(journey_id, empty_counts())["exited_at_step"][step] = n
        return out

    # ------------------------------------------------------------------ pauses

    def paused(self) -> set[str]:
        """The ids of the journeys an admin paused."""
        c = journey_control.c
        q = sa.select(c.name).where(c.name.like("pause:%"), c.flag.is_(True))
        with self._db.tx() as conn:
            return {name.removeprefix("pause:") for name in conn.scalars(q)}

    def set_paused(self, journey_id: str, paused: bool, by: str) -> None:
        """Pause (no new entries, no steps run; waiting customers stay where they are) or
        resume a journey."""
        now = datetime.now(UTC)
        values = {"flag": paused, "updated_at": now, "updated_by": by[:255]}
        stmt = self._insert(journey_control).values(name=f"pause:{journey_id}", **values)
        with self._db.tx(write=True) as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))


def empty_counts() -> dict[str, Any]:
    """A journey's counts before anyone entered (:meth:`JourneyState.counts`)."""
    return {
        "enrolled": 0,
        "active": 0,
        "completed": 0,
        "exited": 0,
        "holdout": 0,
        "converted": 0,
        "converted_treated": 0,
        "converted_holdout": 0,
        "steps": {},
        "exited_at_step": {},
    }


def _count(conn: Any, stmt: Any, params: Any = None) -> int:
    """Rows a statement with ``RETURNING`` wrote (the store's PostgreSQL connections
    report ``rowcount`` -1 for these statements, so it is not relied on)."""
    return len(conn.execute(stmt, params).all() if params is not None else conn.execute(stmt).all())


def _chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
