"""The decision API over HTTP (BentoML's ASGI app in a TestClient), on champions trained on a
slice of the real log, with a real HTTP server on localhost as the message provider."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import SqlContactStore
from service.config import load_settings

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2011, 9, 6, 10, 0, tzinfo=LONDON)  # a Tuesday, days after the snapshot


# --------------------------------------------------------------------------- provider


class Provider:
    """A message gateway on localhost: records every request; ``down`` answers 503."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.down = False
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with provider.lock:
                    provider.requests.append(
                        {
                            "key": self.headers.get("Idempotency-Key"),
                            "body": json.loads(body),
                            "down": provider.down,
                        }
                    )
                    n = len(provider.requests)
                if provider.down:
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"gateway unavailable")
                    return
                out = json.dumps({"message_id": f"m-{n}"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_decision(self, decision_id: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["key"] == decision_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.close()


@pytest.fixture(scope="module")
def api(service_env, provider, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    env = service_env(folder) | {
        "REVIVAL_CHANNELS__EMAIL__PROVIDER_URL": provider.url,
        "REVIVAL_CHANNELS__EMAIL__PROVIDER_MAX_RETRIES": "2",
        "REVIVAL_CHANNELS__SMS__PROVIDER_URL": f"http://127.0.0.1:{free_port()}/sms",
        "REVIVAL_CHANNELS__SMS__PROVIDER_MAX_RETRIES": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            ranked = client.post(
                "/decide_batch",
                json={"decisions": False, "limit": 1000, "now": NOW.isoformat()},
            ).json()["rows"]
            yield SimpleNamespace(
                client=client,
                store=store,
                provider=provider,
                ranked=ranked,
                settings=load_settings(),
            )
            store.close()


class Customers:
    """Hands each test customers nobody else has used (the store is shared).

    Asleep customers are contacted near "now"; active and loyal ones get a reminder days
    ahead, so tests about "now" take asleep ones.
    """

    def __init__(self, rows: list[dict]):
        self.rows = list(rows)
        self.pool = [r["customer_id"] for r in rows]

    def take(self, api=None, usual_hours: range | None = None, asleep: bool = True) -> str:
        for row in self.rows:
            cid = row["customer_id"]
            if cid not in self.pool:
                continue
            if asleep and row["stage"] not in ("at_risk", "sleeping", "lost"):
                continue
            if usual_hours is not None:
                view = api.client.post("/customer", json={"customer_id": cid}).json()
                if int(view["features"]["usual_hour"]) not in usual_hours:
                    continue
            self.pool.remove(cid)
            return cid
        raise AssertionError("ran out of test customers")


@pytest.fixture(scope="module")
def customers(api):
    return Customers(api.ranked)


def decide(api, cid: str, now: datetime = NOW, **body) -> dict:
    r = api.client.post("/decide", json={"customer_id": cid, "now": now.isoformat(), **body})
    assert r.status_code == 200, r.text
    return r.json()


def post_events(api, events=(), consents=()) -> dict:
    r = api.client.post("/events", json={"events": list(events), "consents": list(consents)})
    assert r.status_code == 200, r.text
    return r.json()


def at_usual_hour(api, cid: str) -> datetime:
    hour = int(
        api.client.post("/customer", json={"customer_id": cid}).json()["features"]["usual_hour"]
    )
    return datetime(2011, 9, 6, hour, 5, tzinfo=LONDON)


# --------------------------------------------------------------------------- decide


def test_decide_returns_the_whole_decision_and_records_it(api, customers):
    cid = customers.take()
    d = decide(api, cid)
    for key in (
        "stage",
        "tier",
        "scores",
        "revive",
        "priority",
        "economics",
        "why_asleep",
        "offer",
        "channel",
        "send_at",
        "holdout",
        "message",
        "reasons",
        "model_versions",
        "decision_id",
    ):
        assert key in d
    assert set(d["model_versions"]) == {"churn", "next_purchase", "cross_sell"}
    assert d["revive"] and d["contact"] and d["channel"] == "email"
    assert datetime.fromisoformat(d["send_at"]) >= NOW
    stored = api.store.get_decision(d["decision_id"])
    assert stored is not None and stored.payload["priority"] == d["priority"]


def test_dry_run_writes_nothing(api, customers):
    before = api.store.counts()
    d = decide(api, customers.take(), dry_run=True)
    assert api.store.counts() == before
    assert api.store.get_decision(d["decision_id"]) is None


def test_frequency_caps_hold_across_requests(api, customers):
    cid = customers.take()
    post_events(api, consents=[{"customer_id": cid, "channel": "app_push", "granted": True}])
    channels = [decide(api, cid)["channel"] for _ in range(3)]
    assert channels == ["email", "app_push", "app_push"]  # 1 e-mail and 2 pushes a day
    refused = decide(api, cid)
    assert refused["channel"] is None and not refused["revive"] and not refused["contact"]
    assert "email:cap_channel_day" in refused["reasons"]["channel"]
    assert "app_push:cap_channel_day" in refused["reasons"]["channel"]
    # a week later the day caps are free again but the weekly global cap (4) still counts 3
    later = decide(api, cid, NOW + timedelta(days=2))
    assert later["channel"] == "email", later["reasons"]
    assert decide(api, cid, NOW + timedelta(days=3))["channel"] is None  # 5th within a week
    assert api.store.contact_counts(cid, NOW).global_week == 4


def test_quiet_hours_move_send_at(api, customers):
    cid = customers.take()
    usual = at_usual_hour(api, cid).replace(minute=0)
    quiet = api.settings.quiet_hours
    zone = next(
        z
        for z in ("Asia/Tokyo", "Asia/Shanghai", "Pacific/Auckland", "America/Los_Angeles")
        if quiet.contains(usual.astimezone(ZoneInfo(z)).time())
    )
    d = decide(api, cid, profile={"timezone": zone})
    local = datetime.fromisoformat(d["send_at"]).astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (quiet.end.hour, quiet.end.minute)
    assert not quiet.contains(local.time())
    assert any(r.startswith("quiet_hours") for r in d["reasons"]["when"])
    assert d["timezone"] == zone


def test_no_consent_no_channel(api, customers):
    cid = customers.take()
    d = decide(api, cid, channels=["sms"])
    assert d["channel"] is None and not d["revive"]
    assert "sms:no_consent" in d["reasons"]["channel"]
    post_events(api, consents=[{"customer_id": cid, "channel": "sms", "granted": True}])
    no_phone = decide(api, cid, channels=["sms"])
    assert "sms:no_phone" in no_phone["reasons"]["channel"]
    phone = {"identifiers": {"phone": "+447700900123"}}
    ok = decide(api, cid, channels=["sms"], profile={**phone, "locale": "zh-CN"})
    assert ok["channel"] == "sms" and ok["message"]["body"].endswith("回T退订")
    later = NOW + timedelta(days=30)  # past the caps the first SMS counts towards
    english = decide(api, cid, later, channels=["sms"], profile={**phone, "locale": "en"})
    assert english["message"]["body"].endswith("Reply STOP to opt out")


def test_unsubscribe_via_events_takes_effect_on_the_next_call(api, customers):
    cid = customers.take()
    assert decide(api, cid)["channel"] == "email"
    out = post_events(
        api,
        events=[
            {"customer_id": cid, "event": "unsubscribed", "channel": "email", "ts": NOW.isoformat()}
        ],
    )
    assert out["inserted"] == 1
    d = decide(api, cid, NOW + timedelta(days=8))
    assert d["channel"] is None and "email:consent_revoked" in d["reasons"]["channel"]
    view = api.client.post("/customer", json={"customer_id": cid}).json()
    assert view["consents"]["email"] is False


def test_a_purchase_event_changes_the_next_decision(api, customers):
    cid = customers.take()
    item = "85123A"
    post_events(
        api,
        events=[
            {
                "customer_id": cid,
                "event": "purchase",
                "order_id": f"o-{cid}-1",
                "ts": (NOW - timedelta(days=1)).isoformat(),
                "value": 42.0,
                "item_ids": [item],
            }
        ],
    )
    d = decide(api, cid)
    assert not d["revive"] and "purchased_since_snapshot" in d["reasons"]["who"]
    assert item not in [i["item_id"] for i in (d["offer"] or {}).get("items", [])]


def test_opens_and_sends_feed_the_channel_estimate(api, customers):
    cid = customers.take()
    before = {
        o["channel"]: o["engagement"] for o in decide(api, cid, dry_run=True)["channel_options"]
    }
    events = [
        {
            "customer_id": cid,
            "event": "sent",
            "channel": "email",
            "decision_id": f"x{i}",
            "ts": (NOW - timedelta(days=30 + i)).isoformat(),
        }
        for i in range(6)
    ]
    post_events(api, events=events)
    after = {
        o["channel"]: o["engagement"] for o in decide(api, cid, dry_run=True)["channel_options"]
    }
    assert after["email"] < before["email"]
    d = decide(api, cid, dry_run=True)
    assert (
        d["why_asleep"] is None
        or d["why_asleep"]["primary"] == "message_fatigue"
        or d["stage"]
        not in (
            "at_risk",
            "sleeping",
            "lost",
        )
    )


# --------------------------------------------------------------------------- dispatch


def test_dispatch_sends_once_per_decision_id(api, customers):
    cid = customers.take(api, usual_hours=range(9, 20))
    now = at_usual_hour(api, cid)
    d = decide(api, cid, now, dispatch=True)
    assert d["dispatch"]["status"] == "sent", d["dispatch"]
    assert d["dispatch"]["attempts"] == 1 and d["dispatch"]["provider_message_id"]
    sent = api.provider.for_decision(d["decision_id"])
    assert len(sent) == 1 and sent[0]["body"]["body"] == d["message"]["body"]
    assert sent[0]["body"]["customer_id"] == cid
    again = decide(api, cid, now, dispatch=True, decision_id=d["decision_id"])
    assert again["dispatch"]["status"] == "duplicate" and again["dispatch"]["attempts"] == 0
    assert again["priority"] == d["priority"]  # the stored decision, not a new one
    assert len(api.provider.for_decision(d["decision_id"])) == 1
    assert api.store.dispatch_success(d["decision_id"]) is not None


def test_provider_down_is_recorded_as_failed_and_retried(api, customers):
    cid = customers.take(api, usual_hours=range(9, 20))
    now = at_usual_hour(api, cid)
    api.provider.down = True
    try:
        d = decide(api, cid, now, dispatch=True)
    finally:
        api.provider.down = False
    failed = d["dispatch"]
    assert failed["status"] == "failed" and "503" in failed["error"]
    assert failed["attempts"] == 3  # provider_max_retries = 2
    assert len(api.provider.for_decision(d["decision_id"])) == 3
    assert [a.status for a in api.store.dispatch_attempts(d["decision_id"])] == [
        "sending",
        "failed",
    ]
    assert api.store.dispatch_success(d["decision_id"]) is None
    retry = decide(api, cid, now, dispatch=True, decision_id=d["decision_id"])
    assert retry["dispatch"]["status"] == "sent"
    third = decide(api, cid, now, dispatch=True, decision_id=d["decision_id"])
    assert third["dispatch"]["status"] == "duplicate"
    delivered = [r for r in api.provider.for_decision(d["decision_id"]) if not r["down"]]
    assert len(delivered) == 1


def test_unreachable_provider_fails_with_the_reason(api, customers):
    cid = customers.take(api, usual_hours=range(9, 20))
    post_events(api, consents=[{"customer_id": cid, "channel": "sms", "granted": True}])
    d = decide(
        api,
        cid,
        at_usual_hour(api, cid),
        channels=["sms"],
        profile={"identifiers": {"phone": "+447700900456"}},
        dispatch=True,
    )
    assert d["dispatch"]["status"] == "failed" and "connection" in d["dispatch"]["error"]
    assert d["dispatch"]["attempts"] == 2


def test_future_sends_are_scheduled_not_sent(api, customers):
    cid = customers.take()
    late = datetime(2011, 9, 6, 23, 30, tzinfo=LONDON)
    d = decide(api, cid, late, dispatch=True)
    assert d["dispatch"]["status"] == "scheduled"
    assert api.provider.for_decision(d["decision_id"]) == []


# --------------------------------------------------------------------------- batch


def test_decide_batch_ranks_cuts_and_pages(api):
    c = api.client
    now = NOW.isoformat()
    full = c.post("/decide_batch", json={"now": now, "limit": 1000, "decisions": False}).json()
    prios = [r["priority"] for r in full["rows"]]
    assert prios == sorted(prios, reverse=True) and full["eligible"] == full["selected"]
    assert [r["rank"] for r in full["rows"]] == list(range(1, len(prios) + 1))
    page1 = c.post("/decide_batch", json={"now": now, "limit": 5, "dry_run": None} | {}).status_code
    assert page1 == 422  # unknown key
    p1 = c.post("/decide_batch", json={"now": now, "limit": 5}).json()
    p2 = c.post("/decide_batch", json={"now": now, "limit": 5, "offset": p1["next_offset"]}).json()
    assert [r["customer_id"] for r in p1["rows"] + p2["rows"]] == [
        r["customer_id"] for r in full["rows"][:10]
    ]
    assert all(r["decision"]["customer_id"] == r["customer_id"] for r in p1["rows"])
    # cumulative_cost is rounded to 4 decimals (an incentive such as bonus points' value x p1
    # has more): allow the rounding, which is far below any row's contact cost
    budget = round(full["rows"][9]["cumulative_cost"] + 1e-4, 6)
    cut = c.post("/decide_batch", json={"now": now, "budget": budget, "decisions": False}).json()
    assert cut["selected"] == 10 and cut["selected_cost"] <= budget
    top = c.post("/decide_batch", json={"now": now, "max_customers": 3, "decisions": False}).json()
    assert top["selected"] == 3 and len(top["rows"]) == 3 and top["next_offset"] is None
    sleepy = c.post(
        "/decide_batch",
        json={"now": now, "stages": ["sleeping", "lost"], "tiers": ["high"], "decisions": False},
    ).json()
    assert all(r["stage"] in ("sleeping", "lost") and r["tier"] == "high" for r in sleepy["rows"])
    ids = [r["customer_id"] for r in full["rows"][:4]] + ["no-such-customer"]
    some = c.post(
        "/decide_batch", json={"now": now, "customer_ids": ids, "decisions": False}
    ).json()
    assert some["unknown_customer_ids"] == ["no-such-customer"] and some["candidates"] == 4


def test_decide_batch_records_only_when_asked(api):
    before = api.store.counts()["decisions"]
    later = (NOW + timedelta(days=20)).isoformat()
    api.client.post("/decide_batch", json={"now": later, "limit": 3})
    assert api.store.counts()["decisions"] == before
    api.client.post("/decide_batch", json={"now": later, "limit": 3, "record": True})
    assert api.store.counts()["decisions"] == before + 3


# --------------------------------------------------------------------------- other endpoints


def test_recommend_customer_reload_and_openapi(api, customers):
    cid = customers.pool[0]
    rec = api.client.post("/recommend", json={"customer_id": cid, "k": 5}).json()
    assert len(rec["items"]) == 5 and rec["model_version"] == "1"
    view = api.client.post("/customer", json={"customer_id": cid}).json()
    assert view["stage"] and "recency_days" in view["features"] and view["top_items"]
    assert set(view["scores"]) == {"p_churn", "p_buy_30d", "expected_days", "predicted_value"}
    reload = api.client.post("/reload", json={}).json()
    assert reload["model_versions"] == reload["previous_versions"] and not reload["changed"]
    assert api.client.get("/readyz").status_code == 200
    paths = api.client.get("/docs.json").json()["paths"]
    for p in ("/decide", "/decide_batch", "/recommend", "/customer", "/events", "/reload"):
        assert p in paths
    for p in ("/noop", "/noop_raw", "/noop_sync"):  # the benchmark's own service has them
        assert p not in paths


# --------------------------------------------------------------------------- bad input


def _bad_cases(cid: str) -> list[tuple[str, object, int, str]]:
    ten_mb = b'{"customer_id": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    return [
        ("/decide", {"customer_id": "no-such-customer"}, 404, "no-such-customer"),
        ("/decide", {"customer_id": 12345}, 422, "customer_id"),
        ("/decide", {"customer_id": cid, "channels": ["fax"]}, 422, "channels"),
        ("/decide", {"customer_id": cid, "campaign_id": "black-friday"}, 422, "black-friday"),
        ("/decide", {"customer_id": cid, "now": "yesterday"}, 422, "now"),
        ("/decide", {"customer_id": cid, "colour": "red"}, 422, "colour"),
        ("/decide", {"customer_id": cid, "profile": {"timezone": "Mars/Base"}}, 422, "timezone"),
        ("/decide", {"customer_id": cid, "dispatch": True, "dry_run": True}, 422, "dry_run"),
        ("/decide", b'{"customer_id": "13085",', 400, "json"),
        ("/decide", ten_mb, 413, "bytes"),
        ("/decide_batch", {"budget": -5}, 422, "budget"),
        ("/decide_batch", {"limit": "many"}, 422, "limit"),
        ("/decide_batch", {"channels": ["pigeon"]}, 422, "channels"),
        ("/decide_batch", {"stages": ["asleep"]}, 422, "stages"),
        ("/recommend", {"customer_id": "no-such-customer"}, 404, "no-such-customer"),
        ("/recommend", {"customer_id": cid, "k": 0}, 422, "k"),
        ("/customer", {"customer_id": "no-such-customer"}, 404, "no-such-customer"),
        ("/events", {"events": [{"customer_id": cid, "event": "exploded"}]}, 422, "event"),
        (
            "/events",
            {
                "events": [
                    {"customer_id": cid, "event": "opened", "channel": "email"},
                    {"customer_id": cid, "event": "opened", "item_ids": ["85123A"]},
                ]
            },
            422,
            "item_ids",
        ),
        (
            "/events",
            {"events": [{"customer_id": cid, "event": "purchase", "value": "NaN"}]},
            422,
            "value",
        ),
        (
            "/events",
            {"consents": [{"customer_id": cid, "channel": "fax", "granted": True}]},
            422,
            "channel",
        ),
    ]


def test_bad_input_gets_a_json_4xx_naming_the_problem_and_changes_nothing(api, customers):
    cid = customers.pool[0]
    decide(api, cid, dry_run=True)
    for path, body, status, named in _bad_cases(cid):
        before = api.store.counts()
        if isinstance(body, bytes):
            r = api.client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = api.client.post(path, json=body)
        assert r.status_code == status, (
            path,
            body if not isinstance(body, bytes) else body[:40],
            r.text[:300],
        )
        payload = r.json()
        assert r.headers["content-type"] == "application/problem+json", r.text[:300]
        assert payload["status"] == status and payload["title"] and payload["detail"]
        assert named.lower() in json.dumps(payload).lower(), (named, r.text[:300])
        assert "Traceback" not in r.text
        assert api.store.counts() == before, path


def test_a_decision_id_of_another_customer_is_a_conflict(api, customers):
    a, b = customers.take(), customers.take()
    d = decide(api, a)
    before = api.store.counts()
    r = api.client.post(
        "/decide", json={"customer_id": b, "now": NOW.isoformat(), "decision_id": d["decision_id"]}
    )
    assert r.status_code == 409 and r.json()["type"] == "urn:revival:problem:conflict"
    assert api.store.counts() == before


# --------------------------------------------------------------------------- the real log


@pytest.fixture(scope="module")
def real_runtime(champions, tmp_path_factory):
    """The runtime on the full real log (the champions were trained on a slice of it)."""
    from core.env import DEFAULT_DATA
    from service.runtime import Runtime

    _, uri = champions
    settings = load_settings().model_copy(
        update={
            "data_path": DEFAULT_DATA,
            "snapshot": "data",  # not the slice's stored snapshot: featurise the full log
            "mlflow_tracking_uri": uri,
            "store_url": f"sqlite:///{tmp_path_factory.mktemp('real') / 'store.db'}",
            "holdout_share": 0.0,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVIVAL_MLFLOW_TRACKING_URI", uri)
        runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.mark.integration
def test_no_returned_item_is_ever_offered_on_the_real_log(real_runtime):
    """Every customer of the full log with a return in the 90 days before the snapshot."""
    from service.schemas import BatchRequest, DecideRequest

    runtime = real_runtime
    snap = runtime.state.snapshot
    cut = snap.at.timestamp() - 90 * 86400
    returners = {
        c: {i for i, ts in items.items() if ts >= cut}
        for c, items in snap.returned.items()
        if any(ts >= cut for ts in items.values()) and c in snap.positions
    }
    assert len(returners) > 400  # 509 customers returned something in those 90 days
    offered = 0
    for cid, returned in returners.items():
        d = runtime.decide(DecideRequest(customer_id=cid, now=snap.at, dry_run=True))
        items = {i.item_id for i in d.offer.items} if d.offer else set()
        assert not items & returned, (cid, items & returned)
        rec = runtime.recommend(cid, 10, snap.at)
        assert not {i.item_id for i in rec.items} & returned, cid
        offered += bool(items)
    assert offered > 0.9 * len(returners)
    # who to revive among the sleeping high-value customers: a ranked list
    batch = runtime.decide_batch(
        BatchRequest(stages=["sleeping"], tiers=["high"], now=snap.at, limit=20)
    )
    prios = [r.priority for r in batch.rows]
    assert batch.candidates > 20 and prios == sorted(prios, reverse=True)
    assert all(r.decision.stage == "sleeping" for r in batch.rows)


@pytest.mark.integration
def test_prepared_rows_decide_exactly_like_the_feature_rows_on_the_real_log(real_runtime):
    """The per-snapshot precomputation (``Prepared``) is only a faster route to the same
    decision: over every customer of the real log, with and without message fatigue, with
    and without a recent contact, and after a purchase that changes the stage. The served
    encoding of the engine's plain data is the validated Decision's JSON, byte for byte."""
    from core.store import ContactRecord, Engagement
    from service.engine import ContactHistory, Decision, decide, decide_data, encode_decision

    runtime = real_runtime
    state = runtime.state
    snap = state.snapshot
    now = snap.at + timedelta(days=3)
    population = runtime.population()
    histories = {
        "none": ContactHistory(population=population),
        "tired": ContactHistory(
            engagement={"email": Engagement(sends=20, opens=0)}, population=population
        ),
        "contacted": ContactHistory(
            contacts=[ContactRecord("x", "email", now - timedelta(days=10), "decision")],
            population=population,
        ),
    }
    ids = [str(c) for c in state.inputs.index]
    seen_causes, seen_intents, overlaid = set(), set(), 0
    for k, cid in enumerate(ids):
        pos = runtime.position(cid, state)
        view = runtime.view(cid, None, state)
        if k % 7 == 0:  # a purchase after the snapshot: the stage may change
            view = dataclasses.replace(view, last_purchase_at=now - timedelta(days=1))
        label = ("none", "tired", "contacted")[k % 3]
        args = (
            view,
            runtime.model_scores(pos, state),
            runtime.candidates(cid, runtime.params.candidate_items, state),
            histories[label],
            runtime.settings,
            now,
        )
        kw = dict(
            item_names=state.models.item_names or snap.item_names,
            model_versions=state.models.versions,
            params=runtime.params,
            decision_id=f"d{k}",
        )
        data = decide_data(*args, **kw, prepared=state.prepared.row(pos))
        fast = Decision.model_validate(data)
        assert encode_decision(data) == fast.model_dump_json().encode(), cid
        slow = decide(*args, **kw)
        assert fast == slow, cid
        overlaid += view.stage != fast.stage
        seen_intents.add(fast.intent)
        if fast.why_asleep is not None:
            seen_causes.add(fast.why_asleep.primary)
    assert len(ids) > 5000 and overlaid > 100
    assert {"message_fatigue", "forgotten", "returns"} <= seen_causes
    assert len(seen_intents) >= 4


@pytest.mark.integration
def test_one_customer_economics_equal_the_vectorised_formula_to_the_last_bit(real_runtime):
    """A decision's economics in floats (``row_economics``) are the batch formula
    (``economics_matrix``) to the last bit: every customer of the real log, every primary cause and
    intent, engagement rates from zero to one."""
    import numpy as np

    from service.engine import CAUSES, INTENTS, RowEconomics, economics_matrix, row_economics

    runtime = real_runtime
    inputs, settings, params = runtime.state.inputs, runtime.settings, runtime.params
    reach = runtime.state.prepared.reach
    n = len(inputs)
    rng = np.random.default_rng(7)
    compared = 0
    for cause in range(len(CAUSES)):
        for intent in range(len(INTENTS)):
            q = rng.uniform(0.0, 1.0, (n, 4)) * rng.integers(0, 2, (n, 4))  # some zero rates
            mat = economics_matrix(
                inputs, settings, params, q, np.full(n, cause), np.full(n, intent), reach=reach
            )
            for pos in range(0, n, 3):
                fast = row_economics(
                    inputs.take(slice(pos, pos + 1)),
                    settings,
                    params,
                    q[pos].tolist(),
                    cause,
                    intent,
                    float(reach[pos]),
                )
                assert fast == RowEconomics.of(mat, pos), (pos, cause, intent)
                compared += 1
    assert compared > 50_000


def test_reload_switches_to_the_current_champion_without_a_restart(api, champions):
    import mlflow
    from mlflow.tracking import MlflowClient

    _, uri = champions
    client = MlflowClient(uri)
    copy = client.copy_model_version("models:/churn/1", "churn")
    client.set_registered_model_alias("churn", "champion", copy.version)
    try:
        out = api.client.post("/reload", json={}).json()
        assert out["changed"] and out["model_versions"]["churn"] == str(copy.version)
        assert out["previous_versions"]["churn"] == "1"
        d = api.client.post(
            "/decide", json={"customer_id": api.ranked[0]["customer_id"], "dry_run": True}
        ).json()
        assert d["model_versions"]["churn"] == str(copy.version)
    finally:
        client.set_registered_model_alias("churn", "champion", "1")
        api.client.post("/reload", json={})
        mlflow.set_tracking_uri(None)


def test_startup_without_champions_names_what_is_missing(champions, tmp_path):
    from service.runtime import ModelsUnavailable, Runtime

    data, _ = champions
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    settings = load_settings().model_copy(
        update={
            "data_path": data,
            "mlflow_tracking_uri": empty,
            "store_url": f"sqlite:///{tmp_path / 'store.db'}",
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVIVAL_MLFLOW_TRACKING_URI", empty)
        with pytest.raises(ModelsUnavailable, match=r"'churn'.*python -m training --if-missing"):
            Runtime(settings)
