"""One customer's decision: made by the engine, recorded under the caps, replayed, dispatched."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.store import CapSpec, ContactStore, CustomerHistory, DecisionRecord, DuplicateDecision
from service.config import CHANNELS, Settings
from service.engine import (
    ContactHistory,
    Decision,
    JourneyAsk,
    PolicyParams,
    campaign_by_id,
    caps_for,
    decide_data,
    encode_decision,
)
from service.metrics import count_caps
from service.runtime.clock import request_now
from service.runtime.dispatch import Dispatcher
from service.runtime.errors import Conflict, Rejected
from service.runtime.history import ContactHistories
from service.runtime.state import State
from service.runtime.views import CustomerViews, StoredFacts
from service.schemas import DecideRequest, ProfileIn

__all__ = ["NO_ITEM_MODEL", "Decider"]

# in every decision's reasons.what when the champions were trained without items
NO_ITEM_MODEL = "items:none: no cross-sell model (trained on a log without item ids)"


def _as_record(data: Mapping[str, Any], payload: str) -> DecisionRecord:
    """The store's record of a decision (:func:`decide_data`) whose JSON is ``payload``."""
    offer = data["offer"]
    return DecisionRecord(
        decision_id=data["decision_id"],
        customer_id=data["customer_id"],
        campaign_id=data["campaign_id"],
        ts=data["decided_at"],
        channel=data["channel"],
        send_at=data["send_at"],
        intent=data["intent"],
        offer_type=offer["type"] if offer else "none",
        holdout=data["holdout"],
        revive=data["revive"],
        priority=data["priority"],
        payload=payload,
        model_versions=data["model_versions"],
    )


