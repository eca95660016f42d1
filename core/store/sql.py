"""The SQL contact store: :class:`SqlContactStore` on SQLAlchemy Core, and :func:`open_store`.

It implements :class:`~core.store.base.ContactStore` on any SQLAlchemy URL (SQLite by
default, PostgreSQL for several hosts) over the tables of :mod:`core.store.schema`, the
statements of :mod:`core.store.queries` and the connection of :mod:`core.store.db`. It also
has the reads and writes that only tests and operators use (``record_decision``,
``reserve_contact``, ``record_event``, ``recent_contacts``, ``contact_counts``,
``engagement``, ``consents``, ``dispatch_attempts``, ``counts``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from core.store.base import ContactStore
from core.store.behaviour import BehaviourLog
from core.store.caps import (
    WEEK,
    CapSpec,
    ContactCounts,
    CustomerHistory,
    Engagement,
    cap_contacts,
    count_contacts,
)
from core.store.db import Conn, Database
from core.store.jobs import JobStore
from core.store.journeys import JourneyState
from core.store.keys import KeyStore
from core.store.points import PointsLedger
from core.store.profiles import ProfileStore
from core.store.queries import (
    DECISION_EXISTS,
    INSERT_DECISION,
    attempt_from,
    consent_state,
    consent_statement,
    contact_records,
    contact_statement,
    decision_from,
    decision_row,
    engagement_statement,
    event_row,
    history_from,
    history_statement,
    population_summary,
    summarise_engagement,
)
from core.store.records import (
    FRAME_MAX,
    FRAME_MIN,
    AlreadyDispatched,
    ContactRecord,
    DecisionRecord,
    DispatchAttempt,
    DispatchInProgress,
    DuplicateDecision,
    EventRecord,
    InvalidRecord,
    NotDispatchable,
    StoreError,
    StoreIntegrityError,
    UnknownDecision,
    as_utc,
    check_bool,
    check_channel,
    check_str,
    opt_utc,
)
from core.store.schema import (
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    TABLES,
    consents,
    decisions,
    dispatch_success,
    dispatches,
    events,
    metadata,
)
from core.store.serving import ServingLog
from core.store.upgrade import upgrade_schema

__all__ = ["SqlContactStore", "open_store"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``values`` in pieces small enough for one ``IN (...)`` list on every backend."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _frame_period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` clipped to what a frame's timestamps can hold (``FRAME_MIN``..
    ``FRAME_MAX``): rows dated outside are left out instead of failing the frame."""
    return max(as_utc(start), FRAME_MIN), min(as_utc(end), FRAME_MAX)


