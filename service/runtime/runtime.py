"""The serving runtime: the object every endpoint calls, delegating to named collaborators.

At start-up :class:`Runtime` loads the champions (:mod:`.models`), loads the point-in-time
snapshot (:mod:`.snapshot`: the newest one training stored, else built from the configured
log), scores every customer once (:mod:`.state`) and warms the population priors
(:mod:`.population`); purchases since the snapshot are read from the store with each
decision's history (:mod:`.overlay`). :meth:`Runtime.reload` switches to the current
champions (and optionally the newest snapshot) without a restart and publishes them in the
shared store, which every replica follows (:mod:`.sync`, :mod:`core.store.serving`);
requests in flight keep the state they started with (the state is swapped as one object).
Requests go to :class:`.decisions.Decider` (``/decide``),
:class:`.batch.BatchRanker` (``/decide_batch``), :class:`.recording.EventRecorder`
(``/events``), :class:`.lookups.CustomerLookups` (``/recommend``, ``/customer``) and
:func:`service.report.campaign_report` (``/report``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from core.identity import InvalidIdentifier, canonical_ref
from core.store import (
    AmbiguousIdentifier,
    ContactStore,
    Engagement,
    ErasedCustomer,
    Served,
    open_store,
)
from service import metrics
from service.channels import ChannelProvider
from service.config import Settings
from service.engine import (
    DEFAULT_PARAMS,
    ContactHistory,
    CustomerView,
    Decision,
    ModelScores,
    PolicyParams,
)
from service.messages import load_templates
from service.report import BadReportRequest, CampaignReport, campaign_report
from service.runtime.batch import BatchRanker
from service.runtime.decisions import Decider
from service.runtime.dispatch import Dispatcher, channel_providers
from service.runtime.errors import DataUnavailable, Rejected, UnknownCustomer
from service.runtime.history import ContactHistories
from service.runtime.lookups import CustomerLookups
from service.runtime.models import Models, load_models
from service.runtime.population import PopulationCache
from service.runtime.recording import EventRecorder
from service.runtime.snapshot import Snapshot, load_snapshot
from service.runtime.state import State, score_snapshot
from service.runtime.sync import ServedSync
from service.runtime.views import CustomerViews
from service.schemas import (
    BatchRequest,
    BatchResponse,
    ConsentIn,
    CustomerResponse,
    DecideRequest,
    EventIn,
    EventsResponse,
    ProfileIn,
    RecommendResponse,
    ReloadResponse,
    ReportRequest,
)

__all__ = ["Runtime"]

log = logging.getLogger(__name__)
_Named = TypeVar("_Named", EventIn, ConsentIn)


class Runtime:
    """Models + snapshot + store + policy: the plain-Python core behind every endpoint."""

    def __init__(
        self,
        settings: Settings,
        store: ContactStore | None = None,
        params: PolicyParams = DEFAULT_PARAMS,
        providers: dict[str, ChannelProvider] | None = None,
    ):
        self.settings = settings
        self.params = params
        self.store = store if store is not None else open_store(settings.store_url)
        self.providers = providers if providers is not None else channel_providers(settings)
        self._reload_lock = threading.Lock()
        self._population = PopulationCache(self.store)
        self.histories = ContactHistories(self.store, params, self._population)
        self.views = CustomerViews(
            self.store.profiles, self.store.points, settings.loyalty.reminder_window
        )
        self.dispatcher = Dispatcher(settings, self.store, self.providers)
        self.decider = Decider(
            settings, params, self.store, self.views, self.histories, self.dispatcher
        )
        self.batch = BatchRanker(settings, params, self.decider)
        self.recorder = EventRecorder(settings, self.store, self._population)
        self.lookups = CustomerLookups(settings, params, self.store, self.views, self.histories)
        t0 = time.perf_counter()
        try:
            load_templates()  # parse and validate the message templates now, not on a request
            snapshot, models, self._generation = self._served_at_start()
            self._state = score_snapshot(snapshot, models, settings, params)
            self._population.warm()
        except BaseException:
            self.close()
            raise
        self._sync = ServedSync(
            self.store.serving,
            settings.replica_sync_seconds,
            lambda: self._generation,
            self._follow,
        ).start()
        self.startup_seconds = time.perf_counter() - t0
        metrics.served(models.versions, snapshot.at)
        log.info(
            "runtime ready: %d customers at %s (snapshot %s), models %s (%.1f s)",
            len(snapshot.features),
            snapshot.cutoff.date(),
            snapshot.source,
            models.versions,
            self.startup_seconds,
        )

    def close(self) -> None:
        """Stop following the store; release the store and provider connections."""
        sync = getattr(self, "_sync", None)
        if sync is not None:
            sync.stop()
        self.dispatcher.close()
        self.store.close()

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> State:
        """The current snapshot × champions (swapped as one object by :meth:`reload`)."""
        return self._state

    def reload(self, data: bool = False) -> ReloadResponse:
        """Switch to the current champions (and a fresh snapshot if ``data``) and publish
        them, so that every replica sharing the store follows within
        ``replica_sync_seconds``."""
        t0 = time.perf_counter()
        with self._reload_lock:
            old = self._state
            models = load_models(self.settings)
            snapshot = self._fresh_snapshot() if data else old.snapshot
            state = score_snapshot(snapshot, models, self.settings, self.params)
            served = self.store.serving.publish(
                models.versions, snapshot.source, self._who("reload")
            )
            self._state, self._generation = state, served.generation
        new = self._state
        metrics.served(new.models.versions, new.snapshot.at, old.models.versions)
        return ReloadResponse(
            model_versions=new.models.versions,
            previous_versions=old.models.versions,
            changed=new.models.versions != old.models.versions or data,
            snapshot_at=new.snapshot.at,
            customers=len(new.snapshot.features),
            seconds=round(time.perf_counter() - t0, 3),
            offer_choice=new.offer_model.label,
            snapshot=new.snapshot.source,
            generation=served.generation,
        )

    @property
    def generation(self) -> int:
        """The generation of the served-versions log this replica serves."""
        return self._generation

    def _served_at_start(self) -> tuple[Snapshot, Models, int]:
        """What the store says every replica serves; on a new store, the champions, which
        this replica then publishes (atomically: replicas starting together agree)."""
        serving = self.store.serving
        served = serving.current()
        snapshot = _unified_snapshot(
            self.settings, self.store, served.snapshot if served is not None else None
        )
        models = load_models(self.settings, served.versions if served is not None else None)
        if served is None:
            by = self._who("first start")
            served = serving.publish(models.versions, snapshot.source, by, only_first=True)
            if served.versions != models.versions:  # another replica published first
                models = load_models(self.settings, served.versions)
            if served.snapshot != snapshot.source:
                snapshot = _unified_snapshot(self.settings, self.store, served.snapshot)
        return snapshot, models, served.generation

    def _follow(self, served: Served) -> None:
        """Serve what another replica published (:class:`ServedSync` calls this)."""
        with self._reload_lock:
            if served.generation <= self._generation:
                return
            old = self._state
            models = old.models
            if served.versions != models.versions:
                models = load_models(self.settings, served.versions)
            snapshot = old.snapshot
            if served.snapshot != snapshot.source:
                snapshot = self._fresh_snapshot(served.snapshot)
            if models is not old.models or snapshot is not old.snapshot:
                self._state = score_snapshot(snapshot, models, self.settings, self.params)
            self._generation = served.generation
        metrics.served(models.versions, snapshot.at, old.models.versions)
        log.info(
            "following generation %d published by %s: models %s",
            served.generation,
            served.changed_by,
            served.versions,
        )

    @staticmethod
    def _who(why: str) -> str:
        return f"{socket.gethostname()}:{os.getpid()} {why}"

    def _fresh_snapshot(self, source: str | None = None) -> Snapshot:
        """The snapshot :func:`load_snapshot` gives now for ``source`` (default: the newest
        stored one, else rebuilt from ``data_path``); an unreadable one is the deployment's
        problem (:class:`DataUnavailable`, 503), and the current snapshot stays served."""
        try:
            return _unified_snapshot(self.settings, self.store, source)
        except (OSError, ValueError) as exc:
            raise DataUnavailable(
                f"data_path / snapshot: cannot load a fresh snapshot "
                f"({self.settings.snapshot}, data_path {self.settings.data_path}): {exc}"
            ) from exc

    # ----------------------------------------------------------------- what a decision reads

    def position(self, customer_id: str, state: State | None = None) -> int:
        """The customer's row in the snapshot (:class:`UnknownCustomer` if absent)."""
        return self.views.position(customer_id, state or self._state)

    def view(self, customer_id: str, profile: ProfileIn | None, state: State) -> CustomerView:
        """The customer as the decision engine sees it (:meth:`CustomerViews.view`)."""
        return self.views.view(customer_id, profile, state)

    @staticmethod
    def model_scores(pos: int, state: State) -> ModelScores:
        """The champions' scores of the customer at ``pos``."""
        return CustomerViews.model_scores(pos, state)

    def candidates(self, customer_id: str, k: int, state: State) -> list[str]:
        """ALS items the customer has not bought or returned (cached per model state)."""
        return self.views.candidates(customer_id, k, state)

    def population(self) -> dict[str, Engagement]:
        """Every channel's engagement over all customers (:class:`PopulationCache`)."""
        return self._population.get()

    def history(self, customer_id: str, now: datetime) -> ContactHistory:
        """The customer's contacts, consents and engagement as one decision reads them."""
        return self.histories.read(customer_id, now)

    # ----------------------------------------------------------------- endpoints

    def resolve(self, refs: Sequence[str], field: str = "customer_id") -> dict[str, str]:
        """The unified customer of each reference — a customer id, a source's profile id
        (``pos:777``) or an identifier (``email:ann@example.com``),
        :meth:`core.store.ProfileStore.resolve`; an identifier held by several customers
        is :class:`Rejected` naming ``field``."""
        region = self.settings.identity.phone_region
        try:
            canonical = {ref: canonical_ref(ref, region) for ref in refs}
            found = self.store.profiles.resolve(list(dict.fromkeys(canonical.values())))
        except (AmbiguousIdentifier, InvalidIdentifier) as exc:
            raise Rejected(f"{field}: {exc}") from None
        except ErasedCustomer as exc:
            raise UnknownCustomer(f"{field}: {exc}") from None
        return {ref: found[c] for ref, c in canonical.items()}

    def decide(self, req: DecideRequest) -> Decision:
        """Decide for one customer; record it (unless ``dry_run``); dispatch if asked."""
        return Decision.model_validate(self.decide_encoded(req)[0])

    def decide_encoded(self, req: DecideRequest) -> tuple[dict[str, Any], bytes]:
        """:meth:`decide` as plain data and its JSON, the response body
        (:meth:`Decider.decide_encoded`), for the unified customer the request names."""
        customer = self.resolve([req.customer_id])[req.customer_id]
        if customer != req.customer_id:
            req = req.model_copy(update={"customer_id": customer})
        return self.decider.decide_encoded(req, self._state)

    def decide_batch(self, req: BatchRequest) -> BatchResponse:
        """Rank customers by priority (vectorised), cut at budget/count, decide the page."""
        if req.customer_ids:
            gone = self.store.profiles.erased(req.customer_ids)  # left out, like ids not served
            refs = [c for c in req.customer_ids if c not in gone]
            found = self.resolve(refs, "customer_ids")
            ids = list(dict.fromkeys(found[c] for c in refs))
            req = req.model_copy(update={"customer_ids": ids})
        return self.batch.decide_batch(req, self._state)

    def recommend(self, customer_id: str, k: int, now: datetime | None) -> RecommendResponse:
        """Cross-sell items for the customer (returned or just-bought items excluded)."""
        customer = self.resolve([customer_id])[customer_id]
        return self.lookups.recommend(customer, k, now, self._state)

    def customer(self, customer_id: str, now: datetime | None) -> CustomerResponse:
        """The 360° view of the customer."""
        return self.lookups.customer(self.resolve([customer_id])[customer_id], now, self._state)

    def record(self, events: Sequence[EventIn], consents: Sequence[ConsentIn]) -> EventsResponse:
        """Validate everything first, then append events (one transaction) and consents,
        each under the unified customer its ``customer_id`` names."""
        refs = [e.customer_id for e in events] + [c.customer_id for c in consents]
        if refs:
            found = self.resolve(refs)
            events = [_as_customer(e, found) for e in events]
            consents = [_as_customer(c, found) for c in consents]
        return self.recorder.record(events, consents)

    def report(self, req: ReportRequest) -> CampaignReport:
        """The campaign report (:func:`service.report.campaign_report`) on the store's
        decisions and ``purchase`` events; an inconsistent request is :class:`Rejected`."""
        try:
            return campaign_report(
                self.store, req.campaign_id, req.start, req.end, settings=self.settings
            )
        except BadReportRequest as exc:
            raise Rejected(str(exc)) from None


def _unified_snapshot(settings: Settings, store: ContactStore, source: str | None) -> Snapshot:
    """:func:`load_snapshot` on the customers the store's stitched profiles unify, without
    the erased ones."""
    profiles = store.profiles
    return load_snapshot(settings, source, profiles.identity_map(), profiles.erased_hashes())


def _as_customer(item: _Named, found: dict[str, str]) -> _Named:
    """``item`` with its ``customer_id`` replaced by the unified customer in ``found``."""
    customer = found[item.customer_id]
    return (
        item if customer == item.customer_id else item.model_copy(update={"customer_id": customer})
    )
