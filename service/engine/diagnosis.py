"""Why asleep: the cause scores (returns, message fatigue, price sensitivity, need met,
forgotten), the primary cause, the message intent it leads to, and the evidence reported.
See docs/design.md, "Decision engine" (Why asleep)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from core.store.records import ContactRecord
from service.engine.channels import Posterior
from service.engine.inputs import ContactHistory, CustomerView, PriorityInputs, feature, finite_or
from service.engine.output import rounded
from service.engine.policy import (
    ASLEEP_STAGES,
    CAUSES,
    FIRST_ASLEEP,
    INTENTS,
    INTENTS_BY_CAUSE,
    STAGE_CODES,
    PolicyParams,
)

if TYPE_CHECKING:
    from service.engine.ranking import PreparedRow


def message_fatigue(
    history: ContactHistory, p: PolicyParams, posteriors: Mapping[str, Posterior]
) -> tuple[bool, dict[str, Any]]:
    """Many recent messages, (almost) none engaged: recency-weighted engaged messages below
    ``fatigue_open_ratio`` x the channels' mean prior times the weighted messages."""
    sends = math.fsum(post.trials for post in posteriors.values())
    engaged = math.fsum(post.successes for post in posteriors.values())
    priors = [post.prior for post in posteriors.values()]
    prior = math.fsum(priors) / len(priors) if priors else 0.0
    tired = sends >= p.fatigue_min_sends and engaged <= p.fatigue_open_ratio * prior * sends
    return bool(tired), {
        "sends": sum(e.sends for e in history.engagement.values()),
        "opens": sum(e.opens for e in history.engagement.values()),
        "weighted_messages": rounded(sends, 2),
        "weighted_engaged": rounded(engaged, 2),
    }


def cause_scores(
    inp: PriorityInputs, p: PolicyParams, fatigue: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cause scores (n × len(CAUSES)) from features (and fatigue flags), and the primary."""
    n = len(inp)
    with np.errstate(invalid="ignore"):
        recent_return = inp.days_since_return <= p.returns_recent_days
        rate = np.clip(inp.return_rate_value / (2 * p.returns_rate), 0.0, 1.0)
        returns = np.where(
            recent_return,
            0.6 + 0.4 * rate,
            np.where(inp.return_rate_value >= p.returns_rate, 0.4 + 0.4 * rate, 0.0),
        )
        price = np.where(
            inp.price_index <= p.price_index,
            0.5 + 0.4 * np.clip((p.price_index - inp.price_index) / 0.3, 0.0, 1.0),
            0.0,
        )
        need = np.where(
            (inp.top_family_share >= p.need_met_share) & (inp.purchase_days <= p.need_met_max_days),
            0.35 + 0.3 * finite_or(inp.top_family_share, 0.0),
            0.0,
        )
    fat = np.zeros(n) if fatigue is None else np.where(fatigue, 0.8, 0.0)
    forgotten = np.full(n, 0.3)
    scores = np.column_stack([returns, fat, price, need, forgotten])
    return scores, np.argmax(scores, axis=1)  # ties: the order of CAUSES


_INTENT_OF_CAUSE = np.array([INTENTS.index(INTENTS_BY_CAUSE[c]) for c in CAUSES])


def intents_of(inp: PriorityInputs, cause: np.ndarray) -> np.ndarray:
    asleep = inp.stage >= FIRST_ASLEEP
    by_cause = _INTENT_OF_CAUSE
    awake = np.where(
        inp.stage == STAGE_CODES.index("loyal"),
        INTENTS.index("value_reminder"),
        np.where(
            (inp.stage == STAGE_CODES.index("new")) | (inp.purchase_days < 2),
            INTENTS.index("cross_sell"),
            INTENTS.index("replenishment"),
        ),
    )
    return np.where(asleep, by_cause[cause], awake)


def cause_evidence(
    view: CustomerView,
    now: datetime,
    cause_row: list[float],
    fatigue_ev: dict[str, Any],
    past: list[ContactRecord],
    last_contact: datetime | None,
    p: PolicyParams,
) -> list[dict[str, Any]]:
    """The causes with a positive score, highest first, each with its evidence (the fields
    of :class:`CauseOut`)."""
    f = view.features
    cut = now.timestamp() - p.return_block_days * 86400.0
    returned_90 = sorted(i for i, ts in view.returned.items() if ts >= cut)
    evidence = {
        "returns": {
            "return_orders": feature(f, "return_orders"),
            "return_rate_value": rounded(feature(f, "return_rate_value")),
            "days_since_return": rounded(feature(f, "days_since_return"), 1),
            "items_returned_90d": returned_90[:10],
        },
        "message_fatigue": fatigue_ev,
        "price_sensitivity": {"price_index": rounded(feature(f, "price_index"))},
        "need_met": {
            "top_family_share": rounded(feature(f, "top_family_share")),
            "purchase_days": feature(f, "purchase_days"),
        },
        "forgotten": {
            "contacts_last_days": len(past),
            "days": p.forgotten_days,
            "last_contact": last_contact.isoformat() if last_contact else None,
        },
    }
    causes = [
        {"cause": c, "score": rounded(cause_row[i], 3), "evidence": evidence[c]}
        for i, c in enumerate(CAUSES)
        if cause_row[i] > 0
    ]
    causes.sort(key=lambda c: -c["score"])
    return causes


class Diagnosis(NamedTuple):
    """One customer's primary cause and the intent it leads to, as reported."""

    cause: int  # the primary cause, index into CAUSES
    intent: int  # index into INTENTS
    why: dict[str, Any] | None  # the fields of WhyAsleep; None when not asleep
    reasons: list[str]  # the decision's "why" reasons


def diagnose(
    view: CustomerView,
    stage: str,
    row: PreparedRow,
    history: ContactHistory,
    posteriors: Mapping[str, Posterior],
    now: datetime,
    p: PolicyParams,
) -> Diagnosis:
    """Why the customer sleeps: the cause scores of their row (with message fatigue as the
    history shows it; "forgotten" only without a contact in ``forgotten_days``), the primary
    cause and its intent, with the evidence for asleep stages."""
    tired, fatigue_ev = message_fatigue(history, p, posteriors)
    cause_row = list(row.cause_scores[int(tired)])
    lookback = now - timedelta(days=p.forgotten_days)
    past = [c for c in history.contacts if lookback <= c.ts <= now]
    last_contact = max((c.ts for c in past), default=None)
    if last_contact is not None:
        cause_row[CAUSES.index("forgotten")] = 0.0
    primary = cause_row.index(max(cause_row))  # ties: the order of CAUSES, like np.argmax
    intent = row.intent_by_cause[primary]
    if stage not in ASLEEP_STAGES:
        return Diagnosis(primary, intent, None, [f"{stage}: not asleep"])
    causes = cause_evidence(view, now, cause_row, fatigue_ev, past, last_contact, p)
    reasons = [f"{stage}: primary cause {CAUSES[primary]}"]
    reasons += [f"{c['cause']}:{c['score']}" for c in causes]
    return Diagnosis(primary, intent, {"primary": CAUSES[primary], "causes": causes}, reasons)
