"""The service's Prometheus metrics, all defined here (served at ``/metrics`` by BentoML).

* ``revival_decisions_total{stage,channel,outcome}``   decisions answered by ``/decide``
* ``revival_model_version{model,version}``            1 for each served champion version,
  0 for the version a reload replaced
* ``revival_snapshot_age_seconds``                     now − the snapshot's cut-off, set at
  start-up, on reload and on every scrape of ``/metrics``
* ``revival_snapshot_timestamp_seconds``               the cut-off as a Unix time
* ``revival_dispatch_failures_total{channel}``         sends the provider refused or missed
* ``revival_cap_refusals_total{cap,channel}``          a frequency cap ruling a channel out of
  a recorded decision (engine or store reservation)
* ``revival_retrain_jobs_total{status}``               retraining jobs started here, and
  jobs seen ending (succeeded / failed / lost) by this replica's ``/retrain_status``

Metrics are created on first use, never on import: BentoML sets ``PROMETHEUS_MULTIPROC_DIR``
in a worker after the service module is imported, and ``prometheus_client`` picks its
(multiprocess) value class when a metric is built. Updating a metric never raises: metrics
must not fail a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "count_caps",
    "count_decision",
    "count_dispatch_failure",
    "count_retrain_job",
    "refresh_on_scrape",
    "served",
]

log = logging.getLogger(__name__)

# name -> (kind, help, labels, extra arguments)
_SPECS: dict[str, tuple[str, str, tuple[str, ...], dict[str, Any]]] = {
    "revival_decisions": (
        "Counter",
        "Decisions made, by lifecycle stage, channel and outcome",
        ("stage", "channel", "outcome"),
        {},
    ),
    "revival_model_version": (
        "Gauge",
        "Served model versions: 1 for the served version of each model, 0 for a replaced one",
        ("model", "version"),
        {"multiprocess_mode": "livemostrecent"},
    ),
    "revival_snapshot_age_seconds": (
        "Gauge",
        "Seconds between now and the cut-off of the snapshot decisions are made on",
        (),
        {"multiprocess_mode": "livemostrecent"},
    ),
    "revival_snapshot_timestamp_seconds": (
        "Gauge",
        "The cut-off of the served snapshot (Unix time)",
        (),
        {"multiprocess_mode": "livemostrecent"},
    ),
    "revival_dispatch_failures": (
        "Counter",
        "Dispatches that failed at the channel's provider, by channel",
        ("channel",),
        {},
    ),
    "revival_cap_refusals": (
        "Counter",
        "Frequency caps that ruled a channel out of a recorded decision, by cap and channel",
        ("cap", "channel"),
        {},
    ),
    "revival_retrain_jobs": (
        "Counter",
        "Retraining jobs, by status (started, succeeded, failed)",
        ("status",),
        {},
    ),
}

_lock = threading.Lock()
_made: dict[str, Any] = {}
_snapshot_at: list[float] = []  # the served snapshot's cut-off (Unix time), once known


def _metric(name: str) -> Any:
    """The metric ``name`` of :data:`_SPECS`, built on first use."""
    with _lock:
        if name not in _made:
            import prometheus_client

            kind, text, labels, extra = _SPECS[name]
            _made[name] = getattr(prometheus_client, kind)(name, text, labels, **extra)
        return _made[name]


def _safely(update: Any) -> None:
    try:
        update()
    except Exception:  # metrics must never fail a request
        log.debug("metrics update failed", exc_info=True)


def count_decision(decision: Mapping[str, Any]) -> None:
    """Count a decision (plain data of :func:`service.engine.decide_data`)."""
    outcome = (
        "holdout" if decision["holdout"] else ("contact" if decision["contact"] else "no_contact")
    )
    labels = (decision["stage"], decision["channel"] or "none", outcome)
    _safely(lambda: _metric("revival_decisions").labels(*labels).inc())


def count_caps(decision: Mapping[str, Any]) -> None:
    """Count the caps that ruled channels out of a recorded decision: its channel reasons
    ``<channel>:cap_<which>`` (`` (at reservation)`` when the store refused it)."""

    def update() -> None:
        for reason in (decision.get("reasons") or {}).get("channel", ()):
            channel, _, why = reason.partition(":")
            if why.startswith("cap_"):
                cap = why.split(" ", 1)[0].removeprefix("cap_")
                _metric("revival_cap_refusals").labels(cap, channel).inc()

    _safely(update)


def count_dispatch_failure(channel: str) -> None:
    """Count a send the channel's provider failed."""
    _safely(lambda: _metric("revival_dispatch_failures").labels(channel).inc())


def count_retrain_job(status: str) -> None:
    """Count a retraining job that started, succeeded or failed."""
    _safely(lambda: _metric("revival_retrain_jobs").labels(status).inc())


def served(
    versions: Mapping[str, str],
    snapshot_at: datetime,
    previous: Mapping[str, str] | None = None,
) -> None:
    """Record what the service now serves: champion versions (a replaced one drops to 0)
    and the snapshot's cut-off (an aware datetime)."""

    def update() -> None:
        gauge = _metric("revival_model_version")
        for model, version in (previous or {}).items():
            if versions.get(model) != version:
                gauge.labels(model, str(version)).set(0)
        for model, version in versions.items():
            gauge.labels(model, str(version)).set(1)
        _snapshot_at[:] = [snapshot_at.timestamp()]
        _metric("revival_snapshot_timestamp_seconds").set(_snapshot_at[0])
        refresh_on_scrape()

    _safely(update)


def refresh_on_scrape() -> None:
    """Bring the time-dependent gauges up to date (called as ``/metrics`` is requested)."""
    if _snapshot_at:
        _safely(lambda: _metric("revival_snapshot_age_seconds").set(time.time() - _snapshot_at[0]))