@dataclass
class Decider:
    """Makes, records and dispatches single decisions (``/decide`` and the batch pages)."""

    settings: Settings
    params: PolicyParams
    store: ContactStore
    views: CustomerViews
    histories: ContactHistories
    dispatcher: Dispatcher

    def _decide_once(
        self,
        customer_id: str,
        now: datetime,
        campaign_id: str,
        channels: Sequence[str] | None,
        profile: ProfileIn | None,
        state: State,
        decision_id: str | None,
        unavailable: dict[str, str],
        explore: bool | None,
        facts: StoredFacts,
        history: ContactHistory,
        found: CustomerHistory | None = None,
        journey: JourneyAsk | None = None,
    ) -> dict[str, Any]:
        """The engine's decision (:func:`decide_data`) on a read history (``found``: the
        store's, with the purchases and returns since the snapshot) and the ``facts`` read
        before it."""
        views = self.views
        pos = views.position(customer_id, state)
        bought, returned = (found.purchases, found.returns) if found is not None else ((), ())
        data = decide_data(
            views.view(customer_id, profile, state, bought, returned, now, facts),
            views.model_scores(pos, state),
            views.candidates(customer_id, self.params.candidate_items, state),
            history,
            self.settings,
            now,
            campaign_id=campaign_id,
            channels=channels,
            item_names=state.models.item_names or state.snapshot.item_names,
            model_versions=state.models.versions,
            params=self.params,
            decision_id=decision_id,
            unavailable=unavailable,
            explore=explore,
            prepared=state.prepared.row(pos),
            journey=journey,
        )
        if state.models.recommender is None:
            data["reasons"]["what"].append(NO_ITEM_MODEL)
        return data

    def decide_and_record(
        self,
        customer_id: str,
        now: datetime,
        campaign_id: str,
        channels: Sequence[str] | None,
        profile: ProfileIn | None,
        state: State,
        decision_id: str | None,
        record: bool,
        explore: bool | None = None,
        journey: JourneyAsk | None = None,
    ) -> tuple[dict[str, Any], bytes | None]:
        """The decision (plain data, :func:`decide_data`) and, when recorded, its JSON (the
        stored payload)."""
        unavailable: dict[str, str] = {}
        once = functools.partial(
            self._decide_once,
            customer_id,
            now,
            campaign_id,
            channels,
            profile,
            state,
            decision_id,
            unavailable,
            explore,
            self.views.facts(customer_id, now),  # outside the reservation's transaction
        )
        if not record:
            found = self.histories.found(customer_id, now, state.snapshot.at)
            return once(self.histories.of(found), found, journey), None
        made: list[tuple[dict[str, Any], bytes]] = []

        def make(found: CustomerHistory) -> tuple[DecisionRecord, CapSpec | None]:
            data = once(self.histories.of(found), found, journey)
            encoded = encode_decision(data)
            made.append((data, encoded))
            channel = data["channel"]
            caps = caps_for(self.settings, channel) if data["revive"] and channel else None
            return _as_record(data, encoded.decode()), caps

        # History, decision and cap check run in one store transaction, so the caps are
        # counted on exactly what the engine saw; a refusal can only come from a store cap
        # the engine does not model, and then that channel is ruled out and we decide again.
        since = self.histories.since(now)
        for _ in range(len(CHANNELS) + 1):
            rec, reason = self.store.decide_and_reserve(
                customer_id, since, make, bought_since=state.snapshot.at
            )
            if reason is None:
                count_caps(made[-1][0])
                return made[-1]
            unavailable[str(rec.channel)] = f"{reason} (at reservation)"
        raise RuntimeError("could not reserve a contact after trying every channel")

    def decide_encoded(self, req: DecideRequest, state: State) -> tuple[dict[str, Any], bytes]:
        """The decision as plain data (:func:`decide_data`) and its JSON, the response body:
        a recorded decision's is its stored payload (encoded once, not validated again); a
        replayed or dispatched one goes through the :class:`Decision` model."""
        now = request_now(req.now, self.settings, state.snapshot.at)
        self.views.position(req.customer_id, state)  # 404 before anything else
        campaign_by_id(self.settings, req.campaign_id)  # UnknownCampaign -> 422
        if req.dispatch and req.dry_run:
            raise Rejected("dispatch needs a recorded decision: drop dry_run to dispatch")
        decision: Decision | None = None
        if req.decision_id is not None:
            existing = self.store.get_decision(req.decision_id)
            if existing is not None:
                if existing.customer_id != req.customer_id:
                    raise Conflict(
                        f"decision {req.decision_id!r} belongs to customer "
                        f"{existing.customer_id!r}, not {req.customer_id!r}"
                    )
                decision = Decision.model_validate(existing.payload)
        if decision is None:
            data, encoded = self.decide_and_record(
                req.customer_id,
                now,
                req.campaign_id,
                req.channels,
                req.profile,
                state,
                req.decision_id,
                record=not req.dry_run,
                explore=req.explore,
            )
            if not req.dispatch:
                return data, encoded or encode_decision(data)
            decision = Decision.model_validate(data)
        if req.dispatch:
            decision.dispatch = self.dispatcher.dispatch(decision, req.profile, now)
        return decision.model_dump(), decision.model_dump_json().encode()

    def decide_journey(
        self,
        customer_id: str,
        now: datetime,
        campaign_id: str,
        decision_id: str,
        ask: JourneyAsk,
        channels: Sequence[str] | None,
        state: State,
        record: bool = True,
    ) -> Decision:
        """A journey step's decision (:class:`JourneyAsk`), recorded under the caps with the
        step's own ``decision_id``: a step run again finds its decision and makes no other
        (``record=False``: a dry run, nothing stored)."""
        if record:
            existing = self.store.get_decision(decision_id)
            if existing is not None:
                return Decision.model_validate(existing.payload)
        try:
            data, _ = self.decide_and_record(
                customer_id, now, campaign_id, channels, None, state, decision_id, record, None, ask
            )
        except DuplicateDecision:  # recorded by another worker meanwhile: that one stands
            stored = self.store.get_decision(decision_id)
            assert stored is not None
            return Decision.model_validate(stored.payload)
        return Decision.model_validate(data)
