"""The journey endpoints over HTTP with an agent ticking on the same store: live counts, a
customer's history, pause/resume (admin), dry run; and the triggers' time arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from auth import AUTH
from starlette.testclient import TestClient

from features.lifecycle import stage_after

T = datetime(2011, 9, 8, 10, 0, tzinfo=UTC)  # a week after the slice's snapshot


@pytest.fixture(scope="module")
def api(service_env, tmp_path_factory):
    """The service and, on the same store, a journey agent with its own runtime."""
    folder = tmp_path_factory.mktemp("journeys_api")
    env = service_env(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.config import load_settings
        from service.journeys import Agent, load_journeys
        from service.runtime import Runtime
        from service.service import RevivalService

        settings = load_settings()
        runtime = Runtime(settings)
        agent = Agent(runtime, load_journeys(settings=settings), worker="test-agent")
        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            yield SimpleNamespace(client=client, agent=agent, runtime=runtime)
        runtime.close()


def _customer(api) -> str:
    return next(iter(api.runtime.state.snapshot.positions))


def _journeys(api) -> dict[str, dict]:
    r = api.client.post("/journeys", json={})
    assert r.status_code == 200, r.text
    return {j["journey_id"]: j for j in r.json()["journeys"]}


def test_a_cart_enrols_the_customer_and_the_reminder_goes_out_after_the_wait(api):
    cid = _customer(api)
    before = _journeys(api)
    assert set(before) == {
        "cart_recovery",
        "post_purchase",
        "first_order_followup",
        "birthday",
        "win_back",
        "points_expiry",
    }
    cart = {"customer_id": cid, "event": "cart_abandoned", "ts": T.isoformat(),
            "item_ids": ["85123A"], "value": 40.0}  # fmt: skip
    assert api.client.post("/events", json={"events": [cart]}).status_code == 200
    first = api.agent.tick(T + timedelta(minutes=30))
    assert first.enrolled >= 1
    history = api.client.post("/journeys/customer", json={"customer_id": cid}).json()
    (cart_e,) = [e for e in history["enrolments"] if e["journey_id"] == "cart_recovery"]
    assert cart_e["next_step"] == "reminder" and [s["step_id"] for s in cart_e["steps"]] == [
        "first_wait"
    ]
    api.agent.tick(T + timedelta(hours=2))
    history = api.client.post("/journeys/customer", json={"customer_id": cid}).json()
    (cart_e,) = [e for e in history["enrolments"] if e["journey_id"] == "cart_recovery"]
    reminder = cart_e["steps"][1]
    assert reminder["step_id"] == "reminder"
    assert reminder["outcome"] in ("sent", "held_out", "no_contact")
    if reminder["outcome"] == "sent":
        decision = api.runtime.store.get_decision(reminder["decision_id"])
        assert decision.payload["intent"] == "cart_reminder"
        assert decision.payload["offer"]["type"] == "none"
    after = _journeys(api)["cart_recovery"]
    assert after["enrolled"] == before["cart_recovery"]["enrolled"] + 1
    steps = {s["step_id"]: s["outcomes"] for s in after["steps"]}
    assert steps["first_wait"] == {"waited": 1} and sum(steps["reminder"].values()) == 1


def test_a_paused_journey_runs_nothing_until_resumed(api):
    cid = list(api.runtime.state.snapshot.positions)[1]
    t = T + timedelta(days=3)
    cart = {"customer_id": cid, "event": "cart_abandoned", "ts": t.isoformat(),
            "item_ids": ["22423"], "value": 60.0}  # fmt: skip
    api.client.post("/events", json={"events": [cart]})
    api.agent.tick(t + timedelta(minutes=10))  # enrolled, waiting an hour
    made = api.client.post("/keys/create", json={"name": "reader", "scopes": ["read"]}).json()
    read_only = api.client.post(
        "/journeys/pause",
        json={"journey_id": "cart_recovery", "paused": True},
        headers={"Authorization": f"Bearer {made['key']}"},
    )
    assert read_only.status_code == 403
    r = api.client.post("/journeys/pause", json={"journey_id": "cart_recovery", "paused": True})
    assert r.json() == {"journey_id": "cart_recovery", "paused": True}
    assert _journeys(api)["cart_recovery"]["paused"] is True
    api.agent.tick(t + timedelta(hours=3))
    (e,) = [
        e
        for e in api.client.post("/journeys/customer", json={"customer_id": cid}).json()[
            "enrolments"
        ]
        if e["journey_id"] == "cart_recovery"
    ]
    assert e["next_step"] == "reminder"  # still waiting where it was
    api.client.post("/journeys/pause", json={"journey_id": "cart_recovery", "paused": False})
    api.agent.tick(t + timedelta(hours=3, minutes=5))
    (e,) = [
        e
        for e in api.client.post("/journeys/customer", json={"customer_id": cid}).json()[
            "enrolments"
        ]
        if e["journey_id"] == "cart_recovery"
    ]
    assert [s["step_id"] for s in e["steps"]][:2] == ["first_wait", "reminder"]


class _Died(BaseException):
    """The agent's process dying inside a provider call (not an error it could catch)."""


