"""The serving state: a snapshot scored once by the champions (:func:`score_snapshot`).

A :class:`State` is swapped as one object on a reload, so a request keeps the state it
started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.lifecycle import LifecycleRules, assign_lifecycle
from service.config import Settings
from service.engine import (
    DEFAULT_PARAMS,
    NO_OFFER_MODEL,
    OfferModel,
    PolicyParams,
    Prepared,
    PriorityInputs,
    predicted_value,
)
from service.runtime.models import Models, offer_scores
from service.runtime.snapshot import Snapshot

__all__ = ["PRECOMPUTE_CANDIDATES_UP_TO", "State", "candidate_key", "score_snapshot"]

PRECOMPUTE_CANDIDATES_UP_TO = 200_000  # customers; above, ALS items are computed on demand


def candidate_key(customer_id: str, k: int) -> str:
    """The key of a customer's top ``k`` ALS items in :attr:`State.candidates`."""
    return f"{customer_id}\x1f{k}"


@dataclass
class State:
    """Snapshot × models: scores, lifecycle and the arrays the batch ranking reads."""

    snapshot: Snapshot
    models: Models
    scores: pd.DataFrame
    lifecycle: pd.DataFrame
    inputs: PriorityInputs
    prepared: Prepared  # per-customer static terms of a decision, from ``inputs``
    stage: np.ndarray
    tier: np.ndarray
    score_values: np.ndarray  # p_churn, p_buy_30d, expected_days, predicted_value
    value_score: np.ndarray
    candidates: dict[str, list[str]] = field(default_factory=dict)  # ALS cache
    holdout_draws: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    offer_model: OfferModel = NO_OFFER_MODEL  # does the offer-uplift champion choose offers?


def score_snapshot(
    snapshot: Snapshot, models: Models, settings: Settings, params: PolicyParams = DEFAULT_PARAMS
) -> State:
    """Score every customer once (churn, next purchase, ALS candidates); lifecycle tiers use
    historic and predicted value."""
    feats = snapshot.features
    p_churn = np.asarray(models.churn.predict(feats), float)
    nxt = models.next_purchase.predict(feats)
    pv = predicted_value(feats, p_churn)
    scores = pd.DataFrame(
        {
            "p_churn": p_churn,
            "p_buy_30d": nxt["p_buy_30d"].to_numpy(float),
            "expected_days": nxt["expected_days"].to_numpy(float),
            "predicted_value": pv,
        },
        index=feats.index,
    )
    rules = LifecycleRules(
        high_quantile=settings.value_tiers.high_quantile,
        low_quantile=settings.value_tiers.low_quantile,
    )
    lc = assign_lifecycle(feats, rules, predicted_value=pd.Series(pv, index=feats.index))
    frame = feats.assign(stage=lc["stage"].astype(str))
    offer_model, tau = offer_scores(snapshot, models, settings)
    k = params.candidate_items
    candidates: dict[str, list[str]] = {}
    if models.recommender is not None and len(feats) <= PRECOMPUTE_CANDIDATES_UP_TO:
        ids = [str(c) for c in feats.index]
        found = models.recommender.recommend(ids, k=k, exclude_seen=True)
        candidates = {candidate_key(c, k): list(found.get(c, [])) for c in ids}
    inputs = PriorityInputs.from_frames(frame, scores, offer_uplift=tau)
    return State(
        snapshot=snapshot,
        models=models,
        scores=scores,
        lifecycle=lc,
        inputs=inputs,
        prepared=Prepared.build(inputs, params),
        stage=lc["stage"].astype(str).to_numpy(),
        tier=lc["tier"].astype(str).to_numpy(),
        score_values=scores[["p_churn", "p_buy_30d", "expected_days", "predicted_value"]]
        .to_numpy(float)
        .copy(),
        value_score=lc["value_score"].to_numpy(float),
        candidates=candidates,
        offer_model=offer_model,
    )
