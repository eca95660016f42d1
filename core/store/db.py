"""The store's database connection: engine set-up per backend, transactions, error mapping.

:class:`Database` opens a SQLAlchemy engine on a URL and hands out transactions.

SQLite: WAL journal, ``busy_timeout`` and foreign keys are set on every connection; write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the lock instead
of failing on a stale snapshot. Several processes may share one file. PostgreSQL
(``postgresql+psycopg://user@host:port/db``): ``lock`` names serialise writers with
``pg_advisory_xact_lock`` (needs the default READ COMMITTED isolation so a reader sees the
previous holder's commit); ``busy_timeout_ms`` becomes ``lock_timeout`` and the connect
timeout. Driver and SQLAlchemy errors surface as the store's own (:func:`db_errors`).

The decision path has a second way in, on SQLite files only (:meth:`Database.hot_tx`): the
thread's own DBAPI connection and statements compiled once (:class:`_Fast`). It stays
because it pays (``benchmarks.serving`` in-process rows, measured against SQLAlchemy alone):
without it "decide recorded" takes 1.5x, "decide dry_run" 1.8x and "store: history read"
4.3x as long.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from core.store.records import StoreError, StoreIntegrityError, StoreUnavailable

__all__ = ["Conn", "Database", "db_errors"]

log = logging.getLogger(__name__)

_SQLITE_MMAP_BYTES = 256 * 2**20

# a transaction's connection: SQLAlchemy's, or the raw SQLite one of Database.hot_tx
Conn = Connection | sqlite3.Connection


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0][:300]


@contextmanager
def db_errors() -> Iterator[None]:
    """Driver and SQLAlchemy errors as the store's own (what callers can act on)."""
    try:
        yield
    except (sa_exc.IntegrityError, sqlite3.IntegrityError) as exc:
        raise StoreIntegrityError(f"write rejected by the database: {_short(exc)}") from exc
    except (sa_exc.OperationalError, sqlite3.OperationalError) as exc:
        raise StoreUnavailable(f"database unavailable or locked: {_short(exc)}") from exc
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        raise StoreError(f"database error: {_short(exc)}") from exc


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


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int, wal: bool) -> None:
    @sa_event.listens_for(engine, "connect")
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

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _observed(engine: Engine) -> bool:
    """Somebody listens to cursor executions (audits, tracing): raw DBAPI calls would hide
    statements from them."""
    d = engine.dispatch
    return bool(d.before_cursor_execute or d.after_cursor_execute)


# pays: without it "decide recorded" 1.5x, "decide dry_run" 1.8x, "history read" 4.3x
class _Fast:
    """One statement compiled once for SQLite and run on the raw DBAPI connection.

    A recorded decision runs two statements (its history, the insert) between BEGIN and
    COMMIT; SQLAlchemy's per-execution work (execution context, cache-key lookup, result
    set-up) costs several times SQLite's own. Same SQL and the same bind/result type
    processing (each type's own processors for this dialect), on the same connection and
    therefore in the same transaction; driver errors are mapped by :func:`db_errors`.
    """

    __slots__ = ("sql", "names", "static", "procs", "results", "row")

    def __init__(self, stmt: sa.ClauseElement, dialect: sa.Dialect, column_keys: Any = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        binds = compiled.binds
        self.static = {k: b.value for k, b in binds.items() if not b.required}
        self.procs = tuple(
            binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in self.names
        )
        cols = list(stmt.selected_columns) if isinstance(stmt, sa.SelectBase) else []
        self.results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols
        )
        self.row = collections.namedtuple("Row", [c.key for c in cols]) if cols else None

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