class _DyingProvider:
    """A provider whose first send never returns: the process dies mid-send."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, message):
        self.calls += 1
        raise _Died(message.decision_id)


def test_an_agent_restarted_after_dying_mid_send_sends_in_the_same_tick(api):
    """Died between opening the send attempt and its outcome: the restarted agent (same
    worker name) closes its dead attempt and sends at once, instead of waiting out the
    attempt's lease as if another worker were sending."""
    from service.journeys import Agent

    providers = api.runtime.dispatcher.providers
    kept, dying = dict(providers), _DyingProvider()
    t = T + timedelta(days=20)
    try:
        providers.update({channel: dying for channel in providers})
        # the first message any journey sends (a cart reminder, unless another is due first)
        for i, cid in enumerate(list(api.runtime.state.snapshot.positions)[10:40]):
            at = t + timedelta(days=2 * i)  # a local day of its own: no same-day conflict
            cart = {"customer_id": cid, "event": "cart_abandoned", "ts": at.isoformat(),
                    "item_ids": ["85123A"], "value": 40.0}  # fmt: skip
            api.client.post("/events", json={"events": [cart]})
            try:
                for now in (at + timedelta(minutes=10), at + timedelta(hours=2)):
                    api.agent.tick(now)
            except _Died as died:
                decision_id = str(died)
                break
        assert dying.calls == 1, "no message was sent in 30 carts' reminders"
    finally:
        providers.update(kept)
    store = api.runtime.store
    assert [a.status for a in store.dispatch_attempts(decision_id)] == ["sending"]
    restarted = Agent(api.runtime, api.agent.journeys, worker=api.agent.worker)
    restarted.tick(now)
    attempts = store.dispatch_attempts(decision_id)
    assert [(a.attempt, a.status) for a in attempts] == [(1, "sending"), (1, "failed"),
                                                         (2, "sending"), (2, "sent")]  # fmt: skip
    assert "restarted during the send" in attempts[1].error
    (run,) = [r for r in store.journeys.step_runs() if r.decision_id == decision_id]
    assert run.outcome == "sent" and run.ran_at == now


