"""Background retraining jobs for ``POST /retrain`` (the service never trains in-process).

A job is ``python -m training.retrain`` in a child process — its own interpreter, so the
LightGBM/ALS work never holds the server's GIL, blocks its event loop or slows decisions
beyond sharing the CPU — pointed at the service's own log, contact store and MLflow store,
with its output in ``<jobs dir>/<job id>/log.txt`` and its JSON summary in ``summary.json``
(jobs dir: ``retrain/`` beside a SQLite store, else ``var/retrain``).
Starting one returns at once with a job id; ``POST /retrain_status`` polls it. One job runs
at a time per service process (a second start while one runs is a 409). The job registers
and gates the models; the service switches to them only on ``POST /reload``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.config import PROJECT_ROOT, Settings
from service.metrics import count_retrain_job
from service.schemas import RetrainJobOut, RetrainRequest

__all__ = ["JobConflict", "RetrainJobs", "UnknownJob"]

LOG_TAIL_LINES = 20


class UnknownJob(LookupError):
    """No retraining job with that id in this service process (HTTP 404)."""


class JobConflict(RuntimeError):
    """A retraining job is already running (HTTP 409)."""


@dataclass
class _Job:
    job_id: str
    command: list[str]
    folder: Path
    process: subprocess.Popen
    started_at: datetime
    finished_at: datetime | None = None


class RetrainJobs:
    """Starts and tracks ``training.retrain`` child processes."""

    def __init__(self, settings: Settings, tracking_uri: str, root: Path | None = None):
        self.settings = settings
        self.tracking_uri = tracking_uri
        self.root = root or _jobs_dir(settings.store_url)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def command(self, req: RetrainRequest, summary: Path) -> list[str]:
        """The child's command line: everything retrain reads from the service's settings
        (data, store, MLflow store, attribution window, the log's time zone, the
        ``events:`` limits its purchase-event checks use) passed
        explicitly, so the child never reads ``service``."""
        s = self.settings
        cmd = [
            sys.executable,
            "-m",
            "training.retrain",
            "--data",
            str(s.data_path),
            "--store-url",
            s.store_url,
            "--tracking-uri",
            self.tracking_uri,
            "--window-days",
            f"{req.window_days if req.window_days is not None else s.attribution_window_days:g}",
            "--timezone",
            s.default_timezone,
            "--min-treated",
            str(req.min_treated),
            "--min-control",
            str(req.min_control),
            "--max-cutoffs",
            str(req.max_cutoffs),
            "--max-purchase-value",
            repr(s.events.max_purchase_value),
            "--future-tolerance-seconds",
            repr(s.events.future_tolerance_seconds),
            "--max-event-order-ratio",
            repr(s.events.max_event_order_ratio),
            "--summary-out",
            str(summary),
        ]
        if req.since is not None:
            cmd += ["--since", req.since.isoformat()]
        if req.force:
            cmd.append("--force")
        if req.attribution_only:
            cmd.append("--attribution-only")
        return cmd

    def start(self, req: RetrainRequest) -> RetrainJobOut:
        """Start a job (:class:`JobConflict` while another runs) and return its status."""
        with self._lock:
            running = [j for j in self._jobs.values() if j.process.poll() is None]
            if running:
                raise JobConflict(
                    f"retraining job {running[0].job_id} is still running; poll "
                    "/retrain_status and start another when it has finished"
                )
            job_id = uuid.uuid4().hex[:12]
            folder = self.root / job_id
            folder.mkdir(parents=True, exist_ok=True)
            cmd = self.command(req, folder / "summary.json")
            with (folder / "log.txt").open("wb") as out:
                process = subprocess.Popen(
                    cmd,
                    cwd=PROJECT_ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=os.environ.copy(),
                )
            self._jobs[job_id] = _Job(job_id, cmd, folder, process, datetime.now(UTC))
        count_retrain_job("started")
        return self.status(job_id)

    def status(self, job_id: str) -> RetrainJobOut:
        """Where the job is: running / succeeded / failed, its log tail and summary."""
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no retraining job {job_id!r} in this service process")
        code = job.process.poll()
        if code is not None and job.finished_at is None:
            job.finished_at = datetime.now(UTC)
            count_retrain_job("succeeded" if code == 0 else "failed")
        state = "running" if code is None else ("succeeded" if code == 0 else "failed")
        summary: dict[str, Any] | None = None
        path = job.folder / "summary.json"
        if code == 0 and path.exists():
            summary = json.loads(path.read_text())
        return RetrainJobOut(
            job_id=job.job_id,
            status=state,
            returncode=code,
            pid=job.process.pid,
            started_at=job.started_at,
            finished_at=job.finished_at,
            command=" ".join(job.command[1:]),
            log_path=str(job.folder / "log.txt"),
            log_tail=_tail(job.folder / "log.txt", LOG_TAIL_LINES),
            result=summary,
        )


def _jobs_dir(store_url: str) -> Path:
    if store_url.startswith("sqlite:///") and ":memory:" not in store_url:
        return Path(store_url.removeprefix("sqlite:///").split("?")[0]).parent / "retrain"
    return PROJECT_ROOT / "var" / "retrain"


def _tail(path: Path, n: int) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return lines[-n:]
