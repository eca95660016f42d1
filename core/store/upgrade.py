"""In-place upgrades of a store created by an earlier version (there is no migration tool).

Each step is idempotent and runs at store open inside the schema lock
(:meth:`core.store.sql.SqlContactStore._create_schema`), after ``create_all`` (which makes
missing tables but never alters existing ones).

* ``consents.dedup_key`` (re-delivered consents are stored once): the column, nullable so
  existing rows keep NULL (no key), and its unique index.
* ``events.items`` (a purchase's item ids, so every replica sees what was just bought):
  nullable; earlier purchases keep NULL (items unknown).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.store.schema import consents, events

__all__ = ["upgrade_schema"]


def upgrade_schema(conn: Connection) -> list[str]:
    """Bring an existing database up to the current schema; returns the steps it took."""
    done: list[str] = []
    if "items" not in {c["name"] for c in sa.inspect(conn).get_columns(events.name)}:
        conn.execute(sa.text("ALTER TABLE events ADD COLUMN items TEXT"))
        done.append("events.items column")
    columns = {c["name"] for c in sa.inspect(conn).get_columns(consents.name)}
    if "dedup_key" not in columns:
        conn.execute(sa.text("ALTER TABLE consents ADD COLUMN dedup_key VARCHAR(255)"))
        done.append("consents.dedup_key column")
    indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes(consents.name)}
    [index] = [ix for ix in consents.indexes if list(ix.columns.keys()) == ["dedup_key"]]
    if index.name not in indexes:
        index.create(conn)
        done.append(f"{index.name} unique index")
    return done
