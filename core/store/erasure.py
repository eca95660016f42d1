"""Right to erasure: a customer's identifiers and profile go; their records stay, anonymised.

:func:`erase` runs in one transaction (GDPR Art. 17 / PIPL Art. 47 requests). It deletes the
customer's profiles and identifiers (and any over-shared identifier of theirs), and in every
other table replaces the customer's ids by a random *tombstone* (``erased:<hex>``, not derived
from the id, so it cannot be reversed): decisions, events, consents, behaviour, journey
state and any later table with a ``customer_id`` column. Counts and money per campaign and
period are unchanged, so reports for past periods keep their totals. A decision's stored
payload loses its rendered message (it greets the customer by name); a merge audit row keeps
that a merge happened, not what joined. The serving snapshot drops the customer through the
``erased_ids`` hashes, whether the source logs still hold them or not, and
:meth:`ProfileStore.resolve` refuses the erased ids meanwhile (404). Two things are not kept
as anonymised rows: the loyalty points ledger is deleted (the points are the person's
account, which closes; no report counts them), and an active journey enrolment ends
(``exited``, note "erased") so that no agent acts on a tombstone.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.identity import erasure_hash
from core.store.db import Database
from core.store.schema import (
    TABLES,
    consents,
    decisions,
    erased_ids,
    erasures,
    identifiers,
    journey_enrolments,
    merges,
    points_ledger,
    profiles,
    shared_identifiers,
)

__all__ = ["erase", "new_tombstone"]

ERASED_TEXT = "[erased]"


def new_tombstone() -> str:
    """A fresh random id that stands for an erased customer in kept records."""
    return f"erased:{secrets.token_hex(8)}"


def _scrub_payload(payload: str, tombstone: str) -> str:
    data = json.loads(payload)
    data["customer_id"] = tombstone
    if isinstance(data.get("message"), dict):
        data["message"] = {
            k: (ERASED_TEXT if isinstance(v, str) else v) for k, v in data["message"].items()
        }
    return json.dumps(data, separators=(",", ":"))


def _delete_identity(conn: Connection, ids: Sequence[str], tombstone: str) -> dict[str, int]:
    """Profiles, identifiers and over-shared identifiers deleted; merge rows anonymised."""
    held = conn.execute(
        sa.select(identifiers.c.kind, identifiers.c.value).where(identifiers.c.profile_id.in_(ids))
    ).all()
    out = {"identifiers": len(held), "shared_identifiers": 0}
    for kind, value in held:
        key = (shared_identifiers.c.kind == kind) & (shared_identifiers.c.value == value)
        out["shared_identifiers"] += conn.execute(shared_identifiers.delete().where(key)).rowcount
    conn.execute(identifiers.delete().where(identifiers.c.profile_id.in_(ids)))
    out["profiles"] = conn.execute(profiles.delete().where(profiles.c.profile_id.in_(ids))).rowcount
    touched = 0
    for col in ("survivor", "absorbed"):
        touched += conn.execute(
            merges.update().where(merges.c[col].in_(ids)).values({col: tombstone, "value": None})
        ).rowcount
    out["merges"] = touched
    return out


def erase(
    db: Database, ids: Sequence[str], *, tombstone: str, reason: str, by: str, now: datetime
) -> dict[str, int]:
    """Erase the customer known by ``ids`` (the unified id and every member profile id):
    see the module docstring. Logs the request in ``erasures`` (tombstone, when, why, who)
    and returns the rows deleted or anonymised per table."""
    ids = sorted(set(ids))
    with db.tx(write=True, lock="identity") as conn:
        out = _delete_identity(conn, ids, tombstone)
        rows = conn.execute(
            sa.select(decisions.c.decision_id, decisions.c.payload).where(
                decisions.c.customer_id.in_(ids)
            )
        ).all()
        for decision_id, payload in rows:
            conn.execute(
                decisions.update()
                .where(decisions.c.decision_id == decision_id)
                .values(payload=_scrub_payload(payload, tombstone))
            )
        conn.execute(
            consents.update()
            .where(consents.c.customer_id.in_(ids), consents.c.source.like("merge of %"))
            .values(source="merge (erased)")
        )
        out["points_ledger"] = conn.execute(
            points_ledger.delete().where(points_ledger.c.customer_id.in_(ids))
        ).rowcount
        live = journey_enrolments.c
        conn.execute(
            journey_enrolments.update()
            .where(live.customer_id.in_(ids), live.status == "active")
            .values(status="exited", due_at=None, note="erased", updated_at=now)
        )
        for table in TABLES:
            if table.name in out or "customer_id" not in table.c:
                continue
            n = conn.execute(
                table.update().where(table.c.customer_id.in_(ids)).values(customer_id=tombstone)
            ).rowcount
            out[table.name] = n
        out = {k: v for k, v in out.items() if v}
        known = set(
            conn.scalars(
                sa.select(erased_ids.c.id_hash).where(
                    erased_ids.c.id_hash.in_([erasure_hash(i) for i in ids])
                )
            )
        )
        rows = [
            {"id_hash": h, "tombstone": tombstone}
            for h in sorted({erasure_hash(i) for i in ids} - known)
        ]
        if rows:
            conn.execute(erased_ids.insert(), rows)
        conn.execute(
            erasures.insert().values(
                tombstone=tombstone,
                erased_at=now,
                reason=reason[:200],
                requested_by=by[:255],
                rows=json.dumps(out, sort_keys=True),
            )
        )
    return out
