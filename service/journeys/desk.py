"""The journey endpoints' answers: live counts, a customer's history, pause, dry run."""

from __future__ import annotations

from dataclasses import dataclass

from core.store.journeys import empty_counts
from service.journeys.config import Journey, Journeys
from service.journeys.dry_run import dry_run
from service.runtime.errors import Rejected
from service.runtime.runtime import Runtime
from service.schemas import (
    JourneyCustomerResponse,
    JourneyDryRunRequest,
    JourneyDryRunResponse,
    JourneyEnrolmentOut,
    JourneyOut,
    JourneyPauseRequest,
    JourneyPauseResponse,
    JourneysResponse,
    JourneyStepCounts,
    JourneyStepRunOut,
)

__all__ = ["JourneyDesk"]


def _rate(converted: int, n: int) -> float | None:
    return round(converted / n, 4) if n else None


@dataclass
class JourneyDesk:
    """Answers ``/journeys``, ``/journeys/customer``, ``/journeys/pause`` and
    ``/journeys/dry_run`` from the configuration and the store."""

    runtime: Runtime
    journeys: Journeys

    def journey(self, journey_id: str) -> Journey:
        """The configured journey, or :class:`Rejected` (422) naming the known ones."""
        try:
            return self.journeys.by_id(journey_id)
        except KeyError:
            known = ", ".join(j.id for j in self.journeys.journeys)
            raise Rejected(f"journey_id: no journey {journey_id!r} (known: {known})") from None

    def overview(self) -> JourneysResponse:
        """Every journey with enrolments by status, conversions and runs per step."""
        store = self.runtime.store.journeys
        counts, paused = store.counts(), store.paused()
        out = []
        for j in self.journeys.journeys:
            c = counts.get(j.id) or empty_counts()
            treated = c["enrolled"] - c["holdout"]
            steps = [
                JourneyStepCounts(
                    step_id=s.id,
                    type=s.type,
                    outcomes=c["steps"].get(s.id, {}),
                    exited_here=c["exited_at_step"].get(i, 0),
                )
                for i, s in enumerate(j.steps)
            ]
            out.append(
                JourneyOut(
                    journey_id=j.id,
                    name=j.name,
                    enabled=j.enabled,
                    paused=j.id in paused,
                    priority=j.priority,
                    trigger=j.trigger.model_dump(mode="json"),
                    enrolled=c["enrolled"],
                    active=c["active"],
                    completed=c["completed"],
                    exited=c["exited"],
                    holdout=c["holdout"],
                    converted=c["converted"],
                    conversion_treated=_rate(c["converted_treated"], treated),
                    conversion_holdout=_rate(c["converted_holdout"], c["holdout"]),
                    steps=steps,
                )
            )
        return JourneysResponse(journeys=out)

    def customer(self, customer_id: str) -> JourneyCustomerResponse:
        """The customer's enrolments, oldest first, with every step run (404: unknown);
        ``customer_id`` may be any id or identifier of the customer."""
        customer_id = self.runtime.resolve([customer_id])[customer_id]
        store = self.runtime.store.journeys
        enrolments = store.enrolments(customer_id)
        if not enrolments:
            self.runtime.position(customer_id)  # UnknownCustomer -> 404
        runs = store.step_runs(customer_id)
        by_id = {j.id: j for j in self.journeys.journeys}
        out = []
        for e in enrolments:
            journey = by_id.get(e.journey_id)
            steps = journey.steps if journey is not None else []
            out.append(
                JourneyEnrolmentOut(
                    journey_id=e.journey_id,
                    trigger_key=e.trigger_key,
                    entered_at=e.entered_at,
                    holdout=e.holdout,
                    status=e.status,
                    next_step=steps[e.step].id
                    if e.status == "active" and e.step < len(steps)
                    else None,
                    due_at=e.due_at,
                    note=e.note,
                    converted_at=e.converted_at,
                    steps=[
                        JourneyStepRunOut(
                            step_id=r.step_id,
                            ran_at=r.ran_at,
                            outcome=r.outcome,
                            decision_id=r.decision_id,
                            channel=r.channel,
                            send_at=r.send_at,
                            detail=r.detail,
                        )
                        for r in runs
                        if r.enrolment_id == e.enrolment_id
                    ],
                )
            )
        return JourneyCustomerResponse(customer_id=customer_id, enrolments=out)

    def pause(self, req: JourneyPauseRequest, by: str) -> JourneyPauseResponse:
        """Pause or resume a configured journey (stored: every agent and replica sees it)."""
        self.journey(req.journey_id)
        self.runtime.store.journeys.set_paused(req.journey_id, req.paused, by)
        return JourneyPauseResponse(journey_id=req.journey_id, paused=req.paused)

    def dry_run(self, req: JourneyDryRunRequest) -> JourneyDryRunResponse:
        """:func:`service.journeys.dry_run.dry_run` for a configured journey."""
        return dry_run(self.runtime, self.journey(req.journey_id), req)
