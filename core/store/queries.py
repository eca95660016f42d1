"""The store's composed SQL statements and the helpers that turn rows into records and back.

The read paths run on every decision: their statements are built once (with bind
parameters, ``functools.cache``) so SQLAlchemy neither rebuilds the expression nor
recomputes its cache key. Portable SQL only (SQLite and PostgreSQL).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core.store.caps import CustomerHistory, Engagement
from core.store.records import (
    KNOWN_CHANNELS,
    REVOKING_EVENTS,
    ContactRecord,
    DecisionRecord,
    DispatchAttempt,
    EventRecord,
    as_utc,
    dump_json,
    opt_utc,
)
from core.store.schema import BigId, UtcDateTime, behaviour, consents, decisions, events

__all__ = [
    "DECISION_EXISTS",
    "ENGAGEMENT_KINDS",
    "INSERT_DECISION",
    "attempt_from",
    "consent_state",
    "consent_statement",
    "contact_records",
    "contact_statement",
    "decision_from",
    "decision_row",
    "engagement_statement",
    "event_row",
    "history_from",
    "history_statement",
    "population_summary",
    "summarise_engagement",
]

ENGAGEMENT_KINDS = {
    "sent": "sends",
    "opened": "opens",
    "clicked": "clicks",
    "converted": "conversions",
    "unsubscribed": "unsubscribes",
    "bounced": "bounces",
    "complained": "complaints",
}


DECISION_EXISTS = sa.select(decisions.c.decision_id).where(
    decisions.c.decision_id == sa.bindparam("decision_id")
)
INSERT_DECISION = decisions.insert()


def _one_of(column: sa.ColumnElement, values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN (...)`` for a fixed list, without SQLAlchemy's per-execution expansion."""
    return sa.or_(*(column == sa.literal(v, literal_execute=False) for v in values))


@functools.cache
def contact_statement(with_hi: bool, with_channel: bool) -> sa.CompoundSelect:
    """Planned decisions (incl. hold-out ones) and sent events as one statement (one round
    trip): ``source`` "decision" or "event", ``decision_id``, ``campaign_id``, ``channel``,
    ``ts``, ``holdout`` (decisions) and ``event_id`` (events); binds customer_id, lo, hi,
    channel. :func:`contact_records` turns its rows into contacts."""
    d, e, e2 = decisions, events, events.alias("e2")
    planned = sa.func.coalesce(d.c.send_at, d.c.ts)
    has_sent = (
        sa.select(e2.c.event_id)
        .where(e2.c.decision_id == d.c.decision_id, e2.c.event == "sent")
        .exists()
    )
    q_dec = sa.select(
        sa.literal_column("'decision'", sa.String).label("source"),
        d.c.decision_id,
        d.c.campaign_id,
        d.c.channel,
        planned.label("ts"),
        d.c.holdout,
        sa.cast(sa.null(), BigId).label("event_id"),
    ).where(
        d.c.customer_id == sa.bindparam("customer_id"),
        d.c.revive.is_(True),
        d.c.channel.is_not(None),
        ~has_sent,
        planned >= sa.bindparam("lo", type_=UtcDateTime),
    )
    earlier_sent = (
        sa.select(e2.c.event_id)
        .where(
            e2.c.decision_id == e.c.decision_id,
            e2.c.event == "sent",
            sa.or_(e2.c.ts < e.c.ts, sa.and_(e2.c.ts == e.c.ts, e2.c.event_id < e.c.event_id)),
        )
        .exists()
    )
    q_ev = sa.select(
        sa.literal_column("'event'", sa.String),
        e.c.decision_id,
        e.c.campaign_id,
        e.c.channel,
        e.c.ts,
        sa.false(),
        e.c.event_id,
    ).where(
        e.c.customer_id == sa.bindparam("customer_id"),
        e.c.event == "sent",
        e.c.ts >= sa.bindparam("lo", type_=UtcDateTime),
        sa.or_(e.c.decision_id.is_(None), ~earlier_sent),
    )
    if with_hi:
        q_dec = q_dec.where(planned <= sa.bindparam("hi", type_=UtcDateTime))
        q_ev = q_ev.where(e.c.ts <= sa.bindparam("hi", type_=UtcDateTime))
    if with_channel:
        q_dec = q_dec.where(d.c.channel == sa.bindparam("channel"))
        q_ev = q_ev.where(e.c.channel == sa.bindparam("channel"))
    return sa.union_all(q_dec, q_ev)


