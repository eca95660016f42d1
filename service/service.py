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
* ``/points``        spend (``burn``) or correct (``adjust``, admin) loyalty points
  (:mod:`service.points`); purchases earn through ``/events``.
* ``/reload``        switch to the current MLflow champions without a restart.
* ``/retrain``       start retraining with the outcomes (``python -m training.retrain``) as a
  background job; ``/retrain_status`` polls it (:mod:`service.jobs`).
* ``/report``        a campaign's treated vs hold-out report with 95% intervals
  (:mod:`service.report`).
* ``/customers``     stored profiles, upserted in batches; ``/customers/unmerge`` undoes a
  merge, ``/customers/erase`` erases a customer (:mod:`service.customers`).
* ``/keys/create``, ``/keys/list``, ``/keys/revoke``  API keys (also ``python -m
  service.auth``).

Every endpoint but the health probes, ``/metrics`` and ``/docs.json`` needs an API key
with the endpoint's scope; :class:`service.web.gate.Gate` checks it, the rate limit, the
media type and the body before a request reaches the methods below. Errors are RFC 9457
problems (:mod:`service.web.problems`): 404 unknown customer/job/key, 409 conflicting
decision id or running job, 422 invalid input, unknown campaign or an input the policy
rejects, 503 store or models unavailable. Nothing is written to the store before a request
has been validated. API methods never call each other (that deadlocks a served BentoML
service); they share the runtime's plain methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel
from starlette.responses import Response

from core.env import configure_environment
from core.store import DuplicateDecision, InvalidRecord, StoreUnavailable
from service.api_config import SCOPES
from service.config import load_settings
from service.customers import (
    CustomerDesk,
    CustomersRequest,
    CustomersResponse,
    EraseRequest,
    EraseResponse,
    UnmergeRequest,
    UnmergeResponse,
)
from service.engine import Decision, UnknownCampaign
from service.jobs import JobConflict, RetrainJobs, UnknownJob
from service.journeys import JourneyDesk, load_journeys
from service.metrics import count_decision
from service.points import NeedsScope, PointsDesk, PointsRequest, PointsResponse
from service.preflight import DeploymentError, check_champions, check_deployment
from service.report import CampaignReport
from service.runtime import (
    Conflict,
    DataUnavailable,
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
    JourneyCustomerRequest,
    JourneyCustomerResponse,
    JourneyDryRunRequest,
    JourneyDryRunResponse,
    JourneyPauseRequest,
    JourneyPauseResponse,
    JourneysRequest,
    JourneysResponse,
    KeyCreated,
    KeyCreateRequest,
    KeyList,
    KeyListRequest,
    KeyOut,
    KeyRevokeRequest,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    ReportRequest,
    RetrainJobOut,
    RetrainRequest,
    RetrainStatusRequest,
)
from service.web import Gate, caller_key_id, caller_scopes, complete_spec, problem_response

__all__ = ["SERVING", "RevivalService", "UnknownKey"]

log = logging.getLogger(__name__)


class UnknownKey(LookupError):
    """No API key with that id (HTTP 404)."""


def _json(result: Any) -> Any:
    """A pydantic result as a ready JSON response (pydantic-core serialises it in one pass;
    BentoML would validate and dump it twice more); errors pass through unchanged."""
    if isinstance(result, BaseModel):
        return Response(content=result.model_dump_json(), media_type="application/json")
    return result


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