class SqlContactStore(ContactStore):
    """:class:`ContactStore` on SQLAlchemy Core, for SQLite files and PostgreSQL.

    Writes that check caps run in one transaction that holds SQLite's write lock or, on
    PostgreSQL, the customer's advisory lock (:class:`~core.store.db.Database`), so several
    processes sharing one database enforce one cap; ``busy_timeout_ms`` bounds the wait.
    The schema is created on start-up if missing (serialised by an advisory lock too).
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000, echo: bool = False):
        self._db = Database(url, busy_timeout_ms, echo)
        self.url = self._db.url
        try:
            self._create_schema()
        except BaseException:
            self._db.close()
            raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for event listeners in tests and for reports)."""
        return self._db.engine

    @property
    def keys(self) -> KeyStore:
        """The API keys kept in this store (shared by every replica using it)."""
        return KeyStore(self._db)

    @property
    def serving(self) -> ServingLog:
        """What every replica serves: model versions and snapshot (shared by all replicas)."""
        return ServingLog(self._db)

    @property
    def behaviour(self) -> BehaviourLog:
        """Behaviour events (carts left, returns, browsing) with their items."""
        return BehaviourLog(self._db)

    @property
    def jobs(self) -> JobStore:
        """Background jobs (retraining), visible to every replica using this store."""
        return JobStore(self._db)

    @property
    def journeys(self) -> JourneyState:
        """Journey enrolments and step runs, shared by every agent and replica."""
        return JourneyState(self._db)

    @property
    def points(self) -> PointsLedger:
        """The loyalty points ledger, shared by every replica."""
        return PointsLedger(self._db)

    @property
    def profiles(self) -> ProfileStore:
        """Stored customer profiles and identity resolution, shared by every replica."""
        return ProfileStore(self._db)

    def _create_schema(self) -> None:
        # Serialised so that several workers starting at once do not race on CREATE TABLE.
        with self._db.tx(write=True, lock="revival:schema") as conn:
            metadata.create_all(conn, checkfirst=True)
            upgrade_schema(conn)

    # ----------------------------------------------------------------- decisions

    def _decision_exists(self, conn: Conn, decision_id: str) -> bool:
        return bool(self._db.rows(conn, DECISION_EXISTS, {"decision_id": decision_id}))

    def record_decision(self, decision: DecisionRecord) -> None:
        """Append ``decision``; raise :class:`DuplicateDecision` if its id is taken."""
        if not isinstance(decision, DecisionRecord):
            raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
        row = decision_row(decision, _utcnow())  # validates the JSON before opening a transaction
        try:
            with self._db.tx(write=True, lock=f"customer:{decision.customer_id}") as conn:
                if self._decision_exists(conn, decision.decision_id):
                    raise DuplicateDecision(decision.decision_id)
                self._db.insert_one(conn, INSERT_DECISION, row)
        except StoreIntegrityError:
            if self.get_decision(decision.decision_id) is not None:  # lost a race on the PK
                raise DuplicateDecision(decision.decision_id) from None
            raise

    def reserve_contact(self, decision: DecisionRecord, caps: CapSpec) -> tuple[bool, str | None]:
        """Atomically check ``caps`` and record ``decision`` only if it fits.

        Returns ``(True, None)`` when recorded, ``(False, reason)`` with reason
        ``cap_channel_day``/``cap_channel_week``/``cap_global_week`` when refused.
        """
        if not isinstance(decision, DecisionRecord):
            raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
        if not isinstance(caps, CapSpec):
            raise InvalidRecord(f"expected a CapSpec, got {type(caps).__name__}")
        # the caps look a week either side of the contact: read from a week before it
        _, reason = self.decide_and_reserve(
            decision.customer_id, decision.contact_time - WEEK, lambda _h: (decision, caps)
        )
        return reason is None, reason

    def decide_and_reserve(
        self,
        customer_id: str,
        since: datetime,
        decide: Callable[[CustomerHistory], tuple[DecisionRecord, CapSpec | None]],
        bought_since: datetime | None = None,
    ) -> tuple[DecisionRecord, str | None]:
        # One write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the customer's advisory
        # lock) around read + decide + insert: half the round trips of a read followed by
        # a checked reservation, and no lost races to retry. The engine's ~0.5 ms runs
        # under the lock, which bounds one SQLite file to ~2,000 recorded decisions/s.
        # Hold-outs are capped like their treated twins (shadow contacts, :mod:`core.store.caps`).
        since = as_utc(since)
        decision: DecisionRecord | None = None
        try:
            with self._db.hot_tx(write=True, lock=f"customer:{customer_id}") as conn:
                history = self._history(conn, customer_id, since, bought_since)
                decision, caps = decide(history)
                if not isinstance(decision, DecisionRecord):
                    raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
                if decision.customer_id != customer_id:
                    raise InvalidRecord(
                        f"decision is for {decision.customer_id!r}, not {customer_id!r}"
                    )
                if caps is not None and not isinstance(caps, CapSpec):
                    raise InvalidRecord(f"expected a CapSpec, got {type(caps).__name__}")
                row = decision_row(decision, _utcnow())  # validates the JSON, refused or not
                if caps is not None and decision.revive and decision.channel is not None:
                    at = decision.contact_time
                    if at - WEEK < since:
                        raise InvalidRecord(f"history since {since} misses the cap window")
                    mine = cap_contacts(
                        history.contacts, history.shadows, decision.campaign_id, decision.holdout
                    )
                    reason = count_contacts(mine, at).cap_reason(caps, decision.channel)
                    if reason is not None:
                        if self._decision_exists(conn, decision.decision_id):
                            raise DuplicateDecision(decision.decision_id)
                        return decision, reason
                self._db.insert_one(conn, INSERT_DECISION, row)
        except StoreIntegrityError:
            if decision is not None and self.get_decision(decision.decision_id) is not None:
                raise DuplicateDecision(decision.decision_id) from None
            raise
        return decision, None

    def get_decisions(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        ids = sorted(set(decision_ids))
        found: dict[str, DecisionRecord] = {}
        with self._db.tx() as conn:
            for chunk in _chunks(ids):
                q = sa.select(decisions).where(decisions.c.decision_id.in_(chunk))
                for row in conn.execute(q).mappings():
                    found[row["decision_id"]] = decision_from(row)
        return found

    def first_sends(self, decision_ids: Iterable[str]) -> dict[tuple[str, str], datetime]:
        ids = sorted(set(decision_ids))
        first: dict[tuple[str, str], datetime] = {}
        key = (events.c.customer_id, events.c.decision_id)
        with self._db.tx() as conn:
            for chunk in _chunks(ids):
                q = (
                    sa.select(*key, sa.func.min(events.c.ts).label("ts"))
                    .where(events.c.decision_id.in_(chunk), events.c.event == "sent")
                    .group_by(*key)
                )
                for customer_id, decision_id, ts in conn.execute(q):
                    first[(customer_id, decision_id)] = as_utc(ts)
        return first

    def latest_decision(
        self, customer_id: str, before: datetime | None = None
    ) -> DecisionRecord | None:
        q = sa.select(decisions).where(decisions.c.customer_id == customer_id)
        if before is not None:
            q = q.where(decisions.c.ts < as_utc(before))
        q = q.order_by(
            decisions.c.ts.desc(), decisions.c.recorded_at.desc(), decisions.c.decision_id.desc()
        ).limit(1)
        with self._db.tx() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else decision_from(row)

    # ----------------------------------------------------------------- events

    @staticmethod
    def _existing_keys(conn: Connection, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            q = sa.select(events.c.dedup_key).where(events.c.dedup_key.in_(chunk))
            found.update(conn.execute(q).scalars())
        return found

    def record_event(self, event: EventRecord) -> bool:
        """Append ``event``; False if its ``dedup_key`` was already stored (ignored)."""
        inserted, _ = self.record_events([event])
        return inserted == 1

    def record_events(self, events_: Sequence[EventRecord]) -> tuple[int, int]:
        for i, e in enumerate(events_):
            if not isinstance(e, EventRecord):
                raise InvalidRecord(f"events[{i}]: expected an EventRecord, got {type(e).__name__}")
        if not events_:
            return 0, 0
        # Dedup keys are checked inside the write transaction; on SQLite the write lock
        # makes that race-free, elsewhere a concurrent insert of the same key surfaces as an
        # IntegrityError and the batch is retried (the retry then sees the key).
        tries = 1 if self._db.dialect == "sqlite" else 3
        for attempt in range(tries):
            try:
                return self._insert_events(events_)
            except StoreIntegrityError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_events(self, events_: Sequence[EventRecord]) -> tuple[int, int]:
        now = _utcnow()
        with self._db.tx(write=True) as conn:
            keys = sorted({e.dedup_key for e in events_ if e.dedup_key is not None})
            seen = self._existing_keys(conn, keys) if keys else set()
            rows = []
            for e in events_:
                if e.dedup_key is not None:
                    if e.dedup_key in seen:
                        continue
                    seen.add(e.dedup_key)
                rows.append(event_row(e, now))
            if rows:
                conn.execute(events.insert(), rows)
        return len(rows), len(events_) - len(rows)

    def events_between(
        self,
        start: datetime,
        end: datetime,
        customer_id: str | None = None,
        event: str | None = None,
        campaign_id: str | None = None,
    ) -> pd.DataFrame:
        start, end = _frame_period(start, end)
        q = sa.select(*[events.c[n] for n in EVENT_COLUMNS]).where(
            events.c.ts >= start, events.c.ts < end
        )
        if customer_id is not None:
            q = q.where(events.c.customer_id == customer_id)
        if event is not None:
            q = q.where(events.c.event == event)
        if campaign_id is not None:
            q = q.where(events.c.campaign_id == campaign_id)
        with self._db.tx() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(events.c.event_id)).mappings()]
        df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
        df["event_id"] = df["event_id"].astype("int64")
        df["value"] = df["value"].astype("float64")
        for col in ("ts", "recorded_at"):
            df[col] = pd.to_datetime(df[col], utc=True)
        return df

    # ----------------------------------------------------------------- contacts

    def _contacts(
        self,
        conn: Conn,
        customer_id: str,
        lo: datetime,
        hi: datetime | None,
        channel: str | None = None,
    ) -> tuple[list[ContactRecord], list[ContactRecord]]:
        """(contacts, shadow contacts) with ``lo <= time <= hi`` (see :mod:`core.store.caps`)."""
        q = contact_statement(hi is not None, channel is not None)
        params: dict[str, Any] = {"customer_id": customer_id, "lo": lo}
        if hi is not None:
            params["hi"] = hi
        if channel is not None:
            params["channel"] = channel
        return contact_records(customer_id, self._db.rows(conn, q, params))

    def recent_contacts(
        self,
        customer_id: str,
        since: datetime,
        channel: str | None = None,
        until: datetime | None = None,
    ) -> list[ContactRecord]:
        """Contacts with ``since <= time`` (and ``time < until``), oldest first."""
        lo, hi = as_utc(since), opt_utc(until)
        with self._db.tx() as conn:
            found, _ = self._contacts(conn, customer_id, lo, hi, channel)
        return [c for c in found if hi is None or c.ts < hi]

    def contact_counts(self, customer_id: str, now: datetime) -> ContactCounts:
        """Contact counts within 24 h and 7 days of ``now``, for frequency caps."""
        now = as_utc(now)
        with self._db.tx() as conn:
            found, _ = self._contacts(conn, customer_id, now - WEEK, now + WEEK)
        return count_contacts(found, now)

    # ----------------------------------------------------------------- engagement

    def _engagement(self, customer_id: str | None, since: datetime | None) -> dict[str, Engagement]:
        """Per-channel engagement of one customer (``customer_id``) or of everybody (None)."""
        q = engagement_statement(customer_id is not None, since is not None)
        params: dict[str, Any] = {}
        if customer_id is not None:
            params["customer_id"] = customer_id
        if since is not None:
            params["since"] = as_utc(since)
        with self._db.tx() as conn:
            rows = self._db.rows(conn, q, params)
        return summarise_engagement(rows) if customer_id is not None else population_summary(rows)

    def engagement(self, customer_id: str, since: datetime | None = None) -> dict[str, Engagement]:
        """Per-channel message outcomes of one customer (events at or after ``since``)."""
        return self._engagement(customer_id, since)

    def population_engagement(self, since: datetime | None = None) -> dict[str, Engagement]:
        return self._engagement(None, since)

    def _history(
        self, conn: Conn, customer_id: str, since: datetime, bought_since: datetime | None
    ) -> CustomerHistory:
        """Contacts since ``since``, consents, engagement and purchases since
        ``bought_since`` (default ``since``): one statement, one round trip."""
        lo = as_utc(since)
        params = {
            "customer_id": customer_id,
            "lo": lo,
            "bought_since": lo if bought_since is None else as_utc(bought_since),
        }
        return history_from(customer_id, self._db.rows(conn, history_statement(), params))

    def customer_history(
        self, customer_id: str, since: datetime, bought_since: datetime | None = None
    ) -> CustomerHistory:
        with self._db.hot_tx() as conn:
            return self._history(conn, customer_id, since, bought_since)

    # ----------------------------------------------------------------- consent

    def set_consent(
        self,
        customer_id: str,
        channel: str,
        granted: bool,
        ts: datetime,
        source: str,
        *,
        dedup_key: str | None = None,
        if_changed: bool = False,
    ) -> bool:
        check_str("customer_id", customer_id)
        check_channel(channel)
        check_bool("granted", granted)
        check_str("source", source, 64)
        check_str("dedup_key", dedup_key, 255, optional=True)
        row = {
            "customer_id": customer_id,
            "channel": channel,
            "granted": granted,
            "ts": as_utc(ts),
            "source": source,
            "recorded_at": _utcnow(),
            "dedup_key": dedup_key,
        }
        # The checks run in the write transaction (SQLite: the write lock; PostgreSQL: the
        # customer's advisory lock); a concurrent insert of the same key still surfaces as an
        # IntegrityError of the unique index, which means "already stored".
        try:
            with self._db.tx(write=True, lock=f"customer:{customer_id}") as conn:
                if dedup_key is not None:
                    q = sa.select(consents.c.consent_id).where(consents.c.dedup_key == dedup_key)
                    if conn.execute(q).first() is not None:
                        return False
                if if_changed and self._consents(conn, customer_id, row["ts"]).get(channel) is (
                    granted
                ):
                    return False
                conn.execute(consents.insert().values(row))
        except StoreIntegrityError:
            if dedup_key is None:
                raise
            return False
        return True

    def _consents(self, conn: Conn, customer_id: str, as_of: datetime | None) -> dict[str, bool]:
        q = consent_statement(as_of is not None)
        params: dict[str, Any] = {"customer_id": customer_id}
        if as_of is not None:
            params["as_of"] = as_utc(as_of)
        return consent_state(self._db.rows(conn, q, params))

    def consents(self, customer_id: str, as_of: datetime | None = None) -> dict[str, bool]:
        """Current consent per channel that has any consent history.

        Latest wins between consent rows and revoking events (``unsubscribed``,
        ``complained``; a channel-less one revokes every channel); on equal timestamps a
        revocation wins. Channels without any history are absent (caller's default).
        """
        with self._db.tx() as conn:
            return self._consents(conn, customer_id, as_of)

    # ----------------------------------------------------------------- reports

    def decisions_between(
        self, start: datetime, end: datetime, campaign_id: str | None = None
    ) -> pd.DataFrame:
        start, end = _frame_period(start, end)
        q = sa.select(decisions).where(decisions.c.ts >= start, decisions.c.ts < end)
        if campaign_id is not None:
            q = q.where(decisions.c.campaign_id == campaign_id)
        q = q.order_by(decisions.c.ts, decisions.c.decision_id)
        with self._db.tx() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["payload"] = json.loads(r["payload"])
            r["model_versions"] = json.loads(r["model_versions"])
        df = pd.DataFrame(rows, columns=DECISION_COLUMNS)
        for col in ("ts", "send_at", "recorded_at"):
            df[col] = pd.to_datetime(df[col], utc=True)
        df["holdout"] = df["holdout"].astype(bool)
        df["revive"] = df["revive"].astype(bool)
        df["priority"] = df["priority"].astype("float64")
        return df

    def counts(self) -> dict[str, int]:
        """Row count per table (to prove a rejected request left the store unchanged)."""
        with self._db.tx() as conn:
            return {
                t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in TABLES
            }

    # ----------------------------------------------------------------- dispatch

    @staticmethod
    def _success(conn: Connection, decision_id: str) -> Any:
        q = sa.select(dispatch_success).where(dispatch_success.c.decision_id == decision_id)
        return conn.execute(q).first()

    def begin_dispatch(
        self, decision_id: str, customer_id: str, channel: str, ts: datetime, lease_s: float = 300.0
    ) -> int:
        ts = as_utc(ts)
        refused: str | None = None
        last = 0
        try:
            with self._db.tx(write=True) as conn:
                q = sa.select(decisions).where(decisions.c.decision_id == decision_id)
                row = conn.execute(q).mappings().first()
                if row is None:
                    raise UnknownDecision(decision_id)
                if self._success(conn, decision_id) is not None:
                    raise AlreadyDispatched(decision_id)
                log = conn.execute(
                    sa.select(dispatches.c.attempt, dispatches.c.status, dispatches.c.ts)
                    .where(dispatches.c.decision_id == decision_id)
                    .order_by(dispatches.c.attempt, dispatches.c.dispatch_id)
                ).all()
                last = max((r.attempt for r in log), default=0)
                outcome = [r for r in log if r.attempt == last and r.status != "sending"]
                opened = [r for r in log if r.attempt == last and r.status == "sending"]
                if opened and not outcome and opened[0].ts > ts - timedelta(seconds=lease_s):
                    raise DispatchInProgress(decision_id, last)
                refused = self._refusal(conn, row, customer_id, channel, ts)
                conn.execute(
                    dispatches.insert().values(
                        decision_id=decision_id,
                        attempt=last + 1,
                        ts=ts,
                        status="failed" if refused else "sending",
                        error=refused,
                    )
                )
        except StoreIntegrityError:  # another worker opened the same attempt number
            raise DispatchInProgress(decision_id, last + 1) from None
        if refused is not None:
            raise NotDispatchable(decision_id, refused)
        return last + 1

    def _refusal(
        self,
        conn: Connection,
        row: Mapping[str, Any],
        customer_id: str,
        channel: str,
        ts: datetime,
    ) -> str | None:
        """Why the decision in ``row`` must not be sent as ``(customer_id, channel)`` now."""
        if row["holdout"]:
            return "holdout decision: the customer must not be contacted"
        if not row["revive"] or row["channel"] is None:
            return "decision does not contact the customer (revive=False or no channel)"
        if row["customer_id"] != customer_id or row["channel"] != channel:
            return (
                f"message is for ({customer_id}, {channel}) but the decision is for "
                f"({row['customer_id']}, {row['channel']})"
            )
        if self._consents(conn, customer_id, ts).get(channel) is False:
            return f"consent for {channel} revoked"
        return None

    def finish_dispatch(self, outcome: DispatchAttempt) -> bool:
        if not isinstance(outcome, DispatchAttempt) or outcome.status == "sending":
            raise InvalidRecord("finish_dispatch needs a DispatchAttempt with status sent/failed")
        with self._db.tx(write=True) as conn:
            q = sa.select(decisions.c.customer_id, decisions.c.campaign_id, decisions.c.channel)
            decision = conn.execute(q.where(decisions.c.decision_id == outcome.decision_id)).first()
            opened = conn.execute(
                sa.select(dispatches.c.dispatch_id).where(
                    dispatches.c.decision_id == outcome.decision_id,
                    dispatches.c.attempt == outcome.attempt,
                    dispatches.c.status == "sending",
                )
            ).first()
            if decision is None or opened is None:
                raise StoreError(
                    f"decision {outcome.decision_id!r} has no open attempt {outcome.attempt}"
                )
            conn.execute(
                dispatches.insert().values(
                    decision_id=outcome.decision_id,
                    attempt=outcome.attempt,
                    ts=outcome.ts,
                    status=outcome.status,
                    provider_status_code=outcome.provider_status_code,
                    error=outcome.error,
                    provider_message_id=outcome.provider_message_id,
                    tries=outcome.tries,
                )
            )
            if outcome.status != "sent":
                return False
            if self._success(conn, outcome.decision_id) is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(
                        dispatch_success.insert().values(
                            decision_id=outcome.decision_id,
                            attempt=outcome.attempt,
                            ts=outcome.ts,
                            provider_status_code=outcome.provider_status_code,
                            provider_message_id=outcome.provider_message_id,
                        )
                    )
            except sa_exc.IntegrityError:  # a concurrent attempt succeeded first
                return False
            key = f"dispatch:{outcome.decision_id}"
            if not self._existing_keys(conn, [key]):
                sent = EventRecord(
                    customer_id=decision.customer_id,
                    ts=outcome.ts,
                    event="sent",
                    channel=decision.channel,
                    campaign_id=decision.campaign_id,
                    decision_id=outcome.decision_id,
                    dedup_key=key,
                )
                conn.execute(events.insert().values(event_row(sent, _utcnow())))
        return True

    def dispatch_success(self, decision_id: str) -> DispatchAttempt | None:
        with self._db.tx() as conn:
            row = self._success(conn, decision_id)
        return None if row is None else attempt_from(row, status="sent")

    def dispatch_attempts(self, decision_id: str) -> list[DispatchAttempt]:
        q = (
            sa.select(dispatches)
            .where(dispatches.c.decision_id == decision_id)
            .order_by(dispatches.c.attempt, dispatches.c.dispatch_id)
        )
        with self._db.tx() as conn:
            return [attempt_from(r) for r in conn.execute(q)]

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"SqlContactStore({self.url.render_as_string(hide_password=True)!r})"


def open_store(url: str) -> ContactStore:
    """Open the contact store at ``url`` (any SQLAlchemy URL; e.g. ``sqlite:///var/c.db``)."""
    return SqlContactStore(url)