@functools.cache
def engagement_statement(with_customer: bool, with_since: bool) -> sa.Select | sa.CompoundSelect:
    """Engagement rows on channels; binds customer_id and since.

    One customer: its raw message-event rows, oldest first (:func:`summarise_engagement`
    counts them and keeps each message's time for recency weights). Population: per
    (channel, event) the messages linked to a decision (distinct decisions), the events
    without one and the last time, plus per channel a row ``engaged`` (decisions opened or
    clicked). Portable SQL only (SQLite and PostgreSQL).
    """
    e = events.c
    where = [e.channel.is_not(None), _one_of(e.event, ENGAGEMENT_KINDS)]
    if with_since:
        where.append(e.ts >= sa.bindparam("since", type_=UtcDateTime))
    if with_customer:
        where.append(e.customer_id == sa.bindparam("customer_id"))
        return (
            sa.select(e.channel, e.event, e.decision_id, e.ts, e.event_id)
            .where(*where)
            .order_by(e.ts, e.event_id)
        )
    linked = sa.func.count(sa.distinct(e.decision_id))
    unlinked = sa.func.sum(sa.case((e.decision_id.is_(None), 1), else_=0))
    per_event = (
        sa.select(
            e.channel,
            e.event,
            linked.label("linked"),
            unlinked.label("unlinked"),
            sa.func.max(e.ts).label("last"),
        )
        .where(*where)
        .group_by(e.channel, e.event)
    )
    engaged = (
        sa.select(
            e.channel,
            sa.literal("engaged", sa.String(16)).label("event"),
            linked.label("linked"),
            sa.literal(0, sa.Integer).label("unlinked"),
            sa.func.max(e.ts).label("last"),
        )
        .where(*where, _one_of(e.event, ("opened", "clicked")))
        .group_by(e.channel)
    )
    return sa.union_all(per_event, engaged)


def summarise_engagement(rows: Iterable[Any]) -> dict[str, Engagement]:
    """Per-channel :class:`Engagement` of one customer from its event rows, oldest first
    (rows with ``channel``, ``event``, ``decision_id``, ``ts``; see :class:`Engagement`)."""
    acc: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str, str]] = set()  # (channel, event, decision) counted once
    linked: dict[tuple[str, str], list[Any]] = {}  # (channel, decision) -> [time, engaged]
    unlinked: dict[str, list[list[Any]]] = {}  # channel -> messages without a decision
    for r in rows:
        ch, ev, did, ts = r.channel, r.event, r.decision_id, as_utc(r.ts)
        f = acc.setdefault(ch, {})
        if did is None or (ch, ev, did) not in seen:
            if did is not None:
                seen.add((ch, ev, did))
            key = ENGAGEMENT_KINDS[ev]
            f[key] = f.get(key, 0) + 1
        if ev == "sent":
            f["last_send_ts"] = max(f.get("last_send_ts") or ts, ts)
        elif ev == "opened":
            f["last_open_ts"] = max(f.get("last_open_ts") or ts, ts)
        if ev not in ("sent", "opened", "clicked"):
            continue
        hit = ev != "sent"
        if did is not None:
            msg = linked.setdefault((ch, did), [ts.timestamp(), False])
            msg[1] = msg[1] or hit
            continue
        own = unlinked.setdefault(ch, [])
        if ev == "sent" or not own:
            own.append([ts.timestamp(), hit])
        else:
            own[-1][1] = True
    for (ch, _), msg in linked.items():
        unlinked.setdefault(ch, []).append(msg)
    out = {}
    for ch, f in sorted(acc.items()):
        msgs = tuple(sorted((float(t), bool(hit)) for t, hit in unlinked.get(ch, [])))
        out[ch] = Engagement(**f, engaged=sum(hit for _, hit in msgs), messages=msgs)
    return out


@functools.cache
def consent_statement(with_as_of: bool) -> sa.CompoundSelect:
    """Consent rows (``kind`` 0) and revoking events (``kind`` 1, not granted) as one
    statement: ``kind``, ``id``, ``channel``, ``granted``, ``ts``; binds customer_id and
    as_of. :func:`consent_state` turns its rows into consents."""
    c, e = consents.c, events.c
    qc = sa.select(
        sa.literal_column("0", sa.Integer).label("kind"),
        c.consent_id.label("id"),
        c.channel,
        c.granted,
        c.ts,
    ).where(c.customer_id == sa.bindparam("customer_id"))
    qe = sa.select(
        sa.literal_column("1", sa.Integer), e.event_id, e.channel, sa.false(), e.ts
    ).where(e.customer_id == sa.bindparam("customer_id"), _one_of(e.event, REVOKING_EVENTS))
    if with_as_of:
        qc = qc.where(c.ts <= sa.bindparam("as_of", type_=UtcDateTime))
        qe = qe.where(e.ts <= sa.bindparam("as_of", type_=UtcDateTime))
    return sa.union_all(qc, qe)


