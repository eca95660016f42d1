"""The BentoML service: a thin HTTP layer over :class:`service.runtime.Runtime`.

Endpoints (POST, JSON; OpenAPI at ``/docs.json``; health ``/livez``, ``/readyz``; Prometheus
``/metrics``):

* ``/decide``        one customer: stage, scores, revive + priority, why asleep, offer,
  channel, send_at, hold-out, rendered message, reasons; recorded (unless ``dry_run``),
  optionally dispatched; idempotent on ``decision_id``.
* ``/decide_batch``  "who to revive": ids or stage/tier filters, ranked by priority, cut at a
  budget (currency) or a count, paged with ``offset``/``limit``.
* ``/recommend``     cross-sell items (never one returned in the last 90 days).
* ``/customer``      the 360° view.
* ``/events``        message events, purchases and consent changes (affect the next decision).
* ``/reload``        switch to the current MLflow champions without a restart.
* ``/retrain``       start retraining with the outcomes (``python -m training.retrain``) as a
  background job; ``/retrain_status`` polls it (:mod:`service.jobs`).
* ``/report``        a campaign's treated vs hold-out report with 95% intervals
  (:mod:`service.report`).

Errors are JSON ``{"error": <code>, "detail": <what and where>}`` with a 4xx status: 404
unknown customer, 409 conflicting decision id, 413 body over ``value_tiers.max_body_bytes``,
422 unknown campaign or an input the policy rejects; malformed JSON and wrong types get
BentoML's 400 with the offending field in ``detail[].loc``. Nothing is written to the store
before a request has been validated. API methods never call each other (that deadlocks a
served BentoML service); they share the runtime's plain methods.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import bentoml
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from core.env import configure_environment
from core.store import DuplicateDecision, InvalidRecord, StoreUnavailable
from service.config import load_settings
from service.engine import Decision, UnknownCampaign
from service.jobs import JobConflict, RetrainJobs, UnknownJob
from service.report import CampaignReport
from service.runtime import (
    Conflict,
    ModelsUnavailable,
    Rejected,
    Runtime,
    UnknownCustomer,
    tracking_uri,
)
from service.schemas import (
    BatchRequest,
    BatchResponse,
    CustomerRequest,
    CustomerResponse,
    DecideRequest,
    EventsRequest,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    ReportRequest,
    RetrainJobOut,
    RetrainRequest,
    RetrainStatusRequest,
)

__all__ = ["SERVING", "BodyLimit", "RevivalService"]

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """The service's error body: ``{"error": code, "detail": detail}``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _json(result: Any) -> Any:
    """A pydantic result as a ready JSON response (pydantic-core serialises it in one pass;
    BentoML would validate and dump it twice more); errors pass through unchanged."""
    if isinstance(result, BaseModel):
        return Response(content=result.model_dump_json(), media_type="application/json")
    return result


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _guard(fn: Callable[[], Any]) -> Any:
    """Run an endpoint body, turning domain errors into JSON 4xx/503 responses."""
    try:
        return _json(fn())
    except UnknownCustomer as exc:
        return error_response(404, "unknown_customer", _message(exc))
    except UnknownCampaign as exc:
        return error_response(422, "unknown_campaign", _message(exc))
    except (Rejected, InvalidRecord) as exc:
        return error_response(422, "rejected", _message(exc))
    except UnknownJob as exc:
        return error_response(404, "unknown_job", _message(exc))
    except (Conflict, DuplicateDecision, JobConflict) as exc:
        return error_response(409, "conflict", _message(exc))
    except (StoreUnavailable, ModelsUnavailable) as exc:
        log.warning("unavailable: %s", exc)
        return error_response(503, "unavailable", _message(exc))


