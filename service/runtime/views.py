"""What a decision reads of one customer: snapshot row, live purchases, scores, ALS items."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from service.engine import CustomerView, ModelScores, Profile
from service.runtime.errors import UnknownCustomer
from service.runtime.overlay import LivePurchases
from service.runtime.snapshot import FeatureRow
from service.runtime.state import State, candidate_key
from service.schemas import ProfileIn

__all__ = ["CustomerViews"]

_NO_PROFILE = Profile()  # immutable: shared by every request without a profile


class CustomerViews:
    """One customer as the decision engine sees it, from a :class:`State` and the purchases
    stored since its snapshot."""

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
    ) -> CustomerView:
        """Features, lifecycle, item history (with the ``purchases`` and ``returns`` since
        the snapshot, as read with the history) and the request's profile."""
        pos = self.position(customer_id, state)
        snap = state.snapshot
        row = FeatureRow(snap.column_index, snap.values[pos])
        bought = snap.bought.get(customer_id, {})
        live = LivePurchases.of(purchases)
        if live is not None:
            bought = live.merged(bought)
        prof = _NO_PROFILE
        if profile is not None:
            prof = Profile(
                locale=profile.locale,
                timezone=profile.timezone,
                name=profile.name,
                identifiers=dict(profile.identifiers),
                consents=dict(profile.consents),
            )
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
            regulars=snap.regulars.get(customer_id, ()),
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
        """Fill the ALS cache for many customers in one vectorised call (batch pages)."""
        missing = [c for c in customer_ids if candidate_key(c, k) not in state.candidates]
        if not missing:
            return
        found = state.models.recommender.recommend(missing, k=k, exclude_seen=True)
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
