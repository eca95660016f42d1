"""The journey agent: on every tick, enrol the triggered customers and run the due steps.

A tick at ``now`` (the wall clock when served, a simulated clock in a replay):

1. **Intake** of ``[watermark, now)``: the triggers that fired (:mod:`.triggers`), kept when
   the journey is enabled and not paused, the customer is in the served snapshot and the
   journey's segment, and the re-entry rule allows; each enrolment draws the journey's
   hold-out. Stored with the watermark's move in one transaction (compare-and-set), so two
   agents never enrol one window twice. Purchases of the window mark conversions.
2. **Steps**: due enrolments are claimed in batches (:meth:`JourneyState.claim`), run in
   journey-priority order, each until it waits or ends. Before every step the exit rules are
   checked. A message step asks the engine (:meth:`Decider.decide_journey`, every contact
   rule applies) under the step's own decision id and dispatches through the channel's
   provider; a decision due later (quiet hours) keeps the enrolment on its step until then.
   When another journey of equal or higher priority already messaged the customer that local
   day, the step waits for the next day or is skipped, by the journey's ``on_conflict``, and
   the reason is recorded.

Each step's run is written once (:mod:`core.store.journeys`), so a tick killed midway and run
again, or two agents ticking at once, run no step twice. An agent restarted under its name
takes back its enrolments and closes the send attempts it died in (see :meth:`Agent._take_back`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

from core.store import ContactStore, Enrolment, StepRun
from service.channels import abandon_open_attempt
from service.journeys.config import (
    BranchStep,
    DecideStep,
    ExitStep,
    Journey,
    Journeys,
    SendStep,
    WaitStep,
)
from service.journeys.steps import (
    Facts,
    ask_for,
    exit_reason,
    holds,
    in_journey_holdout,
    no_contact_reason,
    step_channels,
    step_decision_id,
    wait_until,
)
from service.journeys.triggers import Entry, entries
from service.runtime.errors import Conflict
from service.runtime.runtime import Runtime
from service.runtime.state import State

__all__ = ["Agent", "TickReport"]

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did."""

    at: datetime
    enrolled: int = 0
    triggered: int = 0
    steps: int = 0
    messages: int = 0
    exited: int = 0
    deferred: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Agent:
    """Runs the journeys of ``journeys`` over the runtime's store, models and snapshot."""

    def __init__(
        self,
        runtime: Runtime,
        journeys: Journeys,
        worker: str | None = None,
        batch: int = 200,
        lease: timedelta = timedelta(minutes=2),
        first_window: timedelta = timedelta(hours=1),
    ):
        self.runtime = runtime
        self.journeys = journeys
        self.worker = worker or _worker()
        self.batch = batch
        self.lease = lease
        self.first_window = first_window
        self._by_id = {j.id: j for j in journeys.journeys}
        self._zone = runtime.settings.zone
        self._take_back()

    def _take_back(self) -> None:
        """A restart under our name: take back the enrolments we held, and close the send
        attempts we opened for them and never finished (we died mid-send), so their steps
        retry at once, as an uninterrupted run would have sent them."""
        released = self._store.journeys.release(self.worker)
        if not released:
            return
        closed = 0
        for e in released:
            journey = self._by_id.get(e.journey_id)
            if journey is None or e.step >= len(journey.steps):
                continue
            step = journey.steps[e.step]
            if isinstance(step, DecideStep | SendStep):
                reason = f"agent {self.worker} restarted during the send"
                did = step_decision_id(e.enrolment_id, step.id)
                closed += abandon_open_attempt(self._store, did, reason)
        log.info(
            "agent %s: took back %d enrolments it held before (%d open sends closed)",
            self.worker,
            len(released),
            closed,
        )

    @property
    def _store(self) -> ContactStore:
        return self.runtime.store

    def tick(self, now: datetime) -> TickReport:
        """One tick at ``now``: intake, then every step due by ``now``."""
        report = TickReport(at=now)
        state = self.runtime.state
        paused = self._store.journeys.paused()
        self.intake(now, state, paused, report)
        self.run_due(now, state, paused, report)
        return report

    # ------------------------------------------------------------------ intake

    def intake(self, now: datetime, state: State, paused: set[str], report: TickReport) -> None:
        """Enrol the window ``[watermark, now)`` (see the module docstring)."""
        store = self._store.journeys
        since = store.intake_at()
        start = since if since is not None else now - self.first_window
        if start >= now:
            return
        live = [j for j in self.journeys.journeys if j.enabled and j.id not in paused]
        fired = entries(live, self._store, state, self._zone, start, now)
        report.triggered = len(fired)
        enrol = self._admitted(fired, state, report)
        n = store.enrol(since, now, enrol, self.worker)
        if n is None:  # another agent took this window
            return
        report.enrolled = n
        goals = {j.id: j.goal.within_days for j in self.journeys.journeys}
        bought = self._store.events_between(start, now, event="purchase")
        for r in bought.itertuples(index=False):
            store.mark_converted(r.customer_id, r.ts.to_pydatetime(), goals)

    def _admitted(
        self, fired: Sequence[Entry], state: State, report: TickReport
    ) -> list[Enrolment]:
        """The entries the snapshot, segment and re-entry rules let in, as enrolments."""
        settings = self.runtime.settings
        out: list[Enrolment] = []
        by_journey: dict[str, list[Entry]] = {}
        for entry in fired:
            by_journey.setdefault(entry.journey_id, []).append(entry)
        for journey_id, group in by_journey.items():
            journey = self._by_id[journey_id]
            last = self._store.journeys.last_entries(journey_id, [e.customer_id for e in group])
            for entry in group:
                pos = state.snapshot.positions.get(entry.customer_id)
                why = self._refusal(journey, entry, pos, state, last.get(entry.customer_id))
                if why is not None:
                    report.skipped_reasons[why] = report.skipped_reasons.get(why, 0) + 1
                    continue
                last[entry.customer_id] = entry.at
                ctx = {
                    **entry.context,
                    "stage": str(state.stage[pos]),
                    "tier": str(state.tier[pos]),
                }
                e = Enrolment(
                    journey_id, entry.customer_id, entry.trigger_key, entry.at, False, ctx
                )
                holdout = in_journey_holdout(
                    e.enrolment_id, settings.holdout_salt, journey.holdout_share
                )
                out.append(replace(e, holdout=holdout, due_at=entry.at))
        return out

    @staticmethod
    def _refusal(
        journey: Journey, entry: Entry, pos: int | None, state: State, last: datetime | None
    ) -> str | None:
        if pos is None:
            return "unknown_customer"
        if journey.segment_stages and str(state.stage[pos]) not in journey.segment_stages:
            return f"{journey.id}:segment_stage"
        if journey.segment_tiers and str(state.tier[pos]) not in journey.segment_tiers:
            return f"{journey.id}:segment_tier"
        if last is not None:
            if journey.reentry.mode == "once":
                return f"{journey.id}:reentry_once"
            if entry.at - last < timedelta(days=journey.reentry.days or 0):
                return f"{journey.id}:reentry_{journey.reentry.days:g}d"
        return None

    # ------------------------------------------------------------------ steps

    def run_due(self, now: datetime, state: State, paused: set[str], report: TickReport) -> None:
        """Claim and run every enrolment due by ``now`` (batches until none is left)."""
        store = self._store.journeys
        while True:
            claimed = store.claim(now, self.worker, self.batch, self.lease, exclude=paused)
            if not claimed:
                return
            claimed.sort(key=lambda e: (-self._by_id[e.journey_id].priority, e.due_at))
            for e in claimed:
                if e.journey_id in self._by_id:
                    self._run(e, now, state, report)

    def _run(self, e: Enrolment, now: datetime, state: State, report: TickReport) -> None:
        """Run the enrolment's steps until one waits past ``now`` or the journey ends."""
        journey = self._by_id[e.journey_id]
        store = self._store.journeys
        while e.status == "active" and e.due_at is not None and e.due_at <= now:
            facts = Facts.read(
                e.customer_id,
                now,
                self._store,
                self.runtime.views,
                state,
                self.runtime.histories.since(now),
            )
            reason = exit_reason(journey, e, facts, self._store)
            if reason is not None:
                store.advance(e, None, step=e.step, due_at=None, status="exited", note=reason)
                report.exited += 1
                return
            moved = self._step(journey, e, facts, now, report)
            if moved is None:
                return
            e = moved

    def _step(
        self, journey: Journey, e: Enrolment, facts: Facts, now: datetime, report: TickReport
    ) -> Enrolment | None:
        """Run the enrolment's current step; the enrolment as it then is, or None when the
        step did not move it (another agent did, or it waits for a later time)."""
        step = journey.steps[e.step]
        due = e.due_at or now
        nxt, status, note = e.step + 1, "active", None
        run = StepRun(
            e.enrolment_id, step.id, journey.id, e.customer_id, now, "waited", self.worker
        )
        if isinstance(step, WaitStep):
            due = wait_until(step, e, due, facts, self._zone)
            run = replace(run, detail=f"until {due.isoformat()}")
        elif isinstance(step, BranchStep):
            opened = bool(step.when.opened_since_entry is not None and self._opened(e, now))
            target = step.then if holds(step.when, e, facts, opened) else step.otherwise
            run = replace(run, outcome="branched", detail=f"-> {target}")
            if target == "exit":
                status, note = "completed", f"branch {step.id} -> exit"
            else:
                nxt = [s.id for s in journey.steps].index(target)
        elif isinstance(step, ExitStep):
            run = replace(run, outcome="branched", detail="exit")
            status, note = "completed", "exit step"
        else:
            made = self._message(journey, step, e, now, report)
            if made is None:
                return None
            run = made
        if status == "active" and nxt >= len(journey.steps):
            status, note = "completed", "last step"
        report.steps += 1
        goes_on = status == "active" and due <= now  # the next step runs now: keep the lease
        moved = self._store.journeys.advance(
            e, run, step=nxt, due_at=due, status=status, note=note, keep_lease=goes_on
        )
        if not moved:
            return None
        return replace(e, step=nxt, due_at=due, status=status, note=note)

    def _message(
        self,
        journey: Journey,
        step: DecideStep | SendStep,
        e: Enrolment,
        now: datetime,
        report: TickReport,
    ) -> StepRun | None:
        """A message step's run, or None when it waits (a conflict, a later send time)."""
        run = StepRun(
            e.enrolment_id, step.id, journey.id, e.customer_id, now, "held_out", self.worker
        )
        if e.holdout:
            return replace(run, detail=f"journey hold-out ({journey.holdout_share:g})")
        winner = self._conflict(journey, e, now)
        if winner is not None:
            if journey.on_conflict == "skip":
                return replace(run, outcome="skipped", detail=f"priority: {winner}")
            tomorrow = self._next_local_day(now)
            self._store.journeys.advance(
                e, None, step=e.step, due_at=tomorrow, note=f"waits for {tomorrow.date()}: {winner}"
            )
            report.deferred += 1
            return None
        decision = self.runtime.decider.decide_journey(
            e.customer_id,
            now,
            step.campaign,
            step_decision_id(e.enrolment_id, step.id),
            ask_for(journey, step, e),
            step_channels(step),
            self.runtime.state,
        )
        run = replace(run, decision_id=decision.decision_id, channel=decision.channel)
        if not decision.contact:
            return replace(run, outcome="no_contact", detail=no_contact_reason(decision))
        try:
            out = self.runtime.dispatcher.dispatch(decision, None, now, clock=lambda: now)
        except Conflict as exc:  # a dispatch of this decision is under way elsewhere
            retry = now + timedelta(minutes=5)
            self._store.journeys.advance(e, None, step=e.step, due_at=retry, note=str(exc)[:255])
            report.deferred += 1
            return None
        if out.status == "scheduled" and decision.send_at is not None:
            self._store.journeys.advance(
                e, None, step=e.step, due_at=decision.send_at, note=f"scheduled: {out.error}"[:255]
            )
            report.deferred += 1
            return None
        report.messages += 1
        detail = out.status if not out.error else f"{out.status}: {out.error}"
        return replace(run, outcome="sent", send_at=decision.send_at, detail=detail[:255])

    def _conflict(self, journey: Journey, e: Enrolment, now: datetime) -> str | None:
        """Another journey of equal or higher priority that messaged the customer today."""
        start = datetime.combine(now.astimezone(self._zone).date(), time(0), self._zone)
        sent = self._store.journeys.sent_on(e.customer_id, start, start + timedelta(days=1))
        for run in sent:
            other = self._by_id.get(run.journey_id)
            if (
                run.journey_id != journey.id
                and other is not None
                and other.priority >= journey.priority
            ):
                return f"{other.id} (priority {other.priority}) messaged today"
        return None

    def _next_local_day(self, now: datetime) -> datetime:
        day = now.astimezone(self._zone).date() + timedelta(days=1)
        return datetime.combine(day, time(9, 0), self._zone)

    def _opened(self, e: Enrolment, now: datetime) -> bool:
        opened = self._store.events_between(
            e.entered_at, now, customer_id=e.customer_id, event="opened"
        )
        return not opened.empty
