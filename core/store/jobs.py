"""Background jobs in the shared store: any replica starts, lists and reads them.

A job row is written when a job starts and kept up to date by the job's supervisor
(:mod:`core.jobrun`, a process of its own, so the job outlives a restart of the replica that
started it): a heartbeat and the tail of its log every few seconds, then its status, return
code and JSON result once it ends. At most one job of a kind runs across every replica (a
partial unique index on ``kind`` where ``status = 'running'``); a running job whose heartbeat
stopped for :data:`LOST_AFTER` (its host died) is ``lost`` and no longer blocks a new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core.store.db import Database
from core.store.records import StoreIntegrityError
from core.store.schema import jobs

__all__ = ["HEARTBEAT", "LOST_AFTER", "Job", "JobRunning", "JobStore"]

HEARTBEAT = timedelta(seconds=2)  # how often a supervisor writes its row while the job runs
LOST_AFTER = timedelta(seconds=30)  # a running job silent this long has lost its supervisor


class JobRunning(RuntimeError):
    """A job of this kind is already running somewhere (HTTP 409)."""


@dataclass(frozen=True)
class Job:
    """A job as stored (``status`` is ``lost`` for a running row whose heartbeat stopped)."""

    job_id: str
    kind: str
    status: str
    command: str
    host: str
    pid: int | None
    log_path: str
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    returncode: int | None
    log_tail: list[str]
    result: dict[str, Any] | None


def _job(row: sa.Row, now: datetime) -> Job:
    status = row.status
    if status == "running" and now - row.heartbeat_at > LOST_AFTER:
        status = "lost"
    return Job(
        job_id=row.job_id,
        kind=row.kind,
        status=status,
        command=row.command,
        host=row.host,
        pid=row.pid,
        log_path=row.log_path,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        finished_at=row.finished_at,
        returncode=row.returncode,
        log_tail=row.log_tail.splitlines() if row.log_tail else [],
        result=None if row.result is None else json.loads(row.result),
    )


class JobStore:
    """The ``jobs`` table of a store (:attr:`core.store.SqlContactStore.jobs`)."""

    def __init__(self, db: Database):
        self._db = db

    def start(self, job_id: str, kind: str, command: str, host: str, log_path: str) -> Job:
        """Record a new running job; :class:`JobRunning` if one of ``kind`` runs already.

        A running job whose heartbeat stopped is marked ``lost`` first, so a dead host never
        blocks retraining for good.
        """
        now = datetime.now(UTC)
        with self._db.tx(write=True, lock=f"revival:jobs:{kind}") as conn:
            conn.execute(
                jobs.update()
                .where(
                    jobs.c.kind == kind,
                    jobs.c.status == "running",
                    jobs.c.heartbeat_at < now - LOST_AFTER,
                )
                .values(status="lost", finished_at=now)
            )
            running = conn.execute(
                sa.select(jobs.c.job_id, jobs.c.host).where(
                    jobs.c.kind == kind, jobs.c.status == "running"
                )
            ).first()
            if running is not None:
                raise JobRunning(
                    f"{kind} job {running.job_id} is still running (on {running.host}); poll "
                    "its status and start another when it has finished"
                )
            try:
                conn.execute(
                    jobs.insert().values(
                        job_id=job_id,
                        kind=kind,
                        status="running",
                        command=command,
                        host=host,
                        log_path=log_path,
                        started_at=now,
                        heartbeat_at=now,
                        log_tail="",
                    )
                )
            except (sa.exc.IntegrityError, StoreIntegrityError) as exc:
                raise JobRunning(f"another {kind} job started at the same time") from exc
        return self.get(job_id)

    def beat(self, job_id: str, pid: int | None, log_tail: list[str]) -> None:
        """The supervisor is alive: its child's pid and the newest lines of its log."""
        self._update(job_id, pid=pid, heartbeat_at=datetime.now(UTC), log_tail="\n".join(log_tail))

    def finish(
        self, job_id: str, returncode: int, log_tail: list[str], result: dict[str, Any] | None
    ) -> None:
        """The job ended: ``succeeded`` on return code 0, else ``failed``."""
        now = datetime.now(UTC)
        self._update(
            job_id,
            status="succeeded" if returncode == 0 else "failed",
            returncode=returncode,
            finished_at=now,
            heartbeat_at=now,
            log_tail="\n".join(log_tail),
            result=None if result is None else json.dumps(result, default=str),
        )

    def get(self, job_id: str) -> Job:
        """The job; :class:`LookupError` if no replica ever started it."""
        with self._db.tx() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).first()
        if row is None:
            raise LookupError(f"no job {job_id!r} in the store")
        return _job(row, datetime.now(UTC))

    def recent(self, kind: str, limit: int = 20) -> list[Job]:
        """The newest jobs of ``kind``, newest first."""
        q = (
            sa.select(jobs)
            .where(jobs.c.kind == kind)
            .order_by(jobs.c.started_at.desc())
            .limit(limit)
        )
        now = datetime.now(UTC)
        with self._db.tx() as conn:
            return [_job(r, now) for r in conn.execute(q)]

    def _update(self, job_id: str, **values: Any) -> None:
        with self._db.tx(write=True) as conn:
            conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(**values))