def item_statement() -> sa.CompoundSelect:
    """The customer's purchase events and returns at or after ``bought_since`` (``item_kind``
    "purchase" or "return", ``ts``, ``items``, ``event_id``): what was bought or sent back
    since the serving snapshot, whichever replica took it; binds customer_id and
    bought_since."""
    e, b = events, behaviour
    since = sa.bindparam("bought_since", type_=UtcDateTime)
    customer = sa.bindparam("customer_id")
    bought = sa.select(
        sa.literal_column("'purchase'", sa.String).label("item_kind"),
        e.c.ts,
        e.c["items"],
        e.c.event_id,
    ).where(e.c.customer_id == customer, e.c.event == "purchase", e.c.ts >= since)
    returned = sa.select(
        sa.literal_column("'return'", sa.String),
        b.c.ts,
        b.c["items"],
        b.c.behaviour_id,
    ).where(b.c.customer_id == customer, b.c.event == "return", b.c.ts >= since)
    return sa.union_all(bought, returned)


@functools.cache
def history_statement() -> sa.CompoundSelect:
    """What a decision reads about a customer as one statement (one round trip, not four):
    the rows of :func:`contact_statement` (``part`` 0), :func:`consent_statement`
    (``part`` 1), the customer's :func:`engagement_statement` (``part`` 2) and
    :func:`item_statement` (``part`` 3), each under the union of their column names
    (NULL where a part has no such column); binds customer_id, lo and bought_since."""
    subs = [
        part.subquery()
        for part in (
            contact_statement(False, False),
            consent_statement(False),
            engagement_statement(True, False).order_by(None),
            item_statement(),
        )
    ]
    columns: dict[str, sa.types.TypeEngine] = {}  # name -> type, first part that has it
    for sub in subs:
        for col in sub.c:
            columns.setdefault(col.key, col.type)
    selects = [
        sa.select(
            sa.literal_column(str(number), sa.Integer).label("part"),
            *(
                sa.type_coerce(sub.c[name], type_).label(name)
                if name in sub.c
                else sa.cast(sa.null(), type_).label(name)
                for name, type_ in columns.items()
            ),
        )
        for number, sub in enumerate(subs)
    ]
    return sa.union_all(*selects)


def contact_records(
    customer_id: str, rows: Iterable[Any]
) -> tuple[list[ContactRecord], list[ContactRecord]]:
    """(contacts, shadow contacts) from :func:`contact_statement` rows, in time order."""
    out: list[ContactRecord] = []
    shadows: list[ContactRecord] = []
    for r in rows:
        if r.source == "event":
            out.append(
                ContactRecord(
                    customer_id,
                    r.channel,
                    r.ts,
                    "event",
                    r.decision_id,
                    r.campaign_id,
                    int(r.event_id),
                )
            )
            continue
        held = bool(r.holdout)
        (shadows if held else out).append(
            ContactRecord(
                customer_id,
                r.channel,
                r.ts,
                "decision",
                r.decision_id,
                r.campaign_id,
                shadow=held,
            )
        )
    out.sort(key=lambda c: (c.ts, c.source, c.decision_id or "", c.event_id or 0))
    shadows.sort(key=lambda c: (c.ts, c.decision_id or ""))
    return out, shadows


def consent_state(rows: Iterable[Any]) -> dict[str, bool]:
    """Per channel the latest consent from :func:`consent_statement` rows (a revocation
    wins a tie; a row without a channel applies to every channel)."""
    # (ts, revocation-last so it wins ties, insertion order) -> (channel, granted)
    timeline = [((r.ts, int(r.kind), int(r.id)), r.channel, bool(r.granted)) for r in rows]
    timeline.sort(key=lambda t: t[0])
    universe = set(KNOWN_CHANNELS) | {ch for _, ch, _ in timeline if ch is not None}
    state: dict[str, bool] = {}
    for _, channel, granted in timeline:
        for ch in [channel] if channel is not None else sorted(universe):
            state[ch] = granted
    return dict(sorted(state.items()))


