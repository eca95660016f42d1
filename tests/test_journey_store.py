"""Journey state in the store (core.store.journeys), on SQLite and PostgreSQL: enrolling is
idempotent and a window is taken once, claims never hand one enrolment to two workers, and
a step's run is written once however often it is attempted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from core.store import Enrolment, StepRun

T0 = datetime(2011, 6, 1, 10, tzinfo=UTC)
H = timedelta(hours=1)


def _enrolment(cid: str, key: str = "order-1", at: datetime = T0, journey: str = "j") -> Enrolment:
    return Enrolment(journey, cid, key, at, False, {"items": ["A"]}, due_at=at)


def _run(e: Enrolment, step: str = "s0", outcome: str = "waited", worker: str = "w1") -> StepRun:
    return StepRun(e.enrolment_id, step, e.journey_id, e.customer_id, T0, outcome, worker)


def test_a_window_is_enrolled_once_and_the_same_trigger_twice_is_one_enrolment(store):
    js = store.journeys
    assert js.intake_at() is None
    assert js.enrol(None, T0, [_enrolment("c1")], "w1") == 1
    assert js.intake_at() == T0
    # a second agent that read the same (now stale) watermark gets nothing in
    assert js.enrol(None, T0, [_enrolment("c2")], "w2") is None
    assert js.enrol(T0 - H, T0 + H, [_enrolment("c2")], "w2") is None
    # the next window; the same trigger again is a no-op, a new one is new
    assert js.enrol(T0, T0 + H, [_enrolment("c1"), _enrolment("c1", "order-2")], "w1") == 1
    assert js.intake_at() == T0 + H
    assert [e.trigger_key for e in js.enrolments("c1")] == ["order-1", "order-2"]
    assert js.last_entries("j", ["c1", "c9"]) == {"c1": T0}


def test_claims_lease_enrolments_to_one_worker_at_a_time(store):
    js = store.journeys
    js.enrol(None, T0, [_enrolment(f"c{i}") for i in range(10)], "w")
    first = js.claim(T0, "w1", 4, timedelta(minutes=5))
    second = js.claim(T0, "w2", 100, timedelta(minutes=5))
    assert len(first) == 4 and len(second) == 6
    assert not {e.customer_id for e in first} & {e.customer_id for e in second}
    assert js.claim(T0, "w3", 100, timedelta(minutes=5)) == []
    # a worker restarted under the same name releases its leases; a paused journey is left
    assert js.claim(T0, "w1", 100, timedelta(minutes=5)) == []
    assert sorted(e.customer_id for e in js.release("w1")) == sorted(e.customer_id for e in first)
    assert js.claim(T0, "w1", 100, timedelta(minutes=5), exclude=["j"]) == []
    assert len(js.claim(T0, "w1", 100, timedelta(minutes=5))) == 4
    # not due yet: not claimed
    assert js.claim(T0 - H, "w4", 100, timedelta(minutes=5)) == []


def test_concurrent_claims_never_share_an_enrolment(store):
    js = store.journeys
    js.enrol(None, T0, [_enrolment(f"c{i:03d}") for i in range(200)], "w")
    got: dict[str, list[str]] = {}

    def worker(name: str) -> None:
        mine = got.setdefault(name, [])
        while batch := js.claim(T0, name, 7, timedelta(minutes=5)):
            mine += [e.customer_id for e in batch]

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [c for ids in got.values() for c in ids]
    assert len(claimed) == 200 and len(set(claimed)) == 200


def test_a_step_runs_once_and_only_from_the_step_it_expected(store):
    js = store.journeys
    e = _enrolment("c1")
    js.enrol(None, T0, [e], "w")
    assert js.advance(e, _run(e), step=1, due_at=T0 + H)
    # the same step again (a crash after the commit, or a second agent): nothing changes
    assert not js.advance(e, _run(e, worker="w2"), step=1, due_at=T0 + 2 * H)
    # a stale copy of the enrolment (still at step 0) cannot move it either
    assert not js.advance(e, _run(e, "s1"), step=2, due_at=T0)
    (now,) = js.enrolments("c1")
    assert (now.step, now.due_at, now.status) == (1, T0 + H, "active")
    assert [(r.step_id, r.worker) for r in js.step_runs("c1")] == [("s0", "w1")]
    moved = Enrolment(**{**e.__dict__, "step": 1})
    assert js.advance(moved, _run(moved, "s1", "sent"), step=2, due_at=None, status="completed")
    (done,) = js.enrolments("c1")
    assert (done.status, done.due_at) == ("completed", None)
    counts = js.counts()["j"]
    assert (counts["enrolled"], counts["completed"], counts["steps"]["s1"]) == (1, 1, {"sent": 1})


def test_conversions_are_marked_within_the_goal_window_only(store):
    js = store.journeys
    js.enrol(None, T0, [_enrolment("c1"), _enrolment("c2")], "w")
    assert js.mark_converted("c1", T0 + 2 * timedelta(days=1), {"j": 3}) == 1
    assert js.mark_converted("c2", T0 + 5 * timedelta(days=1), {"j": 3}) == 0
    assert js.mark_converted("c1", T0 + timedelta(days=1), {"j": 3}) == 0  # first one counts
    assert js.counts()["j"]["converted"] == 1


def test_pauses_are_stored_and_undone(store):
    js = store.journeys
    js.set_paused("cart_recovery", True, "key k1")
    js.set_paused("win_back", True, "key k1")
    js.set_paused("win_back", False, "key k1")
    assert js.paused() == {"cart_recovery"}
