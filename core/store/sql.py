"""The SQL contact store: :class:`SqlContactStore` on SQLAlchemy Core, and :func:`open_store`.

It implements :class:`~core.store.base.ContactStore` on any SQLAlchemy URL (SQLite by
default, PostgreSQL for several hosts) over the tables of :mod:`core.store.schema` and the
statements of :mod:`core.store.queries`. It also has the reads and writes only the tests and
operators use (``record_decision``, ``reserve_contact``, ``record_event``,
``recent_contacts``, ``contact_counts``, ``engagement``, ``consents``, ``dispatch_attempts``,
``counts``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from core.store.base import ContactStore
from core.store.caps import (
    WEEK,
    CapSpec,
    ContactCounts,
    CustomerHistory,
    Engagement,
    cap_contacts,
    count_contacts,
)
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
    StoreUnavailable,
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

__all__ = ["SqlContactStore", "open_store"]

log = logging.getLogger(__name__)

_SQLITE_MMAP_BYTES = 256 * 2**20


def _observed(target: Connection | sa.Engine) -> bool:
    """Somebody listens to cursor executions (audits, tracing): raw DBAPI calls would hide
    statements from them."""
    d = target.dispatch
    return bool(d.before_cursor_execute or d.after_cursor_execute)


@contextmanager
def _db_errors() -> Iterator[None]:
    """Driver and SQLAlchemy errors as the store's own (what callers can act on)."""
    try:
        yield
    except (sa_exc.IntegrityError, sqlite3.IntegrityError) as exc:
        raise StoreIntegrityError(f"write rejected by the database: {_short(exc)}") from exc
    except (sa_exc.OperationalError, sqlite3.OperationalError) as exc:
        raise StoreUnavailable(f"database unavailable or locked: {_short(exc)}") from exc
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        raise StoreError(f"database error: {_short(exc)}") from exc


class _Fast:
    """One statement compiled once for SQLite and run on the raw DBAPI connection.

    A recorded decision runs two statements (its history, the insert) between BEGIN and
    COMMIT; SQLAlchemy's per-execution work (execution context,
    cache-key lookup, result set-up) costs several times SQLite's own. Same SQL, same
    bind/result type processing (taken from the compiled statement), same connection and
    therefore the same transaction; driver errors are mapped by ``_db_errors``.
    """

    __slots__ = ("sql", "names", "static", "procs", "results", "row")

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect, column_keys: Any = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        self.static = {k: b.value for k, b in compiled.binds.items() if not b.required}
        binds = compiled._bind_processors
        self.procs = tuple(binds.get(n) for n in self.names)
        cols = getattr(compiled, "_result_columns", None) or []
        self.results = tuple(c.type._cached_result_processor(dialect, None) for c in cols)
        self.row = collections.namedtuple("Row", [c.keyname for c in cols]) if cols else None

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        static = self.static
        out = []
        for name, proc in zip(self.names, self.procs, strict=True):
            v = values[name] if name in values else static[name]
            out.append(v if proc is None else proc(v))
        return tuple(out)

    def rows(self, dbapi: sqlite3.Connection, values: Mapping[str, Any]) -> list[Any]:
        cur = dbapi.execute(self.sql, self.params(values))
        make, procs = self.row._make, self.results
        return [
            make([v if p is None else p(v) for p, v in zip(procs, r, strict=True)])
            for r in cur.fetchall()
        ]