class BodyLimit:
    """ASGI middleware: a request body over the limit gets a 413 JSON error, unread.

    With ``Content-Length`` the check is immediate; a chunked body is buffered up to the limit
    and refused as soon as it passes it. The limit is read from the settings on first use
    (``value_tiers.max_body_bytes``) unless given.
    """

    def __init__(self, app: Any, max_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes

    def _limit(self) -> int:
        if self.max_bytes is None:
            self.max_bytes = load_settings().value_tiers.max_body_bytes
        return self.max_bytes

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps(
            {
                "error": "payload_too_large",
                "detail": f"request body exceeds {limit:,} bytes (value_tiers.max_body_bytes)",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self._limit()
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(send, limit)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_metrics_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def _decision_counter() -> Any:
    """Prometheus counter of decisions (created after BentoML set up multiprocess mode)."""
    with _metrics_lock:
        if "decisions" not in _metrics:
            import prometheus_client

            _metrics["decisions"] = prometheus_client.Counter(
                "revival_decisions",
                "Decisions made, by lifecycle stage, channel and outcome",
                ["stage", "channel", "outcome"],
            )
        return _metrics["decisions"]


def _count(decision: Mapping[str, Any]) -> None:
    """Count a decision (:meth:`Runtime.decide_encoded`'s plain data) in the metrics."""
    outcome = (
        "holdout" if decision["holdout"] else ("contact" if decision["contact"] else "no_contact")
    )
    try:
        _decision_counter().labels(decision["stage"], decision["channel"] or "none", outcome).inc()
    except Exception:  # metrics must never fail a request
        log.debug("metrics update failed", exc_info=True)


# Workers, threads and traffic of the served process; the benchmark's no-op service
# (benchmarks.noop_service) runs with the same, so its latency is this service's floor.
SERVING: dict[str, Any] = {"workers": 1, "threads": 8, "traffic": {"timeout": 120}}


@bentoml.service(name="revival", **SERVING)
class RevivalService:
    """Customer-revival decisions over HTTP (see the module docstring)."""

    def __init__(self) -> None:
        configure_environment()  # the service is an entry point (`bentoml serve`)
        self.settings = load_settings()
        self.runtime = Runtime(self.settings)
        self._local_store = self.settings.store_url.startswith("sqlite")
        self.jobs = RetrainJobs(self.settings, tracking_uri(self.settings))

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.runtime.close()

    @bentoml.api(route="/decide")
    async def decide(self, request: DecideRequest, /) -> Decision:
        """Decide for one customer (recorded unless ``dry_run``; dispatched if asked).

        On a local SQLite store a decision is ~1 ms of CPU-bound Python: it runs on the event
        loop, because handing it to a worker thread costs more than the work (the GIL
        hand-over between the loop and the thread). A networked store (PostgreSQL: round
        trips, another replica's customer lock) and dispatch (the provider's network) wait
        on I/O, so they run in a worker thread.
        """

        def run() -> Response:
            decision, encoded = self.runtime.decide_encoded(request)
            _count(decision)
            return Response(content=encoded, media_type="application/json")

        if request.dispatch or not self._local_store:
            return await anyio.to_thread.run_sync(_guard, run)
        return _guard(run)

    @bentoml.api(route="/decide_batch")
    def decide_batch(self, request: BatchRequest, /) -> BatchResponse:
        """Rank many customers by priority, cut at a budget or count, return one page."""
        return _guard(lambda: self.runtime.decide_batch(request))

    @bentoml.api(route="/recommend")
    def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Cross-sell items for a customer (returned or just-bought items excluded)."""
        return _guard(lambda: self.runtime.recommend(request.customer_id, request.k, request.now))

    @bentoml.api(route="/customer")
    def customer(self, request: CustomerRequest, /) -> CustomerResponse:
        """The 360° view: features, stage, scores, contacts, consents, items."""
        return _guard(lambda: self.runtime.customer(request.customer_id, request.now))

    @bentoml.api(route="/events")
    def events(self, request: EventsRequest, /) -> EventsResponse:
        """Record message events, purchases and consent changes."""
        return _guard(lambda: self.runtime.record(request.events, request.consents))

    @bentoml.api(route="/reload")
    def reload(self, request: ReloadRequest, /) -> ReloadResponse:
        """Load the current champions (and optionally rebuild the snapshot)."""
        return _guard(lambda: self.runtime.reload(data=request.data))

    @bentoml.api(route="/retrain")
    def retrain(self, request: RetrainRequest, /) -> RetrainJobOut:
        """Start retraining with the outcomes as a background process; returns the job id."""
        return _guard(lambda: self.jobs.start(request))

    @bentoml.api(route="/retrain_status")
    def retrain_status(self, request: RetrainStatusRequest, /) -> RetrainJobOut:
        """A retraining job's status, log tail and (when done) its summary."""
        return _guard(lambda: self.jobs.status(request.job_id))

    @bentoml.api(route="/report")
    def report(self, request: ReportRequest, /) -> CampaignReport:
        """A campaign's report: treated vs hold-out, overall and per stage × tier, 95% CIs."""
        return _guard(lambda: self.runtime.report(request))


RevivalService.add_asgi_middleware(BodyLimit)