def test_dry_run_plans_messages_with_channel_and_cost_and_stores_nothing(api):
    before = api.runtime.store.counts()
    body = {
        "journey_id": "first_order_followup",
        "start": "2011-09-01T00:00:00Z",
        "end": "2011-10-01T00:00:00Z",
        "limit": 20,
    }
    r = api.client.post("/journeys/dry_run", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["entered"] >= out["sampled"] > 0
    assert out["messages"] and all(m["channel"] and m["cost"] >= 0 for m in out["messages"])
    assert all(body["start"][:10] <= m["at"][:10] for m in out["messages"])
    assert sum(c["messages"] for c in out["by_channel"].values()) == len(out["messages"])
    assert out["estimated_messages"] >= len(out["messages"])
    assert api.runtime.store.counts() == before
    bad = api.client.post("/journeys/dry_run", json=body | {"journey_id": "nope"})
    assert bad.status_code == 422 and "journey_id" in bad.text and "win_back" in bad.text
    back = api.client.post("/journeys/dry_run", json=body | {"end": "2011-08-01T00:00:00Z"})
    assert back.status_code == 422 and "end" in back.text


def test_unknown_customer_is_404(api):
    r = api.client.post("/journeys/customer", json={"customer_id": "nobody-at-all"})
    assert r.status_code == 404


def test_stage_after_moves_customers_on_by_the_recency_rules():
    """Hand-made customers: one with a 10-day cycle 30 days late (ratio 3: at_risk) becomes
    sleeping after 31 more days (ratio > 6) and lost once recency passes 180 days with a
    ratio over 12 (151 more days); a new one stays new."""
    f = pd.DataFrame(
        {
            "recency_days": [30.0, 5.0],
            "recency_ratio": [3.0, 0.5],
            "purchase_days": [5.0, 1.0],
            "tenure_days": [400.0, 5.0],
            "trend_90d": [0.0, 0.0],
            "orders_180d": [3.0, 1.0],
            "orders_365d": [4.0, 1.0],
            "monetary_all": [500.0, 20.0],
            "return_rate_value": [0.0, 0.0],
        },
        index=["late", "new"],
    )
    assert list(stage_after(f, 0)) == ["at_risk", "new"]
    assert list(stage_after(f, 29)) == ["at_risk", "new"]  # ratio 5.9
    assert list(stage_after(f, 31)) == ["sleeping", "new"]  # ratio 6.1
    assert stage_after(f, 149)[0] == "sleeping"  # ratio 17.9, but recency 179 days
    assert stage_after(f, 151)[0] == "lost"
    assert np.array_equal(stage_after(f, 0), stage_after(f, 0.0))


def _state(**features) -> SimpleNamespace:
    """A served state stand-in with the columns the time triggers read."""
    frame = pd.DataFrame(
        features, index=[f"c{i}" for i in range(len(next(iter(features.values()))))]
    )
    at = datetime(2011, 9, 1, tzinfo=UTC)
    return SimpleNamespace(
        snapshot=SimpleNamespace(at=at, features=frame),
        score_values=np.array(
            [[0.5, 0.3, d, 100.0] for d in features.get("expected", [10.0] * len(frame))]
        ),
        tier=np.array(["high"] * len(frame)),
    )


def test_fact_triggers_fire_once_at_the_local_time_of_their_day():
    from zoneinfo import ZoneInfo

    from service.journeys.config import FactTrigger, HolidayTrigger
    from service.journeys.triggers import _fact_entries, _holiday_entries

    london = ZoneInfo("Europe/London")
    # first orders 182 days before the snapshot, 100 days before, and 181.5 days before
    state = _state(tenure_days=[182.0, 100.0, 181.5], recency_days=[10.0, 10.0, 10.0])
    trig = FactTrigger(kind="fact", fact="first_order", days=182)
    day = (datetime(2011, 9, 1), datetime(2011, 9, 2))
    start, end = (datetime(d.year, d.month, d.day, tzinfo=london) for d in day)
    fired = _fact_entries("j", trig, state, london, start, end)
    # c0's first order + 182 d is the snapshot day; c2's is half a day later (the same local
    # day), both at 10:00 London; c1's is months away
    assert {e.customer_id for e in fired} == {"c0", "c2"}
    assert {e.at.astimezone(london).hour for e in fired} == {10}
    assert len({e.trigger_key for e in fired}) == 1  # the same occasion: one key
    later = _fact_entries("j", trig, state, london, end, end + (end - start))
    assert later == []
    # a holiday three days before 11 November, at 10:00 in Shanghai
    h = HolidayTrigger(kind="holiday", holiday="double11", month=11, day=11, days_before=3)
    window = (
        datetime(2011, 11, 8, tzinfo=UTC) - (end - start),
        datetime(2011, 11, 8, 12, tzinfo=UTC),
    )
    fired = _holiday_entries("j", h, state, *window)
    assert len(fired) == 3 and fired[0].at == datetime(2011, 11, 8, 2, tzinfo=UTC)
    assert fired[0].trigger_key == "holiday:double11:2011"
