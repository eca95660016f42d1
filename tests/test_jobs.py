"""Shared state for replicas in the store: background jobs and the served versions log
(SQLite and PostgreSQL), and the job supervisor run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.jobrun import STORE_ENV
from core.store import InvalidRecord, JobRunning, SqlContactStore
from core.store.jobs import LOST_AFTER
from core.store.schema import jobs

ROOT = Path(__file__).resolve().parents[1]


def test_one_running_job_of_a_kind_and_a_silent_one_is_lost(store: SqlContactStore) -> None:
    first = store.jobs.start("j1", "retrain", "python -m x", "host-a:1", "/tmp/j1.log")
    assert first.status == "running" and first.returncode is None
    with pytest.raises(JobRunning, match="j1 is still running"):
        store.jobs.start("j2", "retrain", "python -m x", "host-b:2", "/tmp/j2.log")
    store.jobs.start("o1", "other", "python -m y", "host-b:2", "/tmp/o1.log")  # another kind
    # j1's supervisor died: its heartbeat stops; it is reported lost and blocks nothing
    old = datetime.now(UTC) - LOST_AFTER - timedelta(seconds=1)
    with store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.job_id == "j1").values(heartbeat_at=old))
    assert store.jobs.get("j1").status == "lost"
    second = store.jobs.start("j2", "retrain", "python -m x", "host-b:2", "/tmp/j2.log")
    assert second.status == "running"
    store.jobs.beat("j2", 4242, ["step 1", "step 2"])
    store.jobs.finish("j2", 0, ["step 1", "step 2", "done"], {"run_id": "r1"})
    done = store.jobs.get("j2")
    assert (done.status, done.returncode, done.pid) == ("succeeded", 0, 4242)
    assert done.log_tail[-1] == "done" and done.result == {"run_id": "r1"}
    assert [j.job_id for j in store.jobs.recent("retrain")] == ["j2", "j1"]
    store.jobs.start("j3", "retrain", "python -m x", "host-a:1", "/tmp/j3.log")
    store.jobs.finish("j3", 2, ["boom"], None)
    assert store.jobs.get("j3").status == "failed"
    with pytest.raises(LookupError, match="no job 'nope'"):
        store.jobs.get("nope")


def test_the_served_log_is_append_only_and_the_first_start_publishes_once(
    store: SqlContactStore,
) -> None:
    log = store.serving
    assert log.generation() == 0 and log.current() is None
    first = log.publish({"churn": "1", "cross_sell": "1"}, "run-a", "a:1", only_first=True)
    adopted = log.publish({"churn": "9"}, "run-z", "b:2", only_first=True)
    assert adopted == first  # a second replica on the same store adopts the first's row
    newer = log.publish({"churn": "2", "cross_sell": "1"}, "run-b", "b:2 reload")
    assert newer.generation > first.generation == 1
    assert log.current() == newer and log.generation() == newer.generation
    assert [s.versions["churn"] for s in log.history()] == ["2", "1"]
    with pytest.raises(InvalidRecord, match="served versions"):
        log.publish({}, "run-c", "c")
    with pytest.raises(InvalidRecord, match="served snapshot"):
        log.publish({"churn": "3"}, "", "c")


def _supervise(tmp_path: Path, url: str, job_id: str, script: str) -> subprocess.CompletedProcess:
    summary = tmp_path / f"{job_id}.json"
    cmd = [sys.executable, "-c", script.replace("SUMMARY", str(summary))]
    return subprocess.run(
        [sys.executable, "-m", "core.jobrun", "--job-id", job_id, "--log",
         str(tmp_path / f"{job_id}.log"), "--summary", str(summary), "--", *cmd],
        cwd=ROOT,
        env={**os.environ, STORE_ENV: url},
        capture_output=True,
        timeout=120,
    )  # fmt: skip


def test_the_supervisor_records_output_heartbeats_and_the_result(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = SqlContactStore(url)
    store.jobs.start("ok", "retrain", "demo", "here:1", str(tmp_path / "ok.log"))
    script = (
        "import json, time\n"
        "for i in range(3):\n"
        "    print('line', i, flush=True); time.sleep(1.5)\n"
        "json.dump({'run_id': 'r9'}, open('SUMMARY', 'w'))\n"
    )
    t0 = time.monotonic()
    assert _supervise(tmp_path, url, "ok", script).returncode == 0
    job = store.jobs.get("ok")
    assert job.status == "succeeded" and job.result == {"run_id": "r9"}
    assert job.log_tail == ["line 0", "line 1", "line 2"]
    assert job.pid is not None  # written by a heartbeat while it ran (> 2 s)
    assert (tmp_path / "ok.log").read_text().splitlines()[-1] == "line 2"
    assert time.monotonic() - t0 < 60

    store.jobs.start("bad", "retrain", "demo", "here:1", str(tmp_path / "bad.log"))
    script = "import sys; print('no data', flush=True); sys.exit(3)"
    assert _supervise(tmp_path, url, "bad", script).returncode == 3
    bad = store.jobs.get("bad")
    assert (bad.status, bad.returncode, bad.result, bad.log_tail) == (
        "failed",
        3,
        None,
        ["no data"],
    )
    store.close()


def test_jobs_and_served_rows_hold_json(tmp_path: Path) -> None:
    """What a job stores as its result is JSON; a result with dates is stored as text."""
    store = SqlContactStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.jobs.start("d", "retrain", "demo", "here:1", "/tmp/d.log")
    store.jobs.finish("d", 0, [], {"at": datetime(2024, 1, 2, tzinfo=UTC)})
    with store.engine.begin() as conn:
        raw = conn.execute(sa.select(jobs.c.result).where(jobs.c.job_id == "d")).scalar_one()
    assert json.loads(raw) == {"at": "2024-01-02 00:00:00+00:00"}
    store.close()
