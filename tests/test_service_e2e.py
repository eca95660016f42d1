"""End to end: ``bentoml serve`` in a subprocess on a free port, called with httpx."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tools.serve import Server

pytestmark = pytest.mark.e2e

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))


@pytest.fixture(scope="module")
def server(service_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    env = service_env(folder) | {"REVIVAL_HOLDOUT_SHARE": "0.3"}
    srv = Server(env, folder / "serve.log").start()
    yield srv
    srv.stop()


def ranked(srv: Server) -> list[dict]:
    body = {"decisions": False, "limit": 1000, "now": NOW.isoformat()}
    return srv.post("/decide_batch", body).json()["rows"]


def test_served_decide_errors_health_and_metrics(server):
    rows = ranked(server)
    assert rows and [r["rank"] for r in rows[:3]] == [1, 2, 3]
    cid = rows[0]["customer_id"]
    r = server.post("/decide", {"customer_id": cid, "now": NOW.isoformat()})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["customer_id"] == cid and d["revive"]
    assert set(d["model_versions"]) == {"churn", "next_purchase", "cross_sell"}
    missing = server.post("/decide", {"customer_id": "no-such-customer"})
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:revival:problem:unknown_customer"
    bad = httpx.post(
        f"{server.url}/decide",
        content=b"{oops",
        headers={"content-type": "application/json", **server.auth},
        timeout=30,
    )
    assert bad.status_code == 400 and "json" in bad.text.lower()
    assert bad.headers["content-type"] == "application/problem+json"
    anonymous = httpx.post(f"{server.url}/decide", json={"customer_id": cid}, timeout=30)
    assert anonymous.status_code == 401
    assert httpx.get(f"{server.url}/livez", timeout=10).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "revival_decisions_total" in metrics
    assert 'endpoint="/decide"' in metrics


def test_served_caps_and_unsubscribe_change_the_next_decision(server):
    asleep = (r["customer_id"] for r in ranked(server) if r["stage"] in ("sleeping", "lost"))
    treated = []
    for cid in asleep:  # customers the hold-out (share 0.3 here) leaves in treatment
        body = {"customer_id": cid, "now": NOW.isoformat(), "dry_run": True}
        if not server.post("/decide", body).json()["holdout"]:
            treated.append(cid)
        if len(treated) == 2:
            break
    a, b = treated[:2]
    first = server.post("/decide", {"customer_id": a, "now": NOW.isoformat()}).json()
    second = server.post("/decide", {"customer_id": a, "now": NOW.isoformat()}).json()
    assert first["channel"] == "email" and second["channel"] is None
    assert "email:cap_channel_day" in second["reasons"]["channel"]
    assert server.post("/decide", {"customer_id": b, "now": NOW.isoformat()}).json()["channel"]
    event = {"customer_id": b, "event": "unsubscribed", "ts": NOW.isoformat()}
    assert server.post("/events", {"events": [event]}).json()["inserted"] == 1
    later = (NOW + timedelta(days=10)).isoformat()
    after = server.post("/decide", {"customer_id": b, "now": later}).json()
    assert after["channel"] is None and "email:consent_revoked" in after["reasons"]["channel"]


def test_holdout_is_stable_across_restarts(server):
    ids = [r["customer_id"] for r in ranked(server)[:100]]

    def flags() -> dict[str, bool]:
        out = {}
        for cid in ids:
            body = {"customer_id": cid, "now": NOW.isoformat(), "dry_run": True}
            out[cid] = server.post("/decide", body).json()["holdout"]
        return out

    before = flags()
    assert 0.15 < sum(before.values()) / len(before) < 0.45  # share 0.3
    server.stop()
    server.start()
    assert flags() == before