def history_from(customer_id: str, rows: Iterable[Any]) -> CustomerHistory:
    """A :class:`CustomerHistory` from :func:`history_statement` rows."""
    parts: tuple[list[Any], ...] = ([], [], [], [])
    for r in rows:
        parts[r.part].append(r)
    contacts, shadows = contact_records(customer_id, parts[0])
    engagement = sorted(parts[2], key=lambda r: (r.ts, r.event_id))
    items: dict[str, list[tuple[datetime, tuple[str, ...]]]] = {"purchase": [], "return": []}
    for r in sorted(parts[3], key=lambda r: (r.ts, r.item_kind, r.event_id)):
        items[r.item_kind].append((r.ts, tuple(json.loads(r.items)) if r.items else ()))
    return CustomerHistory(
        contacts,
        consent_state(parts[1]),
        summarise_engagement(engagement),
        shadows,
        items["purchase"],
        items["return"],
    )


def population_summary(rows: Iterable[Any]) -> dict[str, Engagement]:
    """Per-channel :class:`Engagement` of everybody from the population rows of
    :func:`engagement_statement` (no ``messages``; see :class:`Engagement`)."""
    acc: dict[str, dict[str, Any]] = {}
    unlinked: dict[str, dict[str, int]] = {}
    for r in rows:
        fields = acc.setdefault(r.channel, {})
        if r.event == "engaged":
            fields["engaged"] = fields.get("engaged", 0) + int(r.linked)
            continue
        fields[ENGAGEMENT_KINDS[r.event]] = int(r.linked) + int(r.unlinked)
        unlinked.setdefault(r.channel, {})[r.event] = int(r.unlinked)
        if r.event == "sent":
            fields["last_send_ts"] = opt_utc(r.last)
        elif r.event == "opened":
            fields["last_open_ts"] = opt_utc(r.last)
    for ch, n in unlinked.items():
        acc[ch]["engaged"] = acc[ch].get("engaged", 0) + max(
            n.get("opened", 0), n.get("clicked", 0)
        )
    return {ch: Engagement(**f) for ch, f in sorted(acc.items())}


def decision_row(d: DecisionRecord, recorded_at: datetime) -> dict[str, Any]:
    """The ``decisions`` row of ``d`` (its JSON validated here, before any transaction)."""
    return {
        "decision_id": d.decision_id,
        "customer_id": d.customer_id,
        "campaign_id": d.campaign_id,
        "ts": d.ts,
        "channel": d.channel,
        "send_at": d.send_at,
        "intent": d.intent,
        "offer_type": d.offer_type,
        "holdout": d.holdout,
        "revive": d.revive,
        "priority": d.priority,
        "payload": d.payload
        if isinstance(d.payload, str)
        else dump_json("payload", dict(d.payload)),
        "model_versions": dump_json("model_versions", dict(d.model_versions)),
        "recorded_at": recorded_at,
    }


def decision_from(row: Mapping[str, Any]) -> DecisionRecord:
    """The :class:`DecisionRecord` of a ``decisions`` row."""
    return DecisionRecord(
        decision_id=row["decision_id"],
        customer_id=row["customer_id"],
        campaign_id=row["campaign_id"],
        ts=row["ts"],
        channel=row["channel"],
        send_at=row["send_at"],
        intent=row["intent"],
        offer_type=row["offer_type"],
        holdout=bool(row["holdout"]),
        revive=bool(row["revive"]),
        priority=row["priority"],
        payload=json.loads(row["payload"]),
        model_versions=json.loads(row["model_versions"]),
    )


def event_row(e: EventRecord, recorded_at: datetime) -> dict[str, Any]:
    """The ``events`` row of ``e``."""
    return {
        "customer_id": e.customer_id,
        "ts": e.ts,
        "channel": e.channel,
        "campaign_id": e.campaign_id,
        "decision_id": e.decision_id,
        "event": e.event,
        "value": e.value,
        "dedup_key": e.dedup_key,
        "recorded_at": recorded_at,
        "items": json.dumps(list(e.items)) if e.items else None,
    }


def attempt_from(row: Any, status: str | None = None) -> DispatchAttempt:
    """The :class:`DispatchAttempt` of a ``dispatches`` or ``dispatch_success`` row."""
    m = row._mapping
    return DispatchAttempt(
        decision_id=m["decision_id"],
        attempt=m["attempt"],
        status=status or m["status"],
        ts=m["ts"],
        provider_status_code=m["provider_status_code"],
        error=m.get("error"),
        provider_message_id=m["provider_message_id"],
        tries=m.get("tries"),
    )
