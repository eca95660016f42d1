"""A simulated campaign against the live service (BentoML's ASGI app in a TestClient, champions
trained on a slice of the real log): decisions through ``/decide_batch`` with a 50% hold-out,
outcomes with a known injected lift through ``/events``, the report through ``/report``.
Plus the ``/events`` and ``/report`` bad-input acceptance: rejected with a message naming the
event and field, or de-duplicated, and nothing stored changes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import SqlContactStore
from service.stats import wilson
from tools.campaign_sim import simulate_campaign

pytestmark = pytest.mark.integration

LONDON = ZoneInfo("Europe/London")
# Rounds 15 days apart (> the 14-day window), all decided before any outcome is posted.
LIFT_ROUNDS = [datetime(2011, 9, 6, 10, tzinfo=LONDON) + timedelta(days=15 * i) for i in range(4)]
NULL_ROUNDS = [datetime(2011, 11, 14, 10, tzinfo=LONDON) + timedelta(days=15 * i) for i in range(4)]
SPLIT = "2011-11-01T00:00:00+00:00"  # lift rounds before, null rounds after
P0, LIFT, MEAN_VALUE = 0.2, 0.10, 300.0


@pytest.fixture(scope="module")
def live(service_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    env = service_env(folder) | {"REVIVAL_HOLDOUT_SHARE": "0.5"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            common = {"p0": P0, "mean_value": MEAN_VALUE, "window_days": 14.0}
            lift = simulate_campaign(client, "lifecycle", LIFT_ROUNDS, lift=LIFT, seed=1, **common)
            null = simulate_campaign(client, "lifecycle", NULL_ROUNDS, lift=0.0, seed=2, **common)
            yield SimpleNamespace(client=client, store=store, lift=lift, null=null)
            store.close()


def report(live, **body) -> dict:
    r = live.client.post("/report", json={"campaign_id": "lifecycle", **body})
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_the_report_recovers_the_injected_lift(live):
    sim = live.lift
    assert sim.treated >= 800 and sim.holdout >= 800, sim  # enough for a tight interval
    r = report(live, end=SPLIT)
    o = r["overall"]
    assert (o["treated"]["customers"], o["holdout"]["customers"]) == (sim.treated, sim.holdout)
    assert r["attributed_orders"] == sim.purchases
    conv = o["conversion_lift"]
    assert conv["low"] <= LIFT <= conv["high"], conv
    assert conv["low"] > 0 and o["significant"]
    assert o["statement"].endswith("— significant at 95%"), o["statement"]
    rpc = o["revenue_per_customer_lift"]
    assert rpc["low"] <= sim.rpc_lift <= rpc["high"] and rpc["low"] > 0, rpc
    assert o["incremental_revenue"]["estimate"] == pytest.approx(
        rpc["estimate"] * sim.treated, rel=1e-9
    )
    for arm, p in (("treated", P0 + LIFT), ("holdout", P0)):
        a = o[arm]
        iv = wilson(a["converted"], a["customers"])
        assert iv.low <= p <= iv.high, (arm, a["conversion"])
    [email] = o["treated"]["channels"]
    opened = wilson(email["opened"], email["contacted"])
    assert email["sent"] == email["contacted"] and opened.low <= 0.3 <= opened.high
    assert r["gain"][-1]["incremental_conversions"] > 0
    [touch] = r["channel_attribution"]  # the simulation contacts by e-mail only
    assert touch["channel"] == "email" and touch["markov"] == touch["last_touch"] > 0
    assert sum(s["treated"]["customers"] for s in r["segments"]) == sim.treated


def test_a_null_campaign_is_not_significant(live):
    sim = live.null
    r = report(live, start=SPLIT)
    o = r["overall"]
    assert (o["treated"]["customers"], o["holdout"]["customers"]) == (sim.treated, sim.holdout)
    conv = o["conversion_lift"]
    assert conv["low"] <= 0 <= conv["high"], conv
    assert not o["significant"] and o["statement"].endswith("— not significant at 95%")
    rpc = o["revenue_per_customer_lift"]
    assert rpc["low"] <= 0 <= rpc["high"], rpc


# --------------------------------------------------------------------------- bad input


def _rejected(live, path: str, body: dict, status: int, *named: str) -> dict:
    before = live.store.counts()
    r = live.client.post(path, json=body)
    assert r.status_code == status, (body, r.text[:400])
    payload = r.json()
    assert payload["status"] == status and "Traceback" not in r.text
    text = json.dumps(payload, ensure_ascii=False).lower()
    for word in named:
        assert word.lower() in text, (word, r.text[:400])
    assert live.store.counts() == before, body
    return payload


def test_bad_report_requests_are_named_4xx(live):
    p = _rejected(
        live, "/report", {"campaign_id": "black-friday"}, 422, "black-friday", "lifecycle"
    )
    assert p["type"] == "urn:revival:problem:unknown_campaign"
    body = {"campaign_id": "lifecycle", "start": "2011-10-01", "end": "2011-09-01"}
    _rejected(live, "/report", body, 422, "end", "after start")
    _rejected(live, "/report", {"campaign_id": "lifecycle", "start": "yesterday"}, 422, "start")
    _rejected(live, "/report", {"campaign": "lifecycle"}, 422, "campaign")


def _stored_decisions(live):
    d = live.store.decisions_between(
        datetime(2011, 9, 1, tzinfo=LONDON), datetime(2011, 11, 1, tzinfo=LONDON), "lifecycle"
    )
    treated = d[d["revive"] & ~d["holdout"]]
    late = treated[treated["send_at"] - treated["ts"] >= timedelta(hours=1)]
    holdout = d[d["revive"] & d["holdout"]]
    assert len(late) and len(holdout)
    return late.iloc[0], holdout.iloc[0]


def test_bad_events_are_rejected_with_the_event_and_field_and_store_nothing(live):
    t, h = _stored_decisions(live)
    cid, did = t["customer_id"], t["decision_id"]
    decided, send_at = t["ts"], t["send_at"]

    def ev(**kw) -> dict:
        return {"customer_id": cid, "event": "opened", "channel": "email", **kw}

    iso = lambda x: x.isoformat()  # noqa: E731
    after = iso(send_at + timedelta(hours=1))
    purchase = {
        "customer_id": cid,
        "event": "purchase",
        "order_id": "o-e2e-1",
        "value": 9.5,
        "ts": after,
    }
    cases = [
        ([ev(campaign_id="black-friday", ts=after)], "events[0].campaign_id", "black-friday"),
        (
            [purchase, ev(decision_id=did, ts=after, customer_id=h["customer_id"])],
            "events[1].decision_id",
            f"is for customer '{cid}'",
        ),
        ([ev(decision_id=did, ts=after, campaign_id="double11")], "events[0].campaign_id"),
        ([ev(decision_id=did, ts=iso(decided - timedelta(hours=1)))], "events[0].ts", "order"),
        (  # before the stored `sent` (the simulation posted it at send_at)
            [purchase, ev(decision_id=did, ts=iso(send_at - timedelta(minutes=30)))],
            "events[1].ts",
            "was sent",
        ),
        (  # before a `sent` later in the same batch (a decision sent elsewhere)
            [
                {**ev(decision_id="ext-1", ts=iso(send_at + timedelta(hours=3))), "event": "sent"},
                ev(decision_id="ext-1", ts=iso(send_at + timedelta(hours=2)), event="clicked"),
            ],
            "events[1].ts",
            "ext-1",
        ),
        (
            [
                {
                    "customer_id": h["customer_id"],
                    "event": "opened",
                    "decision_id": h["decision_id"],
                    "ts": iso(h["ts"] + timedelta(hours=1)),
                }
            ],
            "events[0].decision_id",
            "hold-out",
        ),
    ]
    for events, *named in cases:
        _rejected(live, "/events", {"events": events}, 422, *named)


def test_repeated_events_are_deduplicated_and_counted(live):
    t, _ = _stored_decisions(live)
    cid, did = t["customer_id"], t["decision_id"]
    ts = (t["send_at"] + timedelta(days=2)).isoformat()
    opened = {
        "customer_id": cid,
        "event": "opened",
        "channel": "email",
        "decision_id": did,
        "ts": ts,
    }
    order = {"customer_id": cid, "event": "purchase", "value": 12.0, "ts": ts, "order_id": "o-77"}
    before = live.store.counts()["events"]
    r = live.client.post(
        "/events", json={"events": [opened, opened, order, {**order, "value": 13.0}, opened]}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["inserted"], r.json()["duplicates"]) == (2, 3)
    again = live.client.post("/events", json={"events": [order]}).json()
    assert (again["inserted"], again["duplicates"]) == (0, 1)
    assert live.store.counts()["events"] == before + 2
