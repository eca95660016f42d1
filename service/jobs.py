"""Background retraining jobs for ``POST /retrain`` (the service never trains in-process).

A job is ``python -m training.retrain`` pointed at the service's own log, contact store and
MLflow store, run under a detached supervisor (:mod:`core.jobrun`) — its own interpreter,
so the LightGBM/ALS work never holds the server's GIL, and no child of the replica's, so
restarting the replica that started it does not stop it. The job's status,
heartbeat, log tail and JSON summary live in the shared store (:mod:`core.store.jobs`): any
replica answers ``POST /retrain_status``, a restart forgets nothing, and at most one job runs
across all replicas (a second start is a 409). The full log stays on the host that ran it
(``<jobs dir>/<job id>/log.txt``; jobs dir: ``retrain/`` beside a SQLite store, else
``var/retrain``). The job registers and gates the models; replicas switch to them only on
``POST /reload``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from core.jobrun import STORE_ENV
from core.store import ContactStore, Job, JobRunning
from service.config import PROJECT_ROOT, Settings
from service.metrics import count_retrain_job
from service.schemas import RetrainJobOut, RetrainRequest

__all__ = ["JOB_KIND", "JobConflict", "RetrainJobs", "UnknownJob"]

JOB_KIND = "retrain"
LOG_TAIL_LINES = 20


class UnknownJob(LookupError):
    """No retraining job with that id in the store (HTTP 404)."""


class JobConflict(RuntimeError):
    """A retraining job is already running on some replica (HTTP 409)."""


class RetrainJobs:
    """Starts ``training.retrain`` jobs under a supervisor and reads them from the store."""

    def __init__(
        self, settings: Settings, tracking_uri: str, store: ContactStore, root: Path | None = None
    ):
        self.settings = settings
        self.tracking_uri = tracking_uri
        self.store = store
        self.root = root or _jobs_dir(settings.store_url)
        self._finished: set[str] = set()  # jobs whose end this replica has counted

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
            *(["--mapping", str(s.data_mapping)] if s.data_mapping else []),
            "--primary-source",
            s.identity.primary_source,
            *(f"--source={src.name}={src.path}" for src in s.identity.sources),
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
        """Record the job in the store (:class:`JobConflict` while another runs anywhere),
        start its supervisor and return its status."""
        job_id = uuid.uuid4().hex[:12]
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        cmd = self.command(req, folder / "summary.json")
        host = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self.store.jobs.start(
                job_id, JOB_KIND, " ".join(cmd[1:]), host, str(folder / "log.txt")
            )
        except JobRunning as exc:
            raise JobConflict(str(exc)) from None
        supervisor = [
            sys.executable,
            "-m",
            "core.jobrun",
            "--detach",
            "--job-id",
            job_id,
            "--log",
            str(folder / "log.txt"),
            "--summary",
            str(folder / "summary.json"),
            "--",
            *cmd,
        ]
        env = {**os.environ, STORE_ENV: self.settings.store_url}
        with (folder / "supervisor.txt").open("wb") as out:
            try:  # returns once the supervisor has detached (a daemon, not our child)
                code = subprocess.run(
                    supervisor,
                    cwd=PROJECT_ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    timeout=60,
                ).returncode
                why = f"supervisor exited with {code}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                code, why = -1, str(exc)
        if code != 0:
            said = (folder / "supervisor.txt").read_text(errors="replace").splitlines()
            self.store.jobs.finish(job_id, code or -1, [f"could not start: {why}", *said], None)
        count_retrain_job("started")
        return self.status(job_id)

    def status(self, job_id: str) -> RetrainJobOut:
        """Where the job is (from the store): running / succeeded / failed / lost."""
        try:
            job = self.store.jobs.get(job_id)
        except LookupError:
            raise UnknownJob(f"no retraining job {job_id!r} in the store") from None
        if job.status != "running" and job.job_id not in self._finished:
            self._finished.add(job.job_id)  # counted once per replica that sees it end
            count_retrain_job(job.status)
        return _out(job)


def _out(job: Job) -> RetrainJobOut:
    return RetrainJobOut(
        job_id=job.job_id,
        status=job.status,
        returncode=job.returncode,
        pid=job.pid,
        host=job.host,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.finished_at,
        command=job.command,
        log_path=job.log_path,
        log_tail=job.log_tail[-LOG_TAIL_LINES:],
        result=job.result if job.status == "succeeded" else None,
    )


def _jobs_dir(store_url: str) -> Path:
    if store_url.startswith("sqlite:///") and ":memory:" not in store_url:
        return Path(store_url.removeprefix("sqlite:///").split("?")[0]).parent / "retrain"
    return PROJECT_ROOT / "var" / "retrain"
