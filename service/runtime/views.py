"""What a decision reads of one customer: snapshot row, live purchases, scores, ALS items,
and the profile — the request's over the stored one (:func:`combine_profile`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.store import PointsBalance, PointsLedger, ProfileStore, StoredProfile
from service.countries import country_defaults
from service.engine import CustomerView, ModelScores, Profile
from service.runtime.errors import UnknownCustomer
from service.runtime.overlay import LivePurchases
from service.runtime.snapshot import FeatureRow
from service.runtime.state import State, candidate_key
from service.schemas import ProfileIn

__all__ = ["CustomerViews", "StoredFacts", "combine_profile"]


@dataclass(frozen=True)
class StoredFacts:
    """What the store holds of a customer beside the contact history: the stored profile
    and the loyalty points at decision time. Read before the decision's store transaction
    (:meth:`CustomerViews.facts`), never inside it: a second connection taken while the
    reservation holds one can exhaust the pool under load."""

    profile: StoredProfile | None = None
    points: PointsBalance | None = None


def combine_profile(
    request: ProfileIn | None, stored: StoredProfile | None, country: str | None
) -> Profile:
    """The engine's profile. Each fact: the request's, else the stored profile's; locale
    and time zone then default from the country (the stored one, else the customer's usual
    country in the log; :mod:`service.countries`), and last from the settings (the engine).
    Identifiers: the request's over the stored ones (the newest of each kind). Consents are
    the request's; stored consents reach the engine through the contact history, where an
    explicit revoke, stored or requested, always wins (:func:`service.engine.consent_reason`).
    """
    req = request or ProfileIn()
    home = country_defaults((stored.country if stored else None) or country)
    ids = {k: v[0] for k, v in stored.identifiers.items() if v} if stored else {}
    return Profile(
        locale=req.locale or (stored and stored.locale) or (home and home.locale) or None,
        timezone=req.timezone or (stored and stored.timezone) or (home and home.timezone) or None,
        name=req.name or (stored and stored.name) or None,
        identifiers=ids | dict(req.identifiers),
        consents=dict(req.consents),
        country=(stored and stored.country) or country,
    )


class CustomerViews:
    """One customer as the decision engine sees it, from a :class:`State`, the purchases
    stored since its snapshot, the stored ``profiles``, and the loyalty ``points`` at decision
    time, counting as expiring what expires within ``window``."""

    def __init__(self, profiles: ProfileStore, points: PointsLedger, window: timedelta) -> None:
        self._profiles = profiles
        self._points = points
        self._window = window

    @staticmethod
    def position(customer_id: str, state: State) -> int:
        """The customer's row in the snapshot; :class:`UnknownCustomer` if absent."""
        pos = state.snapshot.positions.get(customer_id)
        if pos is None:
            raise UnknownCustomer(
                f"customer {customer_id!r} is not in the snapshot of {state.snapshot.cutoff.date()} "
                f"({len(state.snapshot.positions):,} customers)"
            )
        return pos

    def view(
        self,
        customer_id: str,
        profile: ProfileIn | None,
        state: State,
        purchases: Sequence[tuple[datetime, Sequence[str]]] = (),
        returns: Sequence[tuple[datetime, Sequence[str]]] = (),
        now: datetime | None = None,
        facts: StoredFacts | None = None,
    ) -> CustomerView:
        """Features, lifecycle, item history (with the ``purchases`` and ``returns`` since
        the snapshot, as read with the history), the profile (:func:`combine_profile`) and,
        given ``now``, the loyalty points then (``facts``: read already, else read here)."""
        pos = self.position(customer_id, state)
        snap = state.snapshot
        row = FeatureRow(snap.column_index, snap.values[pos])
        bought = snap.bought.get(customer_id, {})
        live = LivePurchases.of(purchases)
        if live is not None:
            bought = live.merged(bought)
        facts = facts if facts is not None else self.facts(customer_id, now)
        prof = combine_profile(profile, facts.profile, snap.countries.get(customer_id))
        points = facts.points
        return CustomerView(
            customer_id=customer_id,
            features=row,
            stage=str(state.stage[pos]),
            tier=str(state.tier[pos]),
            value_score=float(state.value_score[pos]),
            snapshot_at=snap.at,
            bought=bought,
            returned=_with_returns(snap.returned.get(customer_id, {}), returns),
            last_purchase_at=live.last_purchase if live is not None else None,
            profile=prof,
            regulars=snap.regulars(customer_id),
            points_balance=points.balance if points is not None else 0,
            points_expiring=points.expiring if points is not None else 0,
        )

    def facts(self, customer_id: str, now: datetime | None) -> StoredFacts:
        """The stored profile and, given ``now``, the points balance then."""
        return StoredFacts(
            profile=self._profiles.get(customer_id),
            points=None if now is None else self._points.balance(customer_id, now, self._window),
        )

    @staticmethod
    def model_scores(pos: int, state: State) -> ModelScores:
        """The champions' scores of the customer at ``pos`` (computed once per state)."""
        p_churn, p_buy, days, value = state.score_values[pos].tolist()
        tau = state.inputs.offer_uplift
        return ModelScores(
            p_churn=p_churn,
            p_buy_30d=p_buy,
            expected_days=days,
            predicted_value=value,
            offer_uplift=None if tau is None else tuple(tau[pos].tolist()),
            offer_model=state.offer_model,
        )

    @staticmethod
    def candidates(customer_id: str, k: int, state: State) -> list[str]:
        """ALS items the customer has not bought or returned (cached per model state)."""
        CustomerViews.prefetch_candidates([customer_id], k, state)
        return state.candidates[candidate_key(customer_id, k)]

    @staticmethod
    def prefetch_candidates(customer_ids: Sequence[str], k: int, state: State) -> None:
        """Fill the ALS cache for many customers in one vectorised call (batch pages); no
        items without a cross-sell model."""
        missing = [c for c in customer_ids if candidate_key(c, k) not in state.candidates]
        if not missing:
            return
        recommender = state.models.recommender
        found = (
            {} if recommender is None else recommender.recommend(missing, k=k, exclude_seen=True)
        )
        for c in missing:
            state.candidates[candidate_key(c, k)] = list(found.get(c, []))


def _with_returns(
    returned: dict[str, float], returns: Sequence[tuple[datetime, Sequence[str]]]
) -> dict[str, float]:
    """The snapshot's returned items (item -> last epoch second) with live returns added."""
    if not returns:
        return returned
    out = dict(returned)
    for ts, items in returns:
        for item in items:
            out[item] = max(out.get(item, ts.timestamp()), ts.timestamp())
    return out
