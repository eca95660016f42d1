"""Read-only answers about one customer: cross-sell items (``/recommend``) and the 360° view
(``/customer``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.store import ContactStore, DecisionRecord, StoredProfile
from service.config import Settings
from service.engine import CustomerView, PolicyParams
from service.runtime.clock import request_now
from service.runtime.history import ContactHistories
from service.runtime.state import State
from service.runtime.views import CustomerViews
from service.schemas import CustomerResponse, PointsOut, RecommendedItem, RecommendResponse

__all__ = ["CustomerLookups"]


def _latest(latest: DecisionRecord | None) -> dict[str, Any] | None:
    """The 360° view's summary of the customer's latest decision."""
    if latest is None:
        return None
    return {
        "decision_id": latest.decision_id,
        "ts": latest.ts,
        "campaign_id": latest.campaign_id,
        "revive": latest.revive,
        "holdout": latest.holdout,
        "channel": latest.channel,
        "send_at": latest.send_at,
        "offer_type": latest.offer_type,
        "priority": latest.priority,
    }


@dataclass
class CustomerLookups:
    """Answers ``/recommend`` and ``/customer`` from a state and the store."""

    settings: Settings
    params: PolicyParams
    store: ContactStore
    views: CustomerViews
    histories: ContactHistories

    def _filtered_items(
        self, view: CustomerView, items: Sequence[str], now: datetime, k: int
    ) -> tuple[list[str], int, int]:
        """The first ``k`` of ``items`` neither returned lately nor just bought, and how many
        of each were skipped."""
        now_s = now.timestamp()
        ret_cut = now_s - self.params.return_block_days * 86400.0
        rec_cut = now_s - self.params.recent_purchase_days * 86400.0
        blocked = {i for i, ts in view.returned.items() if ts >= ret_cut}
        recent = {i for i, (ts, _) in view.bought.items() if ts >= rec_cut}
        out: list[str] = []
        n_ret = n_rec = 0
        for item in items:
            if item in blocked:
                n_ret += 1
            elif item in recent:
                n_rec += 1
            elif item not in out:
                out.append(item)
                if len(out) == k:
                    break
        return out, n_ret, n_rec

    def recommend(
        self, customer_id: str, k: int, now: datetime | None, state: State
    ) -> RecommendResponse:
        """Cross-sell items for the customer (returned or just-bought items excluded)."""
        at = request_now(
            now, self.settings, state.snapshot.at, default=max(datetime.now(UTC), state.snapshot.at)
        )
        found = self.histories.found(customer_id, at, state.snapshot.at)
        view = self.views.view(customer_id, None, state, found.purchases, found.returns)
        pool = self.views.candidates(customer_id, k + self.params.candidate_items, state)
        items, n_ret, n_rec = self._filtered_items(view, pool, at, k)
        names = state.models.item_names or state.snapshot.item_names
        return RecommendResponse(
            customer_id=customer_id,
            items=[
                RecommendedItem(item_id=i, name=names.get(i), rank=r + 1)
                for r, i in enumerate(items)
            ],
            excluded_returned=n_ret,
            excluded_recent=n_rec,
            model_version=state.models.versions.get(self.settings.model_names.cross_sell),
        )

    def customer(self, customer_id: str, now: datetime | None, state: State) -> CustomerResponse:
        """The 360° view: features, stage, scores, contacts, consents, items, points."""
        at = request_now(now, self.settings, state.snapshot.at)
        pos = self.views.position(customer_id, state)
        found = self.histories.found(customer_id, at, state.snapshot.at)
        facts = self.views.facts(customer_id, at)  # the stored profile and points, read once
        view = self.views.view(customer_id, None, state, found.purchases, found.returns, at, facts)
        points = facts.points
        assert points is not None  # read at ``at``
        hist = self.histories.of(found)
        consents = {}
        for ch in self.settings.channels:
            stored = hist.consents.get(ch)
            consents[ch] = stored if stored is not None else ch in self.settings.implied_consent
        names = state.models.item_names or state.snapshot.item_names
        top = sorted(view.bought.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:10]
        cut = at.timestamp() - self.params.return_block_days * 86400.0
        return CustomerResponse(
            customer_id=customer_id,
            snapshot_at=state.snapshot.at,
            stage=view.stage,
            tier=view.tier,
            value_score=round(view.value_score, 2),
            features={
                k: (None if not math.isfinite(float(v)) else round(float(v), 6))
                for k, v in view.features.items()
            },
            scores={k: round(float(v), 6) for k, v in state.scores.iloc[pos].to_dict().items()},
            consents=consents,
            engagement={ch: e.__dict__ for ch, e in hist.engagement.items()},
            recent_contacts=[
                {
                    "ts": c.ts,
                    "channel": c.channel,
                    "source": c.source,
                    "decision_id": c.decision_id,
                    "campaign_id": c.campaign_id,
                }
                for c in hist.contacts
            ],
            latest_decision=_latest(self.store.latest_decision(customer_id)),
            top_items=[
                {
                    "item_id": i,
                    "name": names.get(i),
                    "purchases": n,
                    "last_bought": datetime.fromtimestamp(ts, UTC),
                }
                for i, (ts, n) in top
            ],
            returned_items_90d=sorted(i for i, ts in view.returned.items() if ts >= cut),
            live_purchase_at=view.last_purchase_at,
            model_versions=state.models.versions,
            points=PointsOut(
                balance=points.balance,
                expiring=points.expiring,
                expiring_by=points.expiring_by,
            ),
            profile=self._profile(customer_id, view, facts.profile),
        )

    def _profile(
        self, customer_id: str, view: CustomerView, stored: StoredProfile | None
    ) -> dict[str, Any]:
        """The ``stored`` profile as ``/customer`` shows it, with what messages use."""
        out: dict[str, Any] = {
            "locale": view.profile.locale or self.settings.default_locale,
            "timezone": view.profile.timezone or self.settings.default_timezone,
            "country": view.profile.country,
        }
        if stored is None:
            return out
        return out | {
            "members": list(stored.members),
            "identifiers": {k: list(v) for k, v in stored.identifiers.items()},
            "birthday": stored.birthday,
            "name": stored.name,
            "merges": [
                {k: m[k] for k in ("merge_id", "survivor", "absorbed", "kind", "at", "undone_at")}
                for m in self.store.profiles.merge_log(customer_id)
            ],
        }