class Database:
    """A SQLAlchemy engine on ``url`` set up for the store (module docstring), and its
    transactions: :meth:`tx` for everything, :meth:`hot_tx` for the decision path."""

    def __init__(self, url: str, busy_timeout_ms: int = 5000, echo: bool = False):
        try:
            self.url = make_url(url)
        except sa_exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {exc}") from exc
        self.dialect = self.url.get_backend_name()
        self._closed = False
        self._fast_cache: dict[int, tuple[sa.ClauseElement, _Fast]] = {}
        self._local = threading.local()  # the decision path's connection per thread
        self._pins: list[sqlite3.Connection] = []
        self._pin_lock = threading.Lock()
        kwargs: dict[str, Any] = {"echo": echo}
        memory = False
        if self.dialect == "sqlite":
            database = self.url.database or ""
            memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if memory:
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        if self.dialect == "postgresql":
            # busy_timeout's PostgreSQL twin: a writer queued on another's lock (the per
            # customer advisory lock, a row lock) gives up after it -> StoreUnavailable.
            kwargs["connect_args"] = {
                "connect_timeout": max(1, math.ceil(busy_timeout_ms / 1000)),
                "options": f"-c lock_timeout={int(busy_timeout_ms)}",
            }
        try:
            self.engine = sa.create_engine(self.url, **kwargs)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                f"cannot open store {self.url.render_as_string(hide_password=True)}: {exc}"
            ) from exc
        # an in-memory database lives in the pool's one shared connection: never detach it
        self._pin_ok = self.dialect == "sqlite" and not memory
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self.engine, busy_timeout_ms, wal=not memory)

    @contextmanager
    def tx(self, write: bool = False, lock: str | None = None) -> Iterator[Connection]:
        """A transaction; ``write`` takes SQLite's write lock up front, ``lock`` a PG lock."""
        if self._closed:
            raise StoreError("store is closed")
        with db_errors(), self.engine.connect() as conn:
            if write and self.dialect == "sqlite":
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if lock is not None and self.dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(lock))))
                yield conn

    # the pinned connection pays: without it "recorded" 1.4x, "dry_run" 1.3x, "history read" 2.5x
    @contextmanager
    def hot_tx(self, write: bool = False, lock: str | None = None) -> Iterator[Conn]:
        """:meth:`tx` for the decision path (statements via :meth:`rows` / :meth:`insert_one`).

        On a SQLite file it is the thread's own DBAPI connection (:meth:`_pinned`) between
        ``BEGIN [IMMEDIATE]`` and ``COMMIT``: SQLAlchemy's per-transaction bookkeeping
        (connection object, begin event, commit, close) and the pool's check-out and return
        cost more than SQLite's own transaction. Not while anybody listens to cursor
        executions (they see every statement) and not on other databases.
        """
        if not self._pin_ok or _observed(self.engine):
            with self.tx(write, lock) as conn:
                yield conn
            return
        if self._closed:
            raise StoreError("store is closed")
        with db_errors():
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
            fairy = self.engine.raw_connection()
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
            fast = (stmt, _Fast(stmt, self.engine.dialect, column_keys))
            self._fast_cache[id(stmt)] = fast
        return fast[1]

    def rows(self, conn: Conn, stmt: sa.ClauseElement, params: Mapping) -> list:
        """All rows of a SELECT, in a :meth:`tx` or :meth:`hot_tx` transaction."""
        if isinstance(conn, sqlite3.Connection):
            return self._fast(stmt).rows(conn, params)
        return list(conn.execute(stmt, params))

    def insert_one(self, conn: Conn, stmt: sa.ClauseElement, row: Mapping) -> None:
        """Insert one full row, in a :meth:`tx` or :meth:`hot_tx` transaction."""
        if isinstance(conn, sqlite3.Connection):
            fast = self._fast(stmt, list(row))
            conn.execute(fast.sql, fast.params(row))
        else:
            conn.execute(stmt, row)

    def close(self) -> None:
        """Close the pinned connections and the pool; the database is unusable afterwards."""
        if not self._closed:
            with self._pin_lock:
                self._closed = True
                pins, self._pins = self._pins, []
            for conn in pins:
                with suppress(sqlite3.Error):
                    conn.close()
            self.engine.dispose()
