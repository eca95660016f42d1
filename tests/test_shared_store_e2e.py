"""Two ``bentoml serve`` processes sharing one contact store enforce one set of frequency caps.

16 concurrent clients ask both servers, over and over, to contact the same few customers at a
handful of fixed times spread over a week; e-mail and SMS are both consented and reachable,
so the per-channel day/week caps and the global weekly cap all bind. The assertions read the
store's tables with plain SQL, independently of the store's own counting: no rolling 24 h /
7 day window holds more contacts than the caps allow, every refused request names a cap, and
every customer was contacted at least once. A key revoked on one server stops working on the
other within ``api.key_cache_seconds``. Runs on PostgreSQL (the shared store for
replicas) and on one SQLite file.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from core.store import as_utc
from service.config import load_settings
from tools.serve import Server

pytestmark = pytest.mark.e2e

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))
NOWS = [NOW + timedelta(hours=13 * k) for k in range(13)]  # 6.5 days, all hours of the day
CLIENTS = 16
REQUESTS_PER_CLIENT = 24
N_CUSTOMERS = 4
PROFILE = {"identifiers": {"phone": "+440000000000"}, "consents": {"sms": True, "email": True}}
DAY, WEEK = timedelta(days=1), timedelta(days=7)
KEY_CACHE_S = 2.0


def _caps() -> tuple[dict[str, tuple[int, int]], int]:
    """(per channel: (per day, per week)), global per week — the policy the servers run."""
    settings = load_settings()
    per_channel = {
        ch: (settings.channel(ch).per_day_cap, settings.channel(ch).per_week_cap)
        for ch in ("email", "sms")
    }
    return per_channel, settings.global_weekly_cap


def _most_in_window(times: list[datetime], window: timedelta) -> int:
    """The most contacts any half-open window ``[t, t + window)`` holds (t a contact time)."""
    times = sorted(times)
    return max((sum(t <= u < t + window for u in times) for t in times), default=0)


def _stored_contacts(url: str) -> list[tuple[str, str, datetime, str]]:
    """(customer, channel, contact time, decision id) of every contact decision, by SQL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            n_events = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            assert n_events == 0  # nothing sent: the contacts are the decisions below
            rows = conn.exec_driver_sql(
                "SELECT customer_id, channel, COALESCE(send_at, ts), decision_id "
                "FROM decisions WHERE revive AND NOT holdout AND channel IS NOT NULL"
            ).all()
    finally:
        engine.dispose()
    out = []
    for cid, ch, t, did in rows:
        if isinstance(t, str):  # SQLite hands back the stored UTC text
            t = datetime.fromisoformat(t)
        out.append((cid, ch, as_utc(t), did))
    return out


def _pick_customers(srv: Server) -> list[str]:
    """Customers the service would contact now (revive, with a channel), from its ranking."""
    body = {"decisions": False, "limit": 200, "now": NOW.isoformat()}
    ranked = srv.post("/decide_batch", body).json()["rows"]
    chosen = []
    for row in ranked:
        body = {
            "customer_id": row["customer_id"],
            "now": NOW.isoformat(),
            "profile": PROFILE,
            "dry_run": True,
        }
        d = srv.post("/decide", body).json()
        if d["revive"] and d["channel"] is not None:
            chosen.append(row["customer_id"])
        if len(chosen) == N_CUSTOMERS:
            return chosen
    raise AssertionError(f"fewer than {N_CUSTOMERS} contactable customers in {len(ranked)}")


def _hammer(servers: list[Server], customers: list[str]) -> list[tuple[str, int, dict]]:
    """CLIENTS threads, each alternating servers, fire recorded /decide requests at once."""
    jobs = list(itertools.product(customers, NOWS))
    barrier = threading.Barrier(CLIENTS)

    def client(k: int) -> list[tuple[str, int, dict]]:
        rng = random.Random(k)
        out = []
        with httpx.Client(timeout=120) as http:
            barrier.wait(timeout=60)
            for j in range(REQUESTS_PER_CLIENT):
                cid, now = rng.choice(jobs)
                srv = servers[(k + j) % len(servers)]
                body = {"customer_id": cid, "now": now.isoformat(), "profile": PROFILE}
                r = http.post(f"{srv.url}/decide", json=body, headers=srv.auth)
                out.append((cid, r.status_code, r.json()))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [row for rows in pool.map(client, range(CLIENTS)) for row in rows]


