"""Contact-history store: append-only log, dedup, consent, rolling caps, concurrency, time zones.

Every test taking ``store``/``store_url`` runs on both backends (``[sqlite]`` and
``[postgresql]`` in the test ids): a temp-dir SQLite file, and a fresh database on the
``pg_server`` fixture's PostgreSQL (``REVIVAL_TEST_PG_URL`` or a throw-away cluster; see
tests/pg.py). Tests named ``test_sqlite_*`` cover SQLite-only behaviour.
"""

from __future__ import annotations

import math
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from core import store as store_mod
from core.store import (
    KNOWN_CHANNELS,
    AlreadyDispatched,
    CapSpec,
    ContactStore,
    DecisionRecord,
    DispatchAttempt,
    DispatchInProgress,
    DuplicateDecision,
    Engagement,
    EventRecord,
    InvalidRecord,
    NotDispatchable,
    SqlContactStore,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
    UnknownDecision,
    open_store,
)
from core.store import db as store_db

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(days=1)
D = timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store location: a SQLite file in nested new folders, or a PG database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'contacts.db'}"
    return request.getfixturevalue("pg_url")  # only PostgreSQL runs start the server


@pytest.fixture
def store(store_url: str) -> Iterator[SqlContactStore]:
    s = SqlContactStore(store_url)
    yield s
    s.close()


def _decision(
    decision_id: str,
    customer_id: str = "c1",
    ts: datetime = NOW,
    channel: str | None = "sms",
    send_at: datetime | None = None,
    holdout: bool = False,
    revive: bool = True,
    campaign_id: str = "spring",
    **payload: object,
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id,
        customer_id=customer_id,
        campaign_id=campaign_id,
        ts=ts,
        channel=channel,
        send_at=send_at,
        intent="winback",
        offer_type="coupon_10",
        holdout=holdout,
        revive=revive,
        priority=0.75,
        payload={"decision_id": decision_id, **payload},
        model_versions={"churn": "7", "next_purchase": "3"},
    )


def _event(event: str, ts: datetime, customer_id: str = "c1", **kw: object) -> EventRecord:
    return EventRecord(customer_id=customer_id, ts=ts, event=event, **kw)


# --------------------------------------------------------------------------- set-up


def test_sqlite_file_pragmas_and_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "contacts.db"
    s = SqlContactStore(f"sqlite:///{path}", busy_timeout_ms=4321)
    try:
        assert path.parent.is_dir() and path.is_file()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        s.close()
    raw = sqlite3.connect(path)  # the file is a plain SQLite database with our tables
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert {"decisions", "events", "consents", "dispatches", "dispatch_success"} <= tables


def test_schema_creation_is_idempotent_and_data_persists(store_url: str) -> None:
    first = open_store(store_url)
    assert isinstance(first, ContactStore)
    first.record_decision(_decision("d1"))
    first.close()
    with open_store(store_url) as second, open_store(store_url) as third:
        assert second.get_decision("d1") == _decision("d1")
        assert third.counts()["decisions"] == 1


