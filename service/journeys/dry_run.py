"""What a journey would send over a date range, before it is switched on (nothing stored).

The journey's triggers are found in ``[start, end)`` exactly as the agent's intake finds them
(stored events for behaviour triggers, the served snapshot for time triggers), narrowed to a
segment; for up to ``limit`` entrants the steps are walked on a simulated clock: a wait moves
the clock, a branch is judged on what is known at that moment (a dry run cannot see future
purchases or opens, so it follows the "did not buy, did not open" path — the most messages),
a message step asks the engine without recording (every contact rule but the caps of the
messages this dry run itself plans). Totals are scaled from the sample to every entrant.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from core.store import Enrolment
from service.journeys.config import BranchStep, ExitStep, Journey, WaitStep
from service.journeys.steps import (
    Facts,
    ask_for,
    holds,
    in_journey_holdout,
    no_contact_reason,
    step_channels,
    wait_until,
)
from service.journeys.triggers import entries
from service.runtime.runtime import Runtime
from service.schemas import (
    JourneyDryRunRequest,
    JourneyDryRunResponse,
    PlannedMessage,
)

__all__ = ["dry_run"]


def dry_run(runtime: Runtime, journey: Journey, req: JourneyDryRunRequest) -> JourneyDryRunResponse:
    """The messages ``journey`` would send for triggers in ``[req.start, req.end)``."""
    state, settings = runtime.state, runtime.settings
    fired = entries([journey], runtime.store, state, settings.zone, req.start, req.end)
    stages = set(req.stages or journey.segment_stages or [])
    tiers = set(req.tiers or journey.segment_tiers or [])
    kept = []
    for entry in fired:
        pos = state.snapshot.positions.get(entry.customer_id)
        if pos is None:
            continue
        if stages and str(state.stage[pos]) not in stages:
            continue
        if tiers and str(state.tier[pos]) not in tiers:
            continue
        kept.append((entry, pos))
    planned: list[PlannedMessage] = []
    refused: Counter[str] = Counter()
    holdout = 0
    for entry, pos in kept[: req.limit]:
        ctx = {**entry.context, "stage": str(state.stage[pos]), "tier": str(state.tier[pos])}
        e = Enrolment(journey.id, entry.customer_id, entry.trigger_key, entry.at, False, ctx)
        if in_journey_holdout(e.enrolment_id, settings.holdout_salt, journey.holdout_share):
            holdout += 1
            continue
        planned += _walk(runtime, journey, e, refused)
    sampled = min(len(kept), req.limit)
    scale = len(kept) / sampled if sampled else 0.0
    by_channel: dict[str, dict[str, float]] = {}
    for m in planned:
        row = by_channel.setdefault(m.channel, {"messages": 0, "cost": 0.0})
        row["messages"] += 1
        row["cost"] = round(row["cost"] + m.cost, 4)
    cost = sum(m.cost for m in planned)
    return JourneyDryRunResponse(
        journey_id=journey.id,
        start=req.start,
        end=req.end,
        entered=len(kept),
        sampled=sampled,
        holdout=holdout,
        messages=planned[: req.max_messages],
        by_channel=by_channel,
        no_contact=dict(refused),
        total_cost=round(cost, 2),
        estimated_total_cost=round(cost * scale, 2),
        estimated_messages=round(len(planned) * scale),
        currency=settings.currency,
    )


def _walk(
    runtime: Runtime, journey: Journey, e: Enrolment, refused: Counter[str]
) -> list[PlannedMessage]:
    """One entrant's messages on a simulated clock (see the module docstring)."""
    state, zone = runtime.state, runtime.settings.zone
    at: datetime = e.entered_at
    i, out = 0, []
    while i < len(journey.steps):
        step = journey.steps[i]
        facts = Facts.read(
            e.customer_id, at, runtime.store, runtime.views, state, runtime.histories.since(at)
        )
        i += 1
        if isinstance(step, WaitStep):
            at = wait_until(step, e, at, facts, zone)
        elif isinstance(step, ExitStep):
            break
        elif isinstance(step, BranchStep):
            target = step.then if holds(step.when, e, facts, opened=False) else step.otherwise
            if target == "exit":
                break
            i = [s.id for s in journey.steps].index(target)
        else:
            d = runtime.decider.decide_journey(
                e.customer_id,
                at,
                step.campaign,
                "dry-run",
                ask_for(journey, step, e),
                step_channels(step),
                state,
                record=False,
            )
            if not d.contact or d.channel is None:
                refused[no_contact_reason(d)] += 1
                continue
            econ = d.economics
            cost = (econ.contact_cost + econ.incentive_cost) if econ is not None else 0.0
            out.append(
                PlannedMessage(
                    customer_id=e.customer_id,
                    step_id=step.id,
                    at=d.send_at or at,
                    channel=d.channel,
                    intent=d.intent,
                    offer=d.offer.type if d.offer is not None else "none",
                    cost=round(cost, 4),
                )
            )
    return out