def _revocation_reaches(servers: list[Server], customer: str) -> float:
    """Create a key on one server, use it on the other, revoke it on the first: seconds until
    the second refuses it (its verified-key cache expires after api.key_cache_seconds)."""
    a, b = servers
    created = a.post("/keys/create", {"name": "crm", "scopes": ["read"]}).json()
    key = {"Authorization": f"Bearer {created['key']}"}
    body = {"customer_id": customer}
    assert httpx.post(f"{b.url}/customer", json=body, headers=key, timeout=60).status_code == 200
    assert a.post("/keys/revoke", {"key_id": created["key_id"]}).json()["revoked_at"]
    revoked = time.monotonic()
    while httpx.post(f"{b.url}/customer", json=body, headers=key, timeout=60).status_code == 200:
        assert time.monotonic() - revoked < 30, "the revoked key still works after 30 s"
        time.sleep(0.05)
    return time.monotonic() - revoked


def _run_shared_store(store_url: str, service_env, folder) -> dict[str, float]:
    env = service_env(folder) | {
        "REVIVAL_STORE_URL": store_url,
        "REVIVAL_API__KEY_CACHE_SECONDS": str(KEY_CACHE_S),
    }
    servers = [Server(env, folder / f"serve{i}.log") for i in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:  # both load their models at the same time
            list(pool.map(Server.start, servers))
        customers = _pick_customers(servers[0])
        started = time.perf_counter()
        responses = _hammer(servers, customers)
        seconds = time.perf_counter() - started  # reported, not asserted
        revocation_s = _revocation_reaches(servers, customers[0])
    finally:
        for srv in servers:
            srv.stop()

    assert [code for _, code, _ in responses if code != 200] == []
    contacts = _stored_contacts(store_url)
    made = {d["decision_id"] for _, _, d in responses if d["channel"] is not None}
    assert made == {did for *_, did in contacts}  # each contact answered is stored, and only those
    refused = [d for _, _, d in responses if d["channel"] is None]
    assert refused, "the caps never refused anything: the test asked too little"
    for d in refused:
        assert any("cap_" in r for r in d["reasons"]["channel"]), d["reasons"]

    per_channel, global_week = _caps()
    by_customer: dict[str, list[tuple[str, datetime]]] = collections.defaultdict(list)
    for cid, ch, t, _ in contacts:
        by_customer[cid].append((ch, t))
    assert sorted(by_customer) == sorted(customers)  # every customer reached at least once
    worst = {"day": 0, "week": 0, "global_week": 0}
    for cid, rows in by_customer.items():
        for ch, (per_day, per_week) in per_channel.items():
            times = [t for c, t in rows if c == ch]
            day, week = _most_in_window(times, DAY), _most_in_window(times, WEEK)
            assert day <= per_day, (cid, ch, sorted(times))
            assert week <= per_week, (cid, ch, sorted(times))
            worst["day"], worst["week"] = max(worst["day"], day), max(worst["week"], week)
        total = _most_in_window([t for _, t in rows], WEEK)
        assert total <= global_week, (cid, sorted(rows))
        worst["global_week"] = max(worst["global_week"], total)
    # a key revoked on one replica stops working on the other within the cache time
    assert revocation_s <= KEY_CACHE_S + 1.0, revocation_s
    stats = {
        "revocation_seconds": round(revocation_s, 2),
        "requests": len(responses),
        "contacts": len(contacts),
        "refused": len(refused),
        "max_channel_day": worst["day"],
        "max_channel_week": worst["week"],
        "max_global_week": worst["global_week"],
    }
    backend = sa.engine.make_url(store_url).get_backend_name()
    print(f"\nshared store {backend}: {stats}, {len(responses) / seconds:.0f} req/s")
    return stats


def test_two_servers_share_one_postgresql_store_and_its_caps(service_env, pg_url, tmp_path):
    stats = _run_shared_store(pg_url, service_env, tmp_path)
    assert stats["requests"] == CLIENTS * REQUESTS_PER_CLIENT
    # the caps were reached, not merely respected: a week's worth per customer
    assert stats["max_global_week"] == _caps()[1]


def test_two_servers_share_one_sqlite_file_and_its_caps(service_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stats = _run_shared_store(url, service_env, tmp_path)
    assert stats["max_global_week"] == _caps()[1]
