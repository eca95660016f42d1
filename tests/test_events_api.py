"""``/events`` contract (#14 findings 2 and 5): purchases carry an order id and a time, values
and times are bounded, and a re-delivered batch (events and consents) is stored once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import SqlContactStore
from service.runtime.recording import event_key
from service.schemas import EventIn

ORDER_TS = "2011-09-08T10:00:00+00:00"


@pytest.fixture(scope="module")
def api(service_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("events_api")
    env = service_env(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            yield SimpleNamespace(client=client, store=store)
            store.close()


def post(api, events=(), consents=(), status: int = 200) -> dict:
    r = api.client.post("/events", json={"events": list(events), "consents": list(consents)})
    assert r.status_code == status, r.text
    return r.json()


def purchase(cid: str = "P1", **kw) -> dict:
    return {"customer_id": cid, "event": "purchase", "order_id": "o-1", "ts": ORDER_TS} | kw


def _soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def _cases() -> list[tuple[dict, str, str]]:
    """(request body, field named, words in the message)."""
    ok = purchase("V0", order_id="o-ok")
    no_order = purchase()
    del no_order["order_id"]
    no_ts = purchase()
    del no_ts["ts"]
    opened = {"customer_id": "V1", "event": "opened", "channel": "email"}
    cart = {"customer_id": "V3", "event": "cart_abandoned", "item_ids": ["A"], "value": 9.5}
    return [
        ({"events": [ok, no_order]}, "events[1].order_id", "order id"),
        ({"events": [purchase(dedup_key="o-1")]}, "events[0].dedup_key", "order_id"),
        ({"events": [no_ts]}, "events[0].ts", "never stamped with the server clock"),
        ({"events": [opened | {"order_id": "o-9"}]}, "events[0].order_id", "only purchase"),
        ({"events": [purchase(value=-1.0)]}, "events[0].value", "[0, 1e+06]"),
        ({"events": [purchase(value=1_000_000.5)]}, "events[0].value", "max_purchase_value"),
        ({"events": [purchase(value=1e308)]}, "events[0].value", "outside [0, 1e+06]"),
        ({"events": [ok, purchase(ts=_soon(hours=1))]}, "events[1].ts", "future_tolerance"),
        ({"events": [opened | {"ts": _soon(days=400)}]}, "events[0].ts", "server clock"),
        ({"events": [cart | {"item_ids": []}]}, "events[0].item_ids", "needs its items"),
        ({"events": [cart | {"campaign_id": "lifecycle"}]}, "events[0].campaign_id", "cart"),
        ({"events": [cart | {"value": -3.0}]}, "events[0].value", "[0, 1e+06]"),
        ({"events": [cart, opened | {"item_ids": ["A"]}]}, "events[1]", "behaviour events"),
        (  # a bad message event after a behaviour event is named by its place in the request
            {"events": [cart, ok, opened | {"order_id": "o-9"}]},
            "events[2].order_id",
            "only purchase",
        ),
        (
            {
                "events": [ok],
                "consents": [
                    {"customer_id": "V2", "channel": "sms", "granted": True, "ts": _soon(hours=2)}
                ],
            },
            "consents[0].ts",
            "future_tolerance_seconds",
        ),
    ]


def test_bad_purchases_values_and_times_are_422_naming_the_field_and_store_nothing(api):
    for body, field, words in _cases():
        before = api.store.counts()
        r = api.client.post("/events", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text and words in r.text, (field, words, r.text)
        assert api.store.counts() == before, field


def test_a_purchase_within_the_clock_tolerance_and_bounds_is_stored(api):
    edge = purchase("W1", order_id="o-edge", ts=_soon(seconds=60), value=1_000_000.0)
    assert post(api, [edge, purchase("W1", order_id="o-zero", value=0.0)])["inserted"] == 2
    stored = api.store.events_between(
        datetime(2011, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC), customer_id="W1"
    )
    assert sorted(stored["dedup_key"]) == ["o-edge", "o-zero"]  # the order id is the key


def test_a_redelivered_batch_is_stored_once(api):
    events = [
        {"customer_id": "R1", "event": "sent", "channel": "email"},  # no ts, no dedup_key
        {"customer_id": "R1", "event": "opened", "channel": "email", "ts": ORDER_TS},
        purchase("R1", order_id="o-R1", value=30.0),
    ]
    consents = [
        {"customer_id": "R1", "channel": "sms", "granted": True},  # no ts
        {"customer_id": "R1", "channel": "email", "granted": False, "ts": ORDER_TS},
    ]
    first = post(api, events, consents)
    assert first == {
        "inserted": 3,
        "duplicates": 0,
        "consents": 2,
        "consent_duplicates": 0,
        "points_earned": 30,  # the purchase of 30.0 at 1 point per unit (policy loyalty)
    }
    before = api.store.counts()
    again = post(api, events, consents)
    assert again == {
        "inserted": 0,
        "duplicates": 3,
        "consents": 0,
        "consent_duplicates": 2,
        "points_earned": 0,  # the order earned once
    }
    # the same order re-posted with another value or time is still the same order
    moved = post(api, [purchase("R1", order_id="o-R1", value=99.0, ts="2011-09-09T10:00:00Z")])
    assert (moved["inserted"], moved["duplicates"]) == (0, 1)
    assert api.store.counts() == before
    # the same opened event at another time is another event
    later = events[1] | {"ts": "2011-09-08T11:00:00+00:00"}
    assert post(api, [later])["inserted"] == 1


def test_consents_without_ts_grant_revoke_grant_still_take_effect(api):
    def consent(granted: bool) -> dict:
        return {"customer_id": "G1", "channel": "sms", "granted": granted}

    for granted in (True, False, True):
        assert post(api, consents=[consent(granted)])["consents"] == 1
    assert post(api, consents=[consent(True)])["consent_duplicates"] == 1
    assert api.store.consents("G1") == {"sms": True}
    # in one batch too: each one changes the state the next one sees
    out = post(api, consents=[consent(False), consent(True), consent(False)])
    assert (out["consents"], out["consent_duplicates"]) == (3, 0)
    assert api.store.consents("G1") == {"sms": False}


def test_the_derived_key_is_the_content_and_the_callers_time_only():
    e = EventIn(customer_id="c", event="opened", channel="email")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert event_key(e, now) == event_key(e, now + timedelta(hours=5))  # request time ignored
    assert event_key(e, now).startswith("sha256:") and len(event_key(e, now)) == 7 + 64
    timed = EventIn(customer_id="c", event="opened", channel="email", ts=now)
    assert event_key(timed, now) != event_key(e, now)
    assert event_key(timed, now) != event_key(timed, now + timedelta(seconds=1))
    other = EventIn(customer_id="c", event="opened", channel="sms")
    assert event_key(other, now) != event_key(e, now)


def test_behaviour_events_are_stored_once_with_their_items(api):
    cart = {
        "customer_id": "B1",
        "event": "cart_abandoned",
        "ts": ORDER_TS,
        "item_ids": ["85123A", "22423"],
        "value": 31.9,
        "channel": "wechat",
    }
    browse = {"customer_id": "B1", "event": "browse", "ts": ORDER_TS, "item_ids": ["22423"]}
    out = post(api, [cart, browse, cart])
    assert (out["inserted"], out["duplicates"]) == (2, 1)
    assert post(api, [cart])["duplicates"] == 1  # re-delivered: the content is its key
    stored = api.store.behaviour.between(
        datetime(2011, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    )
    mine = [b for b in stored if b.customer_id == "B1"]
    assert [(b.event, b.items, b.value, b.channel) for b in mine] == [
        ("cart_abandoned", ("85123A", "22423"), 31.9, "wechat"),
        ("browse", ("22423",), None, None),
    ]


def test_a_returned_item_is_never_offered_again(api):
    """A return posted through /events joins the snapshot's returned items at once: the
    customer's recommendations and offers leave the item out."""
    ranked = api.client.post(
        "/decide_batch", json={"now": ORDER_TS, "limit": 50, "decisions": False}
    ).json()["rows"]
    ask = {"k": 5, "now": "2011-09-09T10:00:00+00:00"}  # a day after the return
    for row in ranked:
        cid = row["customer_id"]
        recommended = api.client.post("/recommend", json=ask | {"customer_id": cid}).json()
        if recommended["items"]:
            break
    item = recommended["items"][0]["item_id"]
    ret = {"customer_id": cid, "event": "return", "ts": ORDER_TS, "item_ids": [item]}
    assert post(api, [ret])["inserted"] == 1
    after = api.client.post("/recommend", json=ask | {"customer_id": cid}).json()
    assert item not in [i["item_id"] for i in after["items"]]
    assert after["excluded_returned"] >= 1
    view = api.client.post("/customer", json={"customer_id": cid, "now": ask["now"]}).json()
    assert item in view["returned_items_90d"]