# Domain errors -> problem codes (service.web.problems gives each its status); 503s are
# logged at WARNING, since they say something about the deployment, not the caller.
_ERRORS: dict[type[BaseException], str] = {
    UnknownCustomer: "unknown_customer",
    UnknownCampaign: "unknown_campaign",
    Rejected: "rejected",
    InvalidRecord: "rejected",
    UnknownJob: "unknown_job",
    UnknownKey: "unknown_key",
    Conflict: "conflict",
    DuplicateDecision: "conflict",
    JobConflict: "conflict",
    NeedsScope: "forbidden",
    StoreUnavailable: "unavailable",
    ModelsUnavailable: "unavailable",
    DataUnavailable: "unavailable",
}
_DOMAIN_ERRORS = tuple(_ERRORS)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run an endpoint body, turning domain errors into problem responses (one log line)."""
    try:
        return _json(fn())
    except _DOMAIN_ERRORS as exc:
        code = next(c for cls, c in _ERRORS.items() if isinstance(exc, cls))
        level = logging.WARNING if code == "unavailable" else logging.INFO
        log.log(level, "%s: %s", code, _message(exc)[:300])
        return problem_response(code, _message(exc))


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
        self.jobs = RetrainJobs(self.settings, tracking_uri(self.settings), self.runtime.store)
        self.journeys = JourneyDesk(self.runtime, load_journeys(settings=self.settings))
        self.customers = CustomerDesk(self.settings, self.runtime.store)
        self.points = PointsDesk(self.runtime)
        self._first_key()

    def _first_key(self) -> None:
        """On a first start (no active key in the store) create an admin key and print it
        once, as Jupyter prints its token; ``api.bootstrap_key`` fixes its value instead."""
        given = self.settings.api.bootstrap_key
        token = given.get_secret_value() if given is not None else None
        created = self.runtime.store.keys.create_first("admin (first start)", SCOPES, token)
        if created is None:
            return
        key, secret = created
        shown = "<the value of api.bootstrap_key>" if given is not None else secret
        print(
            f"\n  No API key existed, so admin key {key.key_id} was created. It is shown only"
            f" this once:\n\n      export REVIVAL_KEY={shown}\n\n  Call the API with"
            ' -H "Authorization: Bearer $REVIVAL_KEY"; make narrower keys with'
            " python -m service.auth create NAME --scopes decide,read\n",
            flush=True,
        )

    @bentoml.on_deployment
    def preflight() -> None:
        """Runs once in ``bentoml serve``'s main process before any worker starts: a bad
        setting ends the command (non-zero, one line naming the setting, no restart loop)."""
        try:
            check_champions(check_deployment())
        except DeploymentError as exc:
            raise BentoMLException(str(exc)) from None

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
            count_decision(decision)
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

    @bentoml.api(route="/points")
    def points_update(self, request: PointsRequest, /) -> PointsResponse:
        """Burn (scope events) or adjust (admin) a customer's loyalty points; returns the
        balance right after."""
        scopes = caller_scopes()
        return _guard(lambda: self.points.apply(request, scopes))

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

    @bentoml.api(route="/keys/create")
    def keys_create(self, request: KeyCreateRequest, /) -> KeyCreated:
        """Create an API key; the response is the only time its secret is shown."""

        def run() -> KeyCreated:
            key, token = self.runtime.store.keys.create(request.name, request.scopes)
            return KeyCreated(**KeyOut.of(key).model_dump(), key=token)

        return _guard(run)

    @bentoml.api(route="/keys/list")
    def keys_list(self, request: KeyListRequest, /) -> KeyList:
        """Every API key (ids, names, scopes, dates; never the secrets)."""
        keys = self.runtime.store.keys
        return _guard(lambda: KeyList(keys=[KeyOut.of(k) for k in keys.list(request.revoked)]))

    @bentoml.api(route="/keys/revoke")
    def keys_revoke(self, request: KeyRevokeRequest, /) -> KeyOut:
        """Revoke a key: refused by every replica within ``api.key_cache_seconds``. A key
        cannot revoke itself (409), so a caller cannot lock itself out by mistake; rotate by
        creating the new key and revoking the old one with it."""

        def run() -> KeyOut:
            if request.key_id == caller_key_id():
                raise Conflict(
                    f"key_id: {request.key_id} is the key making this request; a key cannot "
                    "revoke itself (revoke it with another admin key)"
                )
            try:
                return KeyOut.of(self.runtime.store.keys.revoke(request.key_id))
            except LookupError as exc:
                raise UnknownKey(_message(exc)) from None

        return _guard(run)

    @bentoml.api(route="/journeys")
    def journeys_list(self, request: JourneysRequest, /) -> JourneysResponse:
        """Every journey with live counts: enrolled, active, completed, exited, converted,
        and each step's runs by outcome."""
        return _guard(self.journeys.overview)

    @bentoml.api(route="/journeys/customer")
    def journeys_customer(self, request: JourneyCustomerRequest, /) -> JourneyCustomerResponse:
        """The customer's journey history: enrolments and every step run."""
        return _guard(lambda: self.journeys.customer(request.customer_id))

    @bentoml.api(route="/journeys/pause")
    def journeys_pause(self, request: JourneyPauseRequest, /) -> JourneyPauseResponse:
        """Pause or resume a journey for every agent (admin)."""
        who = f"key {caller_key_id()}"
        return _guard(lambda: self.journeys.pause(request, who))

    @bentoml.api(route="/journeys/dry_run")
    def journeys_dry_run(self, request: JourneyDryRunRequest, /) -> JourneyDryRunResponse:
        """What a journey would send over a date range for a segment (nothing stored)."""
        return _guard(lambda: self.journeys.dry_run(request))

    @bentoml.api(route="/customers")
    def customers_upsert(self, request: CustomersRequest, /) -> CustomersResponse:
        """Create or update stored profiles (identifiers, consents, locale, time zone,
        country, birthday); profiles sharing an identifier join one customer."""
        return _guard(lambda: self.customers.upsert(request.customers))

    @bentoml.api(route="/customers/unmerge")
    def customers_unmerge(self, request: UnmergeRequest, /) -> UnmergeResponse:
        """Undo a merge of the identity audit (admin); the pair is never joined again."""
        who = f"key {caller_key_id()}"
        return _guard(lambda: self.customers.unmerge(request.merge_id, who))

    @bentoml.api(route="/customers/erase")
    def customers_erase(self, request: EraseRequest, /) -> EraseResponse:
        """Erase a customer on request (admin): identifiers and profile deleted, records
        kept under a tombstone, the customer left out of every later snapshot."""
        who = f"key {caller_key_id()}"

        def run() -> EraseResponse:
            customer = self.runtime.resolve([request.customer_id])[request.customer_id]
            return self.customers.erase(customer, request.reason, who)

        return _guard(run)


RevivalService.add_asgi_middleware(
    Gate,
    models={api.route: api.input_spec for api in RevivalService.apis.values()},
    spec=lambda: complete_spec(
        RevivalService.openapi_spec.asdict(),
        {api.route: (api.input_spec, api.output_spec) for api in RevivalService.apis.values()},
    ),
)