# --------------------------------------------------------------------------- SQL store


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``values`` in pieces small enough for one ``IN (...)`` list on every backend."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _lock_id(key: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` (``hash()`` is per-process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _enable_wal(dbapi_conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch a SQLite file to WAL (persistent), retrying while other connections hold locks.

    Changing the journal mode needs an exclusive lock and fails at once with "database is
    locked" instead of waiting on ``busy_timeout``, which happens when several workers open
    a fresh file together.
    """
    if str(dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline, delay = time.monotonic() + timeout_s, 0.005
    while True:
        try:
            mode = str(dbapi_conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)
    if mode != "wal":
        log.warning("SQLite kept journal_mode=%s (WAL unsupported here?)", mode)


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0][:300]


class SqlContactStore(ContactStore):
    """:class:`ContactStore` on SQLAlchemy Core, for SQLite files and PostgreSQL.

    SQLite: WAL journal, ``busy_timeout`` and foreign keys are set on every connection;
    write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the
    lock instead of failing on a stale snapshot. Several processes may share one file.
    PostgreSQL (``postgresql+psycopg://user@host:port/db``): cap checks serialise per
    customer with ``pg_advisory_xact_lock`` (needs the default READ COMMITTED isolation so
    counts see the previous holder's commit), so several processes sharing one database
    enforce one cap; ``busy_timeout_ms`` becomes ``lock_timeout`` and the connect timeout.
    The schema is created on start-up if missing (serialised by an advisory lock too).
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000, echo: bool = False):
        try:
            self.url = make_url(url)
        except sa_exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {exc}") from exc
        self._dialect = self.url.get_backend_name()
        self._closed = False
        self._fast_cache: dict[int, tuple[sa.ClauseElement, _Fast]] = {}
        self._local = threading.local()  # the decision path's connection per thread
        self._pins: list[sqlite3.Connection] = []
        self._pin_lock = threading.Lock()
        kwargs: dict[str, Any] = {"echo": echo}
        memory = False
        if self._dialect == "sqlite":
            database = self.url.database or ""
            memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if memory:
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        if self._dialect == "postgresql":
            # busy_timeout's PostgreSQL twin: a writer queued on another's lock (the per
            # customer advisory lock, a row lock) gives up after it -> StoreUnavailable.
            kwargs["connect_args"] = {
                "connect_timeout": max(1, math.ceil(busy_timeout_ms / 1000)),
                "options": f"-c lock_timeout={int(busy_timeout_ms)}",
            }
        try:
            self._engine = sa.create_engine(self.url, **kwargs)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                f"cannot open store {self.url.render_as_string(hide_password=True)}: {exc}"
            ) from exc
        # an in-memory database lives in the pool's one shared connection: never detach it
        self._pin_ok = self._dialect == "sqlite" and not memory
        if self._dialect == "sqlite":
            self._install_sqlite_hooks(busy_timeout_ms, wal=not memory)
        try:
            self._create_schema()
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for event listeners in tests and for reports)."""
        return self._engine

    # ----------------------------------------------------------------- plumbing

    def _install_sqlite_hooks(self, busy_timeout_ms: int, wal: bool) -> None:
        @sa_event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys = ON")
            # Read pages through a memory map instead of a read() system call each, which
            # matters once the file outgrows SQLite's 2 MB page cache. The file is
            # append-only (never truncated), so the map's SIGBUS hazard does not arise.
            cur.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP_BYTES}")
            cur.close()
            if wal:
                _enable_wal(dbapi_conn, busy_timeout_ms / 1000)
                # WAL + NORMAL never corrupts the file; a power cut may lose the last
                # commits (not an application crash). FULL doubles the cost of every
                # decision's write with an fsync.
                dbapi_conn.execute("PRAGMA synchronous = NORMAL")

        @sa_event.listens_for(self._engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    @contextmanager
    def _tx(self, write: bool = False, lock: str | None = None) -> Iterator[Connection]:
        """A transaction; ``write`` takes SQLite's write lock up front, ``lock`` a PG lock."""
        if self._closed:
            raise StoreError("store is closed")
        with _db_errors(), self._engine.connect() as conn:
            if write and self._dialect == "sqlite":
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if lock is not None and self._dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(lock))))
                yield conn

    @contextmanager
    def _hot_tx(
        self, write: bool = False, lock: str | None = None
    ) -> Iterator[Connection | sqlite3.Connection]:
        """:meth:`_tx` for the decision path (statements via ``_rows`` / ``_insert_one``).

        On a SQLite file it is the thread's own DBAPI connection (:meth:`_pinned`) between
        ``BEGIN [IMMEDIATE]`` and ``COMMIT``: SQLAlchemy's per-transaction bookkeeping
        (connection object, begin event, commit, close) and the pool's check-out and return
        cost more than SQLite's own transaction. Not while anybody listens to cursor
        executions (they see every statement) and not on other databases.
        """
        if not self._pin_ok or _observed(self._engine):
            with self._tx(write, lock) as conn:
                yield conn
            return
        if self._closed:
            raise StoreError("store is closed")
        with _db_errors():
            dbapi = self._pinned()
            dbapi.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield dbapi
                dbapi.execute("COMMIT")
            finally:
                if dbapi.in_transaction:  # the body or COMMIT failed
                    with suppress(sqlite3.Error):
                        dbapi.execute("ROLLBACK")

    def _pinned(self) -> sqlite3.Connection:
        """This thread's SQLite connection for the decision path: taken from the pool once
        (so the pool's connect hooks ran) and detached from it; closed with the store."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            fairy = self._engine.raw_connection()
            conn = fairy.driver_connection
            fairy.detach()  # the pool forgets it: ours until close()
            with self._pin_lock:
                if self._closed:
                    conn.close()
                    raise StoreError("store is closed")
                self._pins.append(conn)
            self._local.conn = conn
        return conn

    def _fast(self, stmt: sa.ClauseElement, column_keys: Any = None) -> _Fast:
        fast = self._fast_cache.get(id(stmt))
        if fast is None or fast[0] is not stmt:
            fast = (stmt, _Fast(stmt, self._engine.dialect, column_keys))
            self._fast_cache[id(stmt)] = fast
        return fast[1]

    def _raw_ok(self, conn: Connection) -> bool:
        """SQLite, and nobody listens to cursor executions (audits, tracing): they see all."""
        return self._dialect == "sqlite" and not _observed(conn)

    def _dbapi(self, conn: Connection | sqlite3.Connection) -> sqlite3.Connection | None:
        """The SQLite connection to run :class:`_Fast` statements on, if they may be."""
        if isinstance(conn, sqlite3.Connection):
            return conn  # from _hot_tx
        return conn.connection.driver_connection if self._raw_ok(conn) else None

    def _rows(
        self, conn: Connection | sqlite3.Connection, stmt: sa.ClauseElement, params: Mapping
    ) -> list:
        """All rows of a hot-path SELECT (raw DBAPI on SQLite, see :class:`_Fast`)."""
        dbapi = self._dbapi(conn)
        if dbapi is not None:
            return self._fast(stmt).rows(dbapi, params)
        return list(conn.execute(stmt, params))

    def _insert_one(
        self, conn: Connection | sqlite3.Connection, stmt: sa.ClauseElement, row: Mapping
    ) -> None:
        """Insert one full row of a hot-path table (raw DBAPI on SQLite)."""
        dbapi = self._dbapi(conn)
        if dbapi is not None:
            fast = self._fast(stmt, list(row))
            dbapi.execute(fast.sql, fast.params(row))
        else:
            conn.execute(stmt, row)

    def _create_schema(self) -> None:
        # Serialised so that several workers starting at once do not race on CREATE TABLE.
        with self._tx(write=True, lock="revival:schema") as conn:
            metadata.create_all(conn, checkfirst=True)

    # ----------------------------------------------------------------- decisions

    def _decision_exists(self, conn: Connection | sqlite3.Connection, decision_id: str) -> bool:
        return bool(self._rows(conn, DECISION_EXISTS, {"decision_id": decision_id}))

    def record_decision(self, decision: DecisionRecord) -> None:
        """Append ``decision``; raise :class:`DuplicateDecision` if its id is taken."""
        if not isinstance(decision, DecisionRecord):
            raise InvalidRecord(f"expected a DecisionRecord, got {type(decision).__name__}")
        row = decision_row(decision, _utcnow())  # validates the JSON before opening a transaction
        try:
            with self._tx(write=True, lock=f"customer:{decision.customer_id}") as conn:
                if self._decision_exists(conn, decision.decision_id):
                    raise DuplicateDecision(decision.decision_id)
                self._insert_one(conn, INSERT_DECISION, row)
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
    ) -> tuple[DecisionRecord, str | None]:
        # One write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the customer's advisory
        # lock) around read + decide + insert: half the round trips of a read followed by
        # a checked reservation, and no lost races to retry. The engine's ~0.5 ms runs
        # under the lock, which bounds one SQLite file to ~2,000 recorded decisions/s.
        # Hold-outs are capped like their treated twins (shadow contacts, module docstring).
        since = as_utc(since)
        decision: DecisionRecord | None = None
        try:
            with self._hot_tx(write=True, lock=f"customer:{customer_id}") as conn:
                history = self._history(conn, customer_id, since)
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
                self._insert_one(conn, INSERT_DECISION, row)
        except StoreIntegrityError:
            if decision is not None and self.get_decision(decision.decision_id) is not None:
                raise DuplicateDecision(decision.decision_id) from None
            raise
        return decision, None

    def get_decisions(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        ids = sorted(set(decision_ids))
        found: dict[str, DecisionRecord] = {}
        with self._tx() as conn:
            for chunk in _chunks(ids):
                q = sa.select(decisions).where(decisions.c.decision_id.in_(chunk))
                for row in conn.execute(q).mappings():
                    found[row["decision_id"]] = decision_from(row)
        return found

    def first_sends(self, decision_ids: Iterable[str]) -> dict[tuple[str, str], datetime]:
        ids = sorted(set(decision_ids))
        first: dict[tuple[str, str], datetime] = {}
        key = (events.c.customer_id, events.c.decision_id)
        with self._tx() as conn:
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
        with self._tx() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else decision_from(row)

    # ----------------------------------------------------------------- events

    @staticmethod
    def _existing_keys(conn: Connection, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            q = sa.select(events.c.dedup_key).where(events.c.dedup_key.in_(keys[i : i + 500]))
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
        tries = 1 if self._dialect == "sqlite" else 3
        for attempt in range(tries):
            try:
                return self._insert_events(events_)
            except StoreIntegrityError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_events(self, events_: Sequence[EventRecord]) -> tuple[int, int]:
        now = _utcnow()
        with self._tx(write=True) as conn:
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
        q = sa.select(*[events.c[n] for n in EVENT_COLUMNS]).where(
            events.c.ts >= as_utc(start), events.c.ts < as_utc(end)
        )
        if customer_id is not None:
            q = q.where(events.c.customer_id == customer_id)
        if event is not None:
            q = q.where(events.c.event == event)
        if campaign_id is not None:
            q = q.where(events.c.campaign_id == campaign_id)
        with self._tx() as conn:
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
        conn: Connection | sqlite3.Connection,
        customer_id: str,
        lo: datetime,
        hi: datetime | None,
        channel: str | None = None,
    ) -> tuple[list[ContactRecord], list[ContactRecord]]:
        """(contacts, shadow contacts) with ``lo <= time <= hi`` (see the module docstring)."""
        q = contact_statement(hi is not None, channel is not None)
        params: dict[str, Any] = {"customer_id": customer_id, "lo": lo}
        if hi is not None:
            params["hi"] = hi
        if channel is not None:
            params["channel"] = channel
        return contact_records(customer_id, self._rows(conn, q, params))

    def recent_contacts(
        self,
        customer_id: str,
        since: datetime,
        channel: str | None = None,
        until: datetime | None = None,
    ) -> list[ContactRecord]:
        """Contacts with ``since <= time`` (and ``time < until``), oldest first."""
        lo, hi = as_utc(since), opt_utc(until)
        with self._tx() as conn:
            found, _ = self._contacts(conn, customer_id, lo, hi, channel)
        return [c for c in found if hi is None or c.ts < hi]

    def contact_counts(self, customer_id: str, now: datetime) -> ContactCounts:
        """Contact counts within 24 h and 7 days of ``now``, for frequency caps."""
        now = as_utc(now)
        with self._tx() as conn:
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
        with self._tx() as conn:
            rows = self._rows(conn, q, params)
        return summarise_engagement(rows) if customer_id is not None else population_summary(rows)

    def engagement(self, customer_id: str, since: datetime | None = None) -> dict[str, Engagement]:
        """Per-channel message outcomes of one customer (events at or after ``since``)."""
        return self._engagement(customer_id, since)

    def population_engagement(self, since: datetime | None = None) -> dict[str, Engagement]:
        return self._engagement(None, since)

    def _history(
        self, conn: Connection | sqlite3.Connection, customer_id: str, since: datetime
    ) -> CustomerHistory:
        """Contacts since ``since``, consents and engagement: one statement, one round trip."""
        params = {"customer_id": customer_id, "lo": as_utc(since)}
        return history_from(customer_id, self._rows(conn, history_statement(), params))

    def customer_history(self, customer_id: str, since: datetime) -> CustomerHistory:
        with self._hot_tx() as conn:
            return self._history(conn, customer_id, since)

    # ----------------------------------------------------------------- consent

    def set_consent(
        self, customer_id: str, channel: str, granted: bool, ts: datetime, source: str
    ) -> None:
        check_str("customer_id", customer_id)
        check_channel(channel)
        check_bool("granted", granted)
        check_str("source", source, 64)
        row = {
            "customer_id": customer_id,
            "channel": channel,
            "granted": granted,
            "ts": as_utc(ts),
            "source": source,
            "recorded_at": _utcnow(),
        }
        with self._tx(write=True) as conn:
            conn.execute(consents.insert().values(row))

    def _consents(
        self, conn: Connection | sqlite3.Connection, customer_id: str, as_of: datetime | None
    ) -> dict[str, bool]:
        q = consent_statement(as_of is not None)
        params: dict[str, Any] = {"customer_id": customer_id}
        if as_of is not None:
            params["as_of"] = as_utc(as_of)
        return consent_state(self._rows(conn, q, params))

    def consents(self, customer_id: str, as_of: datetime | None = None) -> dict[str, bool]:
        """Current consent per channel that has any consent history.

        Latest wins between consent rows and revoking events (``unsubscribed``,
        ``complained``; a channel-less one revokes every channel); on equal timestamps a
        revocation wins. Channels without any history are absent (caller's default).
        """
        with self._tx() as conn:
            return self._consents(conn, customer_id, as_of)

    # ----------------------------------------------------------------- reports

    def decisions_between(
        self, start: datetime, end: datetime, campaign_id: str | None = None
    ) -> pd.DataFrame:
        q = sa.select(decisions).where(
            decisions.c.ts >= as_utc(start), decisions.c.ts < as_utc(end)
        )
        if campaign_id is not None:
            q = q.where(decisions.c.campaign_id == campaign_id)
        q = q.order_by(decisions.c.ts, decisions.c.decision_id)
        with self._tx() as conn:
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
        with self._tx() as conn:
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
            with self._tx(write=True) as conn:
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
        with self._tx(write=True) as conn:
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
        with self._tx() as conn:
            row = self._success(conn, decision_id)
        return None if row is None else attempt_from(row, status="sent")

    def dispatch_attempts(self, decision_id: str) -> list[DispatchAttempt]:
        """The dispatch log of ``decision_id`` in order."""
        q = (
            sa.select(dispatches)
            .where(dispatches.c.decision_id == decision_id)
            .order_by(dispatches.c.attempt, dispatches.c.dispatch_id)
        )
        with self._tx() as conn:
            return [attempt_from(r) for r in conn.execute(q)]

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if not self._closed:
            with self._pin_lock:
                self._closed = True
                pins, self._pins = self._pins, []
            for conn in pins:
                with suppress(sqlite3.Error):
                    conn.close()
            self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqlContactStore({self.url.render_as_string(hide_password=True)!r})"


def open_store(url: str) -> ContactStore:
    """Open the contact store at ``url`` (any SQLAlchemy URL; e.g. ``sqlite:///var/c.db``)."""
    return SqlContactStore(url)
