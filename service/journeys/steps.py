"""What a journey step needs to know about the customer: exits, branch conditions, waits.

Plain functions over a :class:`Facts` read once per enrolment and step (the store's history
since the snapshot, the served view and scores), so the agent and the dry run judge alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.store import ContactStore, CustomerHistory, Enrolment
from service.engine import INTENT_OFFERS, Decision, JourneyAsk
from service.engine.policy import MONETARY
from service.engine.timing import expected_next_order
from service.journeys.config import Condition, DecideStep, Journey, SendStep, WaitStep
from service.runtime.state import State
from service.runtime.views import CustomerViews

__all__ = [
    "Facts",
    "ask_for",
    "exit_reason",
    "holds",
    "in_journey_holdout",
    "no_contact_reason",
    "step_channels",
    "step_decision_id",
    "wait_until",
]


@dataclass(frozen=True)
class Facts:
    """One customer at one moment, as a step reads them."""

    customer_id: str
    now: datetime
    stage: str
    tier: str
    p_buy_30d: float
    expected_next: datetime | None
    history: CustomerHistory

    @classmethod
    def read(
        cls,
        customer_id: str,
        now: datetime,
        store: ContactStore,
        views: CustomerViews,
        state: State,
        since: datetime,
    ) -> Facts:
        """The customer's facts at ``now`` (history read from ``since``)."""
        history = store.customer_history(customer_id, since, state.snapshot.at)
        pos = views.position(customer_id, state)
        view = views.view(customer_id, None, state, history.purchases, history.returns)
        scores = views.model_scores(pos, state)
        bought_since = any(ts > state.snapshot.at for ts, _ in history.purchases)
        return cls(
            customer_id=customer_id,
            now=now,
            stage="active" if bought_since else view.stage,
            tier=view.tier,
            p_buy_30d=float(scores.p_buy_30d),
            expected_next=expected_next_order(view, scores),
            history=history,
        )

    def purchased_since(self, t: datetime) -> datetime | None:
        """The first purchase after ``t`` (up to now), or None."""
        return next((ts for ts, _ in self.history.purchases if t < ts <= self.now), None)

    def returned_since(self, t: datetime) -> bool:
        return any(t < ts <= self.now for ts, _ in self.history.returns)


def exit_reason(journey: Journey, e: Enrolment, facts: Facts, store: ContactStore) -> str | None:
    """Why the enrolment leaves before its next step (the journey's ``exit_on``), or None."""
    for rule in journey.exit_on:
        if rule == "purchase" and (ts := facts.purchased_since(e.entered_at)) is not None:
            return f"exit:purchase at {ts.isoformat()}"
        if rule == "return" and facts.returned_since(e.entered_at):
            return "exit:return"
        if rule == "stage_change" and facts.stage != e.context.get("stage", facts.stage):
            return f"exit:stage {e.context.get('stage')}->{facts.stage}"
        if rule == "unsubscribe":
            before = store.consents(e.customer_id, as_of=e.entered_at)
            gone = [c for c, ok in facts.history.consents.items() if not ok and before.get(c, True)]
            if gone:
                return f"exit:unsubscribe {','.join(sorted(gone))}"
    return None


def holds(cond: Condition, e: Enrolment, facts: Facts, opened: bool) -> bool:
    """Whether every given part of ``cond`` holds (``opened``: a message of the enrolment
    was opened since entry)."""
    checks = [
        (cond.purchased_since_entry, lambda: facts.purchased_since(e.entered_at) is not None),
        (cond.opened_since_entry, lambda: opened),
    ]
    for want, test in checks:
        if want is not None and test() != want:
            return False
    if cond.stage_in is not None and facts.stage not in cond.stage_in:
        return False
    if cond.tier_in is not None and facts.tier not in cond.tier_in:
        return False
    if cond.p_buy_30d_above is not None and not facts.p_buy_30d > cond.p_buy_30d_above:
        return False
    return cond.p_buy_30d_below is None or facts.p_buy_30d < cond.p_buy_30d_below


def wait_until(
    step: WaitStep, e: Enrolment, start: datetime, facts: Facts, zone: ZoneInfo
) -> datetime:
    """When a wait that began at ``start`` ends: after its duration, or ``days`` from the
    customer fact (``delivery`` = the entry, e.g. the order) at ``at_local`` — never before
    ``start`` (a fact already past, or unknown, ends the wait at once)."""
    if step.duration is not None:
        return start + timedelta(seconds=step.duration.seconds)
    base = {"delivery": e.entered_at, "expected_next_order": facts.expected_next}.get(
        step.until_fact or ""
    )
    if base is None:  # birthday: no stored profile yet
        return start
    at = base + timedelta(days=step.days)
    if step.at_local is not None:
        at = _at_local(at, step.at_local, zone)
    return max(at, start)


def _at_local(t: datetime, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(t.astimezone(zone).date(), at, zone).astimezone(UTC)


def ask_for(journey: Journey, step: DecideStep | SendStep, e: Enrolment) -> JourneyAsk:
    """The engine's question for a message step: a ``send`` fixes its intent with no
    monetary offer; a ``decide`` may name intent, offers and the trigger's items."""
    if isinstance(step, SendStep):
        offers = tuple(o for o in INTENT_OFFERS[step.intent] if o not in MONETARY)
        return JourneyAsk(journey.id, intent=step.intent, offers=offers)
    items = tuple(e.context.get("items") or ()) if step.items == "trigger" else None
    offers = tuple(step.offers) if step.offers is not None else None
    return JourneyAsk(journey.id, intent=step.intent, offers=offers, items=items)


def step_channels(step: DecideStep | SendStep) -> list[str] | None:
    """The channels a message step allows: a ``send`` step's fixed channel, else all."""
    return [step.channel] if isinstance(step, SendStep) and step.channel else None


def step_decision_id(enrolment_id: str, step_id: str) -> str:
    """The decision id of a step: the same step of the same enrolment is one decision."""
    return "jrn-" + hashlib.sha1(f"{enrolment_id}:{step_id}".encode()).hexdigest()[:32]


def in_journey_holdout(enrolment_id: str, salt: str, share: float) -> bool:
    """The journey's own control group: a stable draw per enrolment."""
    digest = hashlib.sha256(f"{salt}:{enrolment_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def no_contact_reason(d: Decision) -> str:
    """Why a journey step's decision contacts nobody: the campaign blocking it, else each
    channel's reason (consent, caps, quiet hours...), the most common first."""
    if d.blocked_by is not None:
        return f"blackout:{d.blocked_by}"
    why = sorted({o.reason.split(":")[0] for o in d.channel_options if not o.eligible})
    return ("channels:" + ",".join(why))[:255] if why else "no channel"
