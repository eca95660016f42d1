"""What every replica serves: the model versions and the snapshot, a fact of the shared store.

Behind a load balancer, replicas must answer with the same champions. So the versions a
replica serves are not its own choice: ``/reload`` on any replica *publishes* the champion
versions and the snapshot it loaded as a new row of the ``served`` log (generation + 1), and
every replica polls the newest generation and switches to exactly those versions
(:class:`service.runtime.sync.ServedSync`). A replica that starts serves the newest row; the
first replica of a new store publishes what it loaded. The log is append-only, so it is
also the audit trail of every switch (who, when, from which versions to which).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from core.store.db import Database
from core.store.records import InvalidRecord
from core.store.schema import served

__all__ = ["Served", "ServingLog"]


@dataclass(frozen=True)
class Served:
    """One row of the log: what every replica serves from ``generation`` on."""

    generation: int
    versions: dict[str, str]  # registered model name -> version
    snapshot: str  # the snapshot's source (an MLflow run id, or ``data:<path>``)
    changed_at: datetime
    changed_by: str


def _row(row: sa.Row) -> Served:
    return Served(
        int(row.generation),
        dict(json.loads(row.versions)),
        row.snapshot,
        row.changed_at,
        row.changed_by,
    )


class ServingLog:
    """The ``served`` table of a store (:attr:`core.store.SqlContactStore.serving`)."""

    def __init__(self, db: Database):
        self._db = db

    def generation(self) -> int:
        """The newest generation (0 when nothing was published): what replicas poll."""
        with self._db.tx() as conn:
            return int(conn.execute(sa.select(sa.func.max(served.c.generation))).scalar() or 0)

    def current(self) -> Served | None:
        """The newest row, or ``None`` for a store nothing was published to."""
        q = sa.select(served).order_by(served.c.generation.desc()).limit(1)
        with self._db.tx() as conn:
            row = conn.execute(q).first()
        return None if row is None else _row(row)

    def publish(
        self, versions: dict[str, str], snapshot: str, by: str, only_first: bool = False
    ) -> Served:
        """Append what every replica must serve from now on and return the new row.

        ``only_first``: publish only if the log is empty (a replica's first start) and
        return the newest row otherwise — atomic, so of several replicas starting on a new
        store together one publishes and the others adopt its row.
        """
        if not versions or not all(isinstance(v, str) and v for v in versions.values()):
            raise InvalidRecord(f"served versions: model name -> version, got {versions!r}")
        if not snapshot or len(snapshot) > 255:
            raise InvalidRecord(f"served snapshot: 1..255 characters, got {snapshot!r}")
        row = {
            "versions": json.dumps(dict(sorted(versions.items()))),
            "snapshot": snapshot,
            "changed_at": datetime.now(UTC),
            "changed_by": by[:255],
        }
        newest = sa.select(served).order_by(served.c.generation.desc()).limit(1)
        with self._db.tx(write=True, lock="revival:served") as conn:
            if only_first:
                found = conn.execute(newest).first()
                if found is not None:
                    return _row(found)
            conn.execute(served.insert().values(**row))
            return _row(conn.execute(newest).one())

    def history(self, limit: int = 20) -> list[Served]:
        """The newest ``limit`` rows, newest first (who switched what, when)."""
        q = sa.select(served).order_by(served.c.generation.desc()).limit(limit)
        with self._db.tx() as conn:
            return [_row(r) for r in conn.execute(q)]