def test_closed_store_refuses_work(store: SqlContactStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.counts()


# --------------------------------------------------------------------------- append-only


def test_log_is_append_only(store: SqlContactStore) -> None:
    statements: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    caps = CapSpec(per_day=1, per_week=5, global_week=5)
    store.record_decision(_decision("d1"))
    with pytest.raises(DuplicateDecision):
        store.record_decision(_decision("d1"))
    assert store.reserve_contact(_decision("d2", ts=NOW + 2 * H), caps) == (
        False,
        "cap_channel_day",
    )
    assert store.reserve_contact(_decision("d3", ts=NOW + 3 * D), caps) == (True, None)
    store.record_event(_event("opened", NOW, channel="sms", dedup_key="k1"))
    store.record_events([_event("opened", NOW, dedup_key="k1"), _event("clicked", NOW)])
    store.set_consent("c1", "sms", True, NOW, "signup")
    store.set_consent("c1", "sms", False, NOW + H, "support")
    attempt = store.begin_dispatch("d1", "c1", "sms", NOW)
    store.finish_dispatch(
        DispatchAttempt(decision_id="d1", attempt=attempt, status="failed", ts=NOW)
    )
    store.set_consent("c1", "sms", True, NOW + 2 * H, "signup")
    attempt = store.begin_dispatch("d1", "c1", "sms", NOW + 3 * H)
    store.finish_dispatch(
        DispatchAttempt(decision_id="d1", attempt=attempt, status="sent", ts=NOW + 3 * H)
    )
    with pytest.raises(AlreadyDispatched):
        store.begin_dispatch("d1", "c1", "sms", NOW + 4 * H)
    store.consents("c1")
    store.contact_counts("c1", NOW)

    sql = [s.strip().upper() for s in statements]
    inserted_into = {s.split()[2].strip('"') for s in sql if s.startswith("INSERT INTO")}
    assert inserted_into == {
        "DECISIONS",
        "EVENTS",
        "CONSENTS",
        "DISPATCHES",
        "DISPATCH_SUCCESS",
    }
    forbidden = ("UPDATE ", "DELETE ", "REPLACE ", "INSERT OR REPLACE", "ON CONFLICT", "TRUNCATE")
    offending = [s for s in sql if any(word in s for word in forbidden)]
    assert offending == []


# --------------------------------------------------------------------------- decisions


def test_decision_round_trip(store: SqlContactStore) -> None:
    d = _decision("d1", send_at=NOW + 3 * H, score=0.5, items=["a", "b"], nested={"x": None})
    store.record_decision(d)
    got = store.get_decision("d1")
    assert got == d
    assert got.payload["items"] == ["a", "b"] and got.model_versions["churn"] == "7"
    assert store.get_decision("nope") is None


def test_batch_lookups_by_decision_id(store: SqlContactStore) -> None:
    """``get_decisions`` and ``first_sends`` answer many ids at once (more than one ``IN``
    list's worth), leave unknown ids out and key first sends by customer and decision."""
    ids = [f"d{i:04d}" for i in range(1203)]
    for i, d in enumerate(ids):
        store.record_decision(_decision(d, customer_id=f"c{i % 7}", ts=NOW + i * H))
    got = store.get_decisions([*ids, "nope", ids[0]])
    assert sorted(got) == ids and got["d0042"] == store.get_decision("d0042")
    assert got["d0042"].customer_id == "c0" and got["d0042"].ts == NOW + 42 * H
    store.record_events(
        [
            _event("sent", NOW + 3 * D, decision_id="d0001", channel="sms"),
            _event("sent", NOW + 2 * D, decision_id="d0001", channel="sms"),  # earlier
            _event("sent", NOW + 5 * D, customer_id="other", decision_id="d0001"),
            _event("opened", NOW + D, decision_id="d0001", channel="sms"),  # not a send
            _event("sent", NOW + 4 * D, customer_id="c2", decision_id="d1200", channel="sms"),
            _event("sent", NOW, customer_id="c2", decision_id="elsewhere", channel="sms"),
        ]
    )
    first = store.first_sends([*ids, "elsewhere", "unsent"])
    assert first == {
        ("c1", "d0001"): NOW + 2 * D,
        ("other", "d0001"): NOW + 5 * D,
        ("c2", "d1200"): NOW + 4 * D,
        ("c2", "elsewhere"): NOW,
    }
    assert all(t.tzinfo is UTC for t in first.values())
    assert store.get_decisions([]) == {} and store.first_sends([]) == {}


def test_duplicate_decision_rejected_and_store_unchanged(store: SqlContactStore) -> None:
    store.record_decision(_decision("d1", channel="sms"))
    store.record_event(_event("sent", NOW, channel="sms", decision_id="d1"))
    before = store.counts()
    for attempt in (
        lambda: store.record_decision(_decision("d1", channel="email", revive=False)),
        lambda: store.reserve_contact(_decision("d1"), CapSpec(9, 9, 9)),
    ):
        with pytest.raises(DuplicateDecision, match="'d1'"):
            attempt()
    assert store.counts() == before
    assert store.get_decision("d1") == _decision("d1", channel="sms")


def test_unserialisable_payload_rejected_and_nothing_written(store: SqlContactStore) -> None:
    before = store.counts()
    with pytest.raises(InvalidRecord, match="payload"):
        store.record_decision(_decision("d1", blob=object()))
    with pytest.raises(InvalidRecord, match="payload"):
        store.record_decision(_decision("d2", score=math.nan))
    assert store.counts() == before


def test_records_validate_on_construction() -> None:
    with pytest.raises(InvalidRecord, match="event must be one of"):
        _event("bogus", NOW)
    with pytest.raises(InvalidRecord, match="channel"):
        _event("sent", NOW, channel="SMS")
    with pytest.raises(InvalidRecord, match="send_at"):
        _decision("d1", send_at=NOW - H)
    with pytest.raises(InvalidRecord, match="customer_id"):
        _decision("d1", customer_id=" ")
    with pytest.raises(InvalidRecord, match="value"):
        _event("purchase", NOW, value=math.inf)
    with pytest.raises(InvalidRecord, match="per_week"):
        CapSpec(per_day=1, per_week=-1, global_week=3)


def test_latest_decision(store: SqlContactStore) -> None:
    assert store.latest_decision("c1") is None
    for i, ts in enumerate([NOW - 2 * D, NOW, NOW - D]):
        store.record_decision(_decision(f"d{i}", ts=ts))
    store.record_decision(_decision("other", customer_id="c2", ts=NOW + D))
    assert store.latest_decision("c1").decision_id == "d1"
    assert store.latest_decision("c1", before=NOW).decision_id == "d2"
    assert store.latest_decision("c1", before=NOW - 2 * D) is None


# --------------------------------------------------------------------------- time zones


def test_timezone_round_trip(store: SqlContactStore) -> None:
    shanghai = timezone(timedelta(hours=8))
    local = datetime(2024, 3, 10, 20, 0, 0, 123456, tzinfo=shanghai)  # == 12:00:00.123456 UTC
    store.record_decision(_decision("tz", ts=local, send_at=local + H))
    store.record_decision(_decision("naive", ts=datetime(2024, 3, 10, 12, 0)))  # naive = UTC
    got = store.get_decision("tz")
    assert got.ts == local and got.ts.tzinfo == UTC and got.ts.hour == 12
    assert got.ts.microsecond == 123456 and got.send_at == local + H
    assert store.get_decision("naive").ts == NOW and store.get_decision("naive").ts.tzinfo == UTC

    store.record_event(_event("opened", local, channel="sms"))
    frame = store.events_between(NOW, NOW + H)  # naive bounds would be UTC too
    assert len(frame) == 1 and str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[0] == pd.Timestamp("2024-03-10 12:00:00.123456", tz="UTC")
    decisions = store.decisions_between(
        datetime(2024, 3, 10, 19, 0, tzinfo=shanghai), datetime(2024, 3, 10, 13, 0)
    )
    assert sorted(decisions["decision_id"]) == ["naive", "tz"]
    assert str(decisions["send_at"].dt.tz) == "UTC"


def test_sqlite_datetimes_are_stored_in_sqlalchemys_own_text_format(tmp_path: Path) -> None:
    """The fast SQLite bind writes exactly what SQLAlchemy's DATETIME would (files written
    before it stay comparable as strings), and the column is still declared DATETIME."""
    reference = sa.DateTime()._cached_bind_processor(sa.create_engine("sqlite://").dialect)
    shanghai = timezone(timedelta(hours=8))
    moments = [
        datetime(2024, 3, 10, 12, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2024, 3, 10, 20, 0, 0, 123456, tzinfo=shanghai),
        datetime(999, 1, 2, 3, 4, 5, 7, tzinfo=UTC),  # four-digit year, zero-padded
        datetime(2024, 12, 31, 23, 59, 59, 999999),  # naive = UTC
    ]
    s = SqlContactStore(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        for i, ts in enumerate(moments):
            s.record_decision(_decision(f"d{i}", ts=ts))
    finally:
        s.close()
    con = sqlite3.connect(tmp_path / "c.db")
    stored = [r[0] for r in con.execute("SELECT ts FROM decisions ORDER BY decision_id")]
    ddl = con.execute("SELECT sql FROM sqlite_master WHERE name = 'decisions'").fetchone()[0]
    con.close()
    expected = [reference(store_mod.as_utc(ts).replace(tzinfo=None)) for ts in moments]
    assert stored == expected
    assert stored[0] == "2024-03-10 12:00:00.000000" and stored[2].startswith("0999-")
    assert "\tts DATETIME NOT NULL" in ddl and "send_at DATETIME" in ddl


# --------------------------------------------------------------------------- events


def test_event_dedup(store: SqlContactStore) -> None:
    e = _event("delivered", NOW, channel="sms", decision_id="d1", dedup_key="gw:123")
    assert store.record_event(e) is True
    assert store.record_event(_event("opened", NOW + H, dedup_key="gw:123")) is False
    batch = [
        _event("opened", NOW, channel="sms", dedup_key="gw:124"),
        _event("opened", NOW, channel="sms", dedup_key="gw:124"),  # duplicate within the batch
        _event("clicked", NOW, channel="sms", dedup_key="gw:123"),  # already stored
        _event("clicked", NOW, channel="sms"),  # no key: never a duplicate
        _event("clicked", NOW, channel="sms"),
    ]
    assert store.record_events(batch) == (3, 2)
    assert store.record_events([]) == (0, 0)
    frame = store.events_between(NOW - D, NOW + D)
    assert sorted(frame["dedup_key"].dropna()) == ["gw:123", "gw:124"]
    assert frame.loc[frame["dedup_key"] == "gw:123", "event"].tolist() == ["delivered"]
    assert store.counts()["events"] == 4


def test_record_events_is_all_or_nothing(store: SqlContactStore) -> None:
    store.record_event(_event("sent", NOW, channel="sms"))
    before = store.counts()
    good = [_event("opened", NOW, channel="sms", dedup_key=f"k{i}") for i in range(3)]
    with pytest.raises(InvalidRecord, match=r"events\[3\]"):
        store.record_events([*good, {"event": "opened"}])  # type: ignore[list-item]
    # A record corrupted after validation is stopped by the database's CHECK constraint,
    # and the rows before it in the batch are rolled back with it.
    tampered = _event("opened", NOW)
    object.__setattr__(tampered, "event", "exploded")
    with pytest.raises(StoreIntegrityError):
        store.record_events([*good, tampered])
    assert store.counts() == before
    assert store.record_events(good) == (3, 0)  # the keys were not consumed by the failures


# --------------------------------------------------------------------------- consent


def test_consent_latest_wins_and_revocations(store: SqlContactStore) -> None:
    t = [NOW + i * H for i in range(10)]
    assert store.consents("c1") == {}
    store.set_consent("c1", "sms", True, t[1], "signup")
    store.set_consent("c1", "email", True, t[1], "signup")
    store.set_consent("c1", "sms", False, t[3], "support")
    store.set_consent("c1", "sms", True, t[2], "import")  # written later but older: loses
    assert store.consents("c1") == {"email": True, "sms": False}
    store.set_consent("c1", "sms", True, t[4], "app")
    assert store.consents("c1")["sms"] is True

    store.record_event(_event("unsubscribed", t[5], channel="sms"))
    assert store.consents("c1") == {"email": True, "sms": False}
    store.record_event(_event("complained", t[5], channel="email"))
    assert store.consents("c1") == {"email": False, "sms": False}
    store.set_consent("c1", "email", True, t[6], "preference_center")  # re-opt-in after it
    assert store.consents("c1") == {"email": True, "sms": False}

    store.set_consent("c1", "sms", True, t[7], "app")
    store.record_event(_event("unsubscribed", t[7], channel="sms"))  # same instant: revoke wins
    assert store.consents("c1")["sms"] is False

    store.set_consent("c1", "line", True, t[8], "app")
    store.record_event(_event("unsubscribed", t[9]))  # no channel: revokes every channel
    assert store.consents("c1") == {ch: False for ch in {*KNOWN_CHANNELS, "line"}}

    assert store.consents("c1", as_of=t[4]) == {"email": True, "sms": True}
    assert store.consents("c2") == {}
    store.record_event(_event("unsubscribed", t[1], customer_id="c2", channel="wechat"))
    assert store.consents("c2") == {"wechat": False}


def test_consent_dedup_by_key_and_by_no_change(store: SqlContactStore) -> None:
    """#14 finding 5: re-delivered consents were stored again. A keyed consent is stored
    once; an ``if_changed`` one only when it changes the channel's current state, so a
    grant -> revoke -> grant sequence still takes effect."""
    assert store.set_consent("c1", "sms", True, NOW, "api", dedup_key="k1") is True
    assert store.set_consent("c1", "sms", True, NOW, "api", dedup_key="k1") is False
    assert store.counts()["consents"] == 1
    # no key: stored only when it changes the current state (as of its ts)
    assert store.set_consent("c1", "sms", True, NOW + H, "api", if_changed=True) is False
    assert store.set_consent("c1", "sms", False, NOW + H, "api", if_changed=True) is True
    assert store.set_consent("c1", "sms", False, NOW + 2 * H, "api", if_changed=True) is False
    assert store.set_consent("c1", "sms", True, NOW + 3 * H, "api", if_changed=True) is True
    assert store.consents("c1") == {"sms": True}
    # no history for the channel yet: the first consent is stored
    assert store.set_consent("c1", "email", True, NOW, "api", if_changed=True) is True
    assert store.counts()["consents"] == 4
    with pytest.raises(InvalidRecord, match="dedup_key"):
        store.set_consent("c1", "sms", True, NOW, "api", dedup_key="x" * 256)


def test_a_store_made_before_consent_dedup_is_upgraded_at_open(store_url: str) -> None:
    """An existing database whose consents table has no ``dedup_key`` (the previous schema)
    keeps its rows and gains the column and its unique index when the store opens."""
    old = sa.MetaData()
    old_consents = sa.Table(
        "consents",
        old,
        sa.Column("consent_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    if store_url.startswith("sqlite"):
        Path(store_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(store_url)
    naive = NOW.replace(tzinfo=None) if store_url.startswith("sqlite") else NOW
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(
            old_consents.insert(),
            [
                {
                    "customer_id": "c1",
                    "channel": "sms",
                    "granted": True,
                    "ts": naive,
                    "source": "signup",
                    "recorded_at": naive,
                },
                {
                    "customer_id": "c1",
                    "channel": "email",
                    "granted": False,
                    "ts": naive,
                    "source": "support",
                    "recorded_at": naive,
                },
            ],
        )
    engine.dispose()
    with SqlContactStore(store_url) as s:
        assert s.consents("c1") == {"email": False, "sms": True}
        assert s.set_consent("c1", "sms", False, NOW + H, "api", dedup_key="k") is True
        assert s.set_consent("c1", "sms", False, NOW + H, "api", dedup_key="k") is False
        assert s.consents("c1") == {"email": False, "sms": False}
        assert s.counts()["consents"] == 3
        indexes = {ix["name"]: ix for ix in sa.inspect(s.engine).get_indexes("consents")}
        assert indexes["ix_consents_dedup_key"]["unique"]
    with SqlContactStore(store_url) as s:  # opening again changes nothing
        assert s.counts()["consents"] == 3


# --------------------------------------------------------------------------- contacts


def _contact_history(store: SqlContactStore) -> None:
    """Hand-made history of customer "cw" around NOW (see test_contact_counts)."""
    store.record_decision(_decision("A", "cw", ts=NOW - H))  # sent 5 min later (event)
    sent_a = NOW - H + timedelta(minutes=5)
    store.record_event(_event("sent", sent_a, "cw", channel="sms", decision_id="A"))
    store.record_decision(_decision("B", "cw", ts=NOW - D + timedelta(seconds=1)))
    store.record_decision(_decision("C", "cw", ts=NOW - D))  # exactly 24 h: week only
    store.record_decision(_decision("D", "cw", ts=NOW - 3 * D, channel="email"))
    store.record_decision(_decision("E", "cw", ts=NOW - 7 * D + timedelta(minutes=1)))
    store.record_decision(_decision("F", "cw", ts=NOW - 7 * D))  # exactly 7 days: out
    store.record_decision(_decision("G", "cw", ts=NOW - H / 2, send_at=NOW + 2 * H))  # scheduled
    store.record_decision(_decision("H", "cw", ts=NOW - 2 * H, holdout=True))  # not contacted
    store.record_decision(_decision("I", "cw", ts=NOW - 2 * H, revive=False, channel=None))
    store.record_decision(_decision("I2", "cw", ts=NOW - 2 * H, revive=False))
    store.record_event(_event("sent", NOW - 5 * H, "cw", channel="sms"))  # sent elsewhere
    # K decided 10 days ago, actually sent 2 h ago: counts at the send, once.
    store.record_decision(_decision("K", "cw", ts=NOW - 10 * D))
    store.record_event(_event("sent", NOW - 2 * H, "cw", channel="sms", decision_id="K"))
    store.record_event(_event("sent", NOW - H, "cw", channel="sms", decision_id="K"))
    store.record_decision(_decision("M", "other", ts=NOW - H))  # another customer
    store.record_event(_event("sent", NOW - 3 * H, "cw"))  # channel unknown: global only
    store.record_decision(_decision("O", "cw", ts=NOW, send_at=NOW + 8 * D))  # too far ahead
    store.record_event(_event("opened", NOW - H, "cw", channel="sms", decision_id="A"))


def test_contact_counts_over_rolling_windows(store: SqlContactStore) -> None:
    _contact_history(store)
    counts = store.contact_counts("cw", NOW)
    # sms within 24 h: A (at its send), B, G (scheduled), the external send, K (at its send)
    assert counts.channel_day == {"sms": 5}
    assert counts.channel_week == {"sms": 7, "email": 1}  # + C and E; D on email
    assert counts.global_day == 6  # + the channel-less send
    assert counts.global_week == 9
    assert counts.day("email") == 0 and counts.week("wechat") == 0
    later = store.contact_counts("cw", NOW + 3 * D)
    # within 7 days of NOW + 3 d: A, B, C, G, K, the external send and O (NOW + 8 d); D
    assert later.channel_day == {} and later.channel_week == {"sms": 7, "email": 1}
    assert store.contact_counts("nobody", NOW).global_week == 0


def test_recent_contacts_definition(store: SqlContactStore) -> None:
    _contact_history(store)
    got = store.recent_contacts("cw", since=NOW - D)
    assert [(c.decision_id, c.source) for c in got] == [
        ("C", "decision"),
        ("B", "decision"),
        (None, "event"),  # NOW - 5 h, sent elsewhere
        (None, "event"),  # NOW - 3 h, no channel
        ("K", "event"),
        ("A", "event"),
        ("G", "decision"),
        ("O", "decision"),
    ]
    assert got[-2].ts == NOW + 2 * H and got[-1].ts == NOW + 8 * D
    assert all(c.customer_id == "cw" and c.ts.tzinfo == UTC for c in got)
    window = store.recent_contacts("cw", since=NOW - D, channel="sms", until=NOW)
    assert [c.decision_id for c in window] == ["C", "B", None, "K", "A"]
    assert [c.channel for c in store.recent_contacts("cw", NOW - 4 * D, "email")] == ["email"]


# --------------------------------------------------------------------------- caps


def test_reserve_contact_enforces_caps_exactly(store: SqlContactStore) -> None:
    caps = CapSpec(per_day=2, per_week=3, global_week=4)
    ok = (True, None)
    assert store.reserve_contact(_decision("r1", ts=NOW), caps) == ok
    assert store.reserve_contact(_decision("r2", ts=NOW + H), caps) == ok
    before = store.counts()
    assert store.reserve_contact(_decision("r3", ts=NOW + 2 * H), caps) == (
        False,
        "cap_channel_day",
    )
    assert store.counts() == before and store.get_decision("r3") is None
    # 25 h after r2: no longer within 24 h of either sms contact, but the week holds 2.
    assert store.reserve_contact(_decision("r4", ts=NOW + 25 * H), caps) == ok
    assert store.reserve_contact(_decision("r5", ts=NOW + 50 * H), caps) == (
        False,
        "cap_channel_week",
    )
    assert store.reserve_contact(_decision("r6", ts=NOW + 26 * H, channel="email"), caps) == ok
    assert store.reserve_contact(_decision("r7", ts=NOW + 27 * H, channel="email"), caps) == (
        False,
        "cap_global_week",
    )
    # A scheduled send is checked at its send time, against past and future contacts.
    assert store.reserve_contact(
        _decision("r8", ts=NOW - 3 * D, send_at=NOW - H / 2, channel="wechat"), caps
    ) == (False, "cap_global_week")
    assert store.counts()["decisions"] == 4
    assert store.contact_counts("c1", NOW + 26 * H).global_week == 4


def test_reserve_contact_holdouts_and_non_contacts(store: SqlContactStore) -> None:
    caps = CapSpec(per_day=1, per_week=5, global_week=5)
    assert store.reserve_contact(_decision("t1"), caps) == (True, None)
    # A holdout is capped like a treated decision (same eligible population in both arms)...
    assert store.reserve_contact(_decision("h1", ts=NOW + H, holdout=True), caps) == (
        False,
        "cap_channel_day",
    )
    assert store.reserve_contact(_decision("h2", ts=NOW + 2 * D, holdout=True), caps) == (
        True,
        None,
    )
    # ...but is not a contact, so it does not use up the cap.
    assert store.reserve_contact(_decision("t2", ts=NOW + 2 * D + H), caps) == (True, None)
    # A decision not to contact is always recorded.
    no = _decision("n1", ts=NOW + H, revive=False, channel=None)
    assert store.reserve_contact(no, caps) == (True, None)
    assert store.reserve_contact(_decision("z1", "c9"), CapSpec(0, 5, 5)) == (
        False,
        "cap_channel_day",
    )
    assert sorted(store.decisions_between(NOW - D, NOW + 9 * D)["decision_id"]) == [
        "h2",
        "n1",
        "t1",
        "t2",
    ]


def test_concurrent_reserve_never_exceeds_cap(store_url: str) -> None:
    """8 threads, each with its own store (own connections) on one database, race."""
    n_threads, per_thread = 8, 4
    caps = CapSpec(per_day=3, per_week=100, global_week=100)
    barrier = threading.Barrier(n_threads)
    results: list[tuple[bool, str | None]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            barrier.wait()
            s = SqlContactStore(store_url)  # schema creation races too
            try:
                for j in range(per_thread):
                    res = s.reserve_contact(_decision(f"t{k}-{j}", ts=NOW + j * H), caps)
                    with lock:
                        results.append(res)
            finally:
                s.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(results) == n_threads * per_thread
    assert sum(ok for ok, _ in results) == caps.per_day
    assert {reason for ok, reason in results if not ok} == {"cap_channel_day"}
    with SqlContactStore(store_url) as s:
        assert s.counts()["decisions"] == caps.per_day
        assert s.contact_counts("c1", NOW).day("sms") == caps.per_day


# --------------------------------------------------------------------------- engagement


def test_engagement_counts_messages(store: SqlContactStore) -> None:
    for d in ("e1", "e2"):
        store.record_event(_event("sent", NOW, channel="email", decision_id=d))
    store.record_event(_event("sent", NOW + H, channel="sms", decision_id="s1"))
    for i in range(3):  # three opens of one e-mail are one opened message
        store.record_event(_event("opened", NOW + i * H, channel="email", decision_id="e1"))
    store.record_event(_event("opened", NOW + 5 * H, channel="email"))  # no decision: counts
    store.record_event(_event("clicked", NOW + 3 * H, channel="email", decision_id="e1"))
    store.record_event(_event("converted", NOW + 4 * H, channel="email", decision_id="e1"))
    store.record_event(_event("bounced", NOW + H, channel="sms", decision_id="s1"))
    store.record_event(_event("purchase", NOW + 6 * H, value=42.0))  # no channel: ignored
    store.record_event(_event("sent", NOW, "c2", channel="email", decision_id="x1"))

    got = store.engagement("c1")
    assert got == {
        "email": Engagement(
            sends=2,
            opens=2,
            clicks=1,
            conversions=1,
            last_open_ts=NOW + 5 * H,
            last_send_ts=NOW,
            engaged=2,  # e1 (opened, clicked) and the opened message without a decision
            messages=(
                (NOW.timestamp(), False),
                (NOW.timestamp(), True),
                ((NOW + 5 * H).timestamp(), True),
            ),
        ),
        "sms": Engagement(
            sends=1, last_send_ts=NOW + H, bounces=1, messages=(((NOW + H).timestamp(), False),)
        ),
    }
    recent = store.engagement("c1", since=NOW + 2 * H)
    assert recent["email"].sends == 0 and recent["email"].opens == 2
    assert "sms" not in recent
    assert store.engagement("nobody") == {}
    population = store.population_engagement()
    assert population["email"].sends == 3 and population["sms"].sends == 1
    assert population["email"].engaged == 2 and population["email"].messages == ()
    assert store.population_engagement(since=NOW + 10 * H) == {}


# --------------------------------------------------------------------------- reports


def test_report_frames(store: SqlContactStore) -> None:
    empty = store.decisions_between(NOW, NOW + D)
    assert empty.empty and "model_versions" in empty.columns
    assert store.events_between(NOW, NOW + D).empty
    store.record_decision(_decision("a", ts=NOW, campaign_id="spring"))
    store.record_decision(_decision("b", ts=NOW + H, campaign_id="summer", holdout=True))
    store.record_decision(_decision("c", ts=NOW + D, campaign_id="spring"))  # end is exclusive
    frame = store.decisions_between(NOW, NOW + D)
    assert frame["decision_id"].tolist() == ["a", "b"]
    assert frame["holdout"].tolist() == [False, True]
    assert frame["payload"].iloc[0] == {"decision_id": "a"}
    assert frame["model_versions"].iloc[1] == {"churn": "7", "next_purchase": "3"}
    assert store.decisions_between(NOW, NOW + 2 * D, "spring")["decision_id"].tolist() == [
        "a",
        "c",
    ]
    store.record_event(_event("purchase", NOW, value=12.5, campaign_id="spring"))
    store.record_event(_event("opened", NOW, "c2", channel="sms", campaign_id="summer"))
    events = store.events_between(NOW, NOW + H, event="purchase")
    assert events["value"].tolist() == [12.5] and events["channel"].isna().all()
    assert store.events_between(NOW, NOW + H, customer_id="c2")["event"].tolist() == ["opened"]
    assert len(store.events_between(NOW, NOW + H, campaign_id="summer")) == 1


# --------------------------------------------------------------------------- dispatch log


def test_dispatch_log_guarantees(store: SqlContactStore) -> None:
    with pytest.raises(UnknownDecision):
        store.begin_dispatch("ghost", "c1", "sms", NOW)
    store.record_decision(_decision("d1"))
    assert store.begin_dispatch("d1", "c1", "sms", NOW) == 1
    with pytest.raises(DispatchInProgress):  # another worker holds attempt 1
        store.begin_dispatch("d1", "c1", "sms", NOW + timedelta(seconds=10), lease_s=60)
    assert store.begin_dispatch("d1", "c1", "sms", NOW + H, lease_s=60) == 2  # lease expired
    assert store.finish_dispatch(
        DispatchAttempt(
            decision_id="d1",
            attempt=2,
            status="sent",
            ts=NOW + H,
            provider_status_code=202,
            provider_message_id="m-1",
        )
    )
    with pytest.raises(AlreadyDispatched):
        store.begin_dispatch("d1", "c1", "sms", NOW + 2 * H)
    late = DispatchAttempt(decision_id="d1", attempt=1, status="sent", ts=NOW + 3 * H)
    assert store.finish_dispatch(late) is False  # attempt 1 also got through: not a 2nd success
    success = store.dispatch_success("d1")
    assert (success.attempt, success.provider_message_id, success.status) == (2, "m-1", "sent")
    assert [(a.attempt, a.status) for a in store.dispatch_attempts("d1")] == [
        (1, "sending"),
        (1, "sent"),
        (2, "sending"),
        (2, "sent"),
    ]
    sent = store.events_between(NOW, NOW + D, event="sent")
    assert sent["decision_id"].tolist() == ["d1"] and sent["campaign_id"].tolist() == ["spring"]
    assert store.contact_counts("c1", NOW).day("sms") == 1
    with pytest.raises(StoreError, match="no open attempt"):
        store.finish_dispatch(DispatchAttempt(decision_id="d1", attempt=9, status="failed", ts=NOW))


def test_dispatch_refusals_are_logged(store: SqlContactStore) -> None:
    store.record_decision(_decision("h", holdout=True))
    store.record_decision(_decision("n", revive=False, channel=None))
    store.record_decision(_decision("s"))
    store.set_consent("c1", "sms", False, NOW - H, "support")
    cases = {
        ("h", "c1", "sms"): "holdout",
        ("n", "c1", "sms"): "does not contact",
        ("s", "c1", "email"): "decision is for",
        ("s", "c1", "sms"): "consent for sms revoked",
    }
    for (decision_id, customer_id, channel), reason in cases.items():
        with pytest.raises(NotDispatchable, match=reason):
            store.begin_dispatch(decision_id, customer_id, channel, NOW)
    log = store.dispatch_attempts("s")
    assert [(a.attempt, a.status) for a in log] == [(1, "failed"), (2, "failed")]
    assert "consent" in log[-1].error
    assert store.dispatch_success("s") is None and store.counts()["dispatch_success"] == 0


def test_customer_history_reads_contacts_consents_and_engagement_in_one_statement(
    store: SqlContactStore,
) -> None:
    store.record_decision(_decision("d1", send_at=NOW + timedelta(hours=3)))
    store.record_decision(_decision("d2", customer_id="c2"))
    store.record_events(
        [
            _event("sent", NOW - timedelta(days=2), channel="email"),
            _event("opened", NOW - timedelta(days=1), channel="email"),
            _event("unsubscribed", NOW - timedelta(hours=1), channel="sms"),
        ]
    )
    store.set_consent("c1", "app_push", True, NOW - timedelta(days=9), "signup")
    selects: list[str] = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    got = store.customer_history("c1", NOW - timedelta(days=8))
    assert len(selects) == 1  # one round trip for all three
    sa.event.remove(store.engine, "before_cursor_execute", _capture)
    assert got.contacts == store.recent_contacts("c1", NOW - timedelta(days=8))
    assert [c.source for c in got.contacts] == ["event", "decision"]
    assert got.consents == store.consents("c1") == {"app_push": True, "sms": False}
    assert got.engagement == store.engagement("c1")
    assert store.customer_history("nobody", NOW).contacts == []


# --------------------------------------------------------------------------- shared-database behaviour


def _race(n: int, work) -> tuple[list, list[BaseException]]:
    """Run ``work(k)`` in ``n`` threads started together; (results, errors)."""
    barrier = threading.Barrier(n)
    results: list = []
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            barrier.wait()
            results.append(work(k))
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


def test_concurrent_event_batches_store_each_dedup_key_once(store_url: str) -> None:
    """8 workers deliver the same webhook batch at once: every key is stored exactly once."""
    workers = [SqlContactStore(store_url) for _ in range(8)]  # own connections each
    batch = [_event("opened", NOW, channel="sms", dedup_key=f"gw:{i}") for i in range(20)]
    try:
        results, errors = _race(8, lambda k: workers[k].record_events(batch))
    finally:
        for w in workers:
            w.close()
    assert errors == []
    assert sum(inserted for inserted, _ in results) == 20
    assert sorted(inserted + dup for inserted, dup in results) == [20] * 8
    with SqlContactStore(store_url) as s:
        assert s.counts()["events"] == 20


def test_concurrent_begin_dispatch_opens_one_attempt(store_url: str) -> None:
    """8 workers try to send one decision at once: one gets attempt 1, the rest are told no."""
    workers = [SqlContactStore(store_url) for _ in range(8)]
    workers[0].record_decision(_decision("d1"))

    def begin(k: int) -> int | str:
        try:
            return workers[k].begin_dispatch("d1", "c1", "sms", NOW, lease_s=600)
        except DispatchInProgress:
            return "in_progress"

    try:
        results, errors = _race(8, begin)
    finally:
        for w in workers:
            w.close()
    assert errors == []
    assert sorted(results, key=str) == [1] + ["in_progress"] * 7
    with SqlContactStore(store_url) as s:
        assert [(a.attempt, a.status) for a in s.dispatch_attempts("d1")] == [(1, "sending")]


def test_writer_queued_behind_a_held_lock_gives_up_unavailable(store_url: str) -> None:
    """Another session holds the write lock (SQLite) / the customer's lock (PostgreSQL):
    the reservation waits ``busy_timeout_ms``, then fails as StoreUnavailable, writing nothing."""
    store = SqlContactStore(store_url, busy_timeout_ms=200)
    caps = CapSpec(per_day=1, per_week=5, global_week=5)
    before = store.counts()
    holder = sa.create_engine(store_url)
    try:
        with holder.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
                key = store_db._lock_id("customer:c1")
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            with pytest.raises(StoreUnavailable, match="locked|lock timeout"):
                store.reserve_contact(_decision("d1"), caps)
            conn.rollback()
        assert store.counts() == before
        assert store.reserve_contact(_decision("d1"), caps) == (True, None)  # lock released
    finally:
        holder.dispose()
        store.close()


def test_nul_characters_are_refused_on_every_backend(store: SqlContactStore) -> None:
    """PostgreSQL text cannot hold NUL: ids carrying one are an InvalidRecord everywhere
    (not a database error on one backend), and provider error text is stored escaped."""
    before = store.counts()
    with pytest.raises(InvalidRecord, match="customer_id must not contain NUL"):
        store.record_event(_event("opened", NOW, customer_id="c\x001"))
    with pytest.raises(InvalidRecord, match="dedup_key"):
        store.record_event(_event("opened", NOW, dedup_key="k\x00"))
    with pytest.raises(InvalidRecord, match="source"):
        store.set_consent("c1", "sms", True, NOW, "a\x00b")
    assert store.counts() == before
    store.record_decision(_decision("d1"))
    attempt = store.begin_dispatch("d1", "c1", "sms", NOW)
    failed = DispatchAttempt(
        decision_id="d1", attempt=attempt, status="failed", ts=NOW, error="bad\x00reply"
    )
    assert store.finish_dispatch(failed) is False
    assert store.dispatch_attempts("d1")[-1].error == "bad\\x00reply"


def test_postgresql_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:  # a localhost port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnavailable, match="unavailable"):
        SqlContactStore(f"postgresql+psycopg://postgres@127.0.0.1:{port}/revival")


# --------------------------------------------------------------------------- decide_and_reserve


def test_decide_and_reserve_decides_on_the_history_it_checks(store: SqlContactStore) -> None:
    caps = CapSpec(per_day=1, per_week=5, global_week=5)
    seen: list[int] = []

    def decide(ts: datetime, decision_id: str, channel: str = "sms"):
        def make(history):
            seen.append(len(history.contacts))
            return _decision(decision_id, ts=ts, channel=channel), caps

        return make

    rec, reason = store.decide_and_reserve("c1", NOW - 8 * D, decide(NOW, "a1"))
    assert reason is None and rec.decision_id == "a1" and store.get_decision("a1") is not None
    before = store.counts()
    rec, reason = store.decide_and_reserve("c1", NOW - 8 * D, decide(NOW + H, "a2"))
    assert reason == "cap_channel_day" and rec.decision_id == "a2"
    assert store.counts() == before and store.get_decision("a2") is None
    rec, reason = store.decide_and_reserve("c1", NOW - 8 * D, decide(NOW + H, "a3", "email"))
    assert reason is None
    assert seen == [0, 1, 1]  # the callback saw the stored contact, not the refused one


def test_decide_and_reserve_stores_nothing_when_the_decision_fails(store: SqlContactStore) -> None:
    def boom(history):
        raise RuntimeError("engine failed")

    before = store.counts()
    with pytest.raises(RuntimeError, match="engine failed"):
        store.decide_and_reserve("c1", NOW - 8 * D, boom)
    with pytest.raises(InvalidRecord, match="not 'c1'"):
        store.decide_and_reserve("c1", NOW - 8 * D, lambda h: (_decision("x", "c2"), None))
    with pytest.raises(InvalidRecord, match="cap window"):
        store.decide_and_reserve("c1", NOW, lambda h: (_decision("y", ts=NOW), CapSpec(1, 1, 1)))
    assert store.counts() == before
    store.decide_and_reserve("c1", NOW - 8 * D, lambda h: (_decision("z"), None))
    with pytest.raises(DuplicateDecision):
        store.decide_and_reserve("c1", NOW - 8 * D, lambda h: (_decision("z"), None))


def test_decide_and_reserve_keeps_a_pre_encoded_payload(store: SqlContactStore) -> None:
    rec = DecisionRecord(**{**_decision("p1").__dict__, "payload": '{"decision_id": "p1", "n": 2}'})
    store.decide_and_reserve("c1", NOW - 8 * D, lambda h: (rec, None))
    assert store.get_decision("p1").payload == {"decision_id": "p1", "n": 2}
    with pytest.raises(InvalidRecord, match="JSON object"):
        DecisionRecord(**{**_decision("p2").__dict__, "payload": "[1]"})


def test_holdout_decisions_are_capped_on_their_campaigns_shadow_contacts(
    store: SqlContactStore,
) -> None:
    """A control customer is capped like their treated twin: their earlier hold-out decision
    of the same campaign counts, nothing else does (and it is never a real contact)."""
    caps = CapSpec(per_day=1, per_week=5, global_week=5)
    ok = (True, None)
    assert store.reserve_contact(_decision("h1", ts=NOW, holdout=True), caps) == ok
    assert store.recent_contacts("c1", NOW - D) == []
    assert store.contact_counts("c1", NOW).day("sms") == 0
    # the same campaign's next hold-out decision that day: refused, as the twin's would be
    assert store.reserve_contact(_decision("h2", ts=NOW + H, holdout=True), caps) == (
        False,
        "cap_channel_day",
    )
    # another campaign's hold-out decision and a treated decision are not capped by it
    other = _decision("h3", ts=NOW + H, holdout=True, campaign_id="summer")
    assert store.reserve_contact(other, caps) == ok
    assert store.reserve_contact(_decision("t1", ts=NOW + 2 * H), caps) == ok
    # a treated contact counts for the hold-out too (the twin would have had it as well)
    late = _decision("h4", ts=NOW + 3 * H, holdout=True, campaign_id="autumn")
    assert store.reserve_contact(late, caps) == (False, "cap_channel_day")
    history = store.customer_history("c1", NOW - D)
    assert [c.decision_id for c in history.contacts] == ["t1"]
    assert [(c.decision_id, c.shadow) for c in history.shadows] == [("h1", True), ("h3", True)]
    rec, reason = store.decide_and_reserve(
        "c1", NOW - 8 * D, lambda h: (_decision("h5", ts=NOW + 4 * H, holdout=True), caps)
    )
    assert reason == "cap_channel_day"


def test_purchases_since_the_snapshot_come_with_the_history(store: SqlContactStore) -> None:
    """A purchase's items are stored, and a history read (plain or in the decision's write
    transaction) returns the purchases at or after ``bought_since``, oldest first."""
    store.record_events(
        [
            EventRecord(
                customer_id="c1",
                ts=NOW - 3 * DAY,
                event="purchase",
                value=5.0,
                dedup_key="o1",
                items=("A",),
            ),
            EventRecord(
                customer_id="c1",
                ts=NOW - DAY,
                event="purchase",
                value=9.0,
                dedup_key="o2",
                items=("B", "C"),
            ),
            EventRecord(
                customer_id="c1", ts=NOW - DAY, event="purchase", value=1.0, dedup_key="o3"
            ),
            EventRecord(
                customer_id="c2",
                ts=NOW - DAY,
                event="purchase",
                value=2.0,
                dedup_key="o4",
                items=("Z",),
            ),
        ]
    )
    found = store.customer_history("c1", NOW - 8 * DAY, bought_since=NOW - 2 * DAY)
    assert found.purchases == [(NOW - DAY, ("B", "C")), (NOW - DAY, ())]
    everything = store.customer_history("c1", NOW - 8 * DAY, bought_since=NOW - 10 * DAY)
    assert [items for _, items in everything.purchases] == [("A",), ("B", "C"), ()]
    seen: list = []

    def decide(history):
        seen.append(history.purchases)
        return _decision("d-p", "c1", NOW, channel=None, revive=False), None

    store.decide_and_reserve("c1", NOW - 8 * DAY, decide, bought_since=NOW - 2 * DAY)
    assert seen == [found.purchases]


def test_items_belong_to_purchases_only() -> None:
    with pytest.raises(InvalidRecord, match="items belong to purchase"):
        EventRecord(customer_id="c1", ts=NOW, event="opened", channel="email", items=("A",))
    with pytest.raises(InvalidRecord, match=r"items\[1\]"):
        EventRecord(customer_id="c1", ts=NOW, event="purchase", items=("A", ""))
