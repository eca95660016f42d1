"""The API gate (service.web.gate) in front of a stand-in app: keys, scopes, rate limits,
media type, body limits and strict JSON — every refusal an RFC 9457 problem that never
reaches the app. Keys are checked on SQLite and PostgreSQL (the store replicas share)."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import anyio
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from core.store import SqlContactStore
from service.api_config import ApiSettings, RateLimit, RateLimits
from service.auth import ENDPOINT_SCOPES, RateLimiter
from service.config import load_settings
from service.web import Gate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# A minimal valid body per route (the gate validates with the service's own models).
BODIES = {
    "/decide": {"customer_id": "c1"},
    "/decide_batch": {},
    "/recommend": {"customer_id": "c1"},
    "/customer": {"customer_id": "c1"},
    "/report": {"campaign_id": "lifecycle"},
    "/events": {},
    "/points": {"customer_id": "c1", "kind": "burn", "points": 10, "ref": "order-1"},
    "/reload": {},
    "/retrain": {"attribution_only": True},
    "/retrain_status": {"job_id": "j1"},
    "/keys/create": {"name": "n", "scopes": ["read"]},
    "/keys/list": {},
    "/keys/revoke": {"key_id": "k1"},
    "/customers": {"customers": [{"customer_id": "c1"}]},
    "/customers/unmerge": {"merge_id": 1},
    "/customers/erase": {"customer_id": "c1", "reason": "customer asked"},
    "/journeys": {},
    "/journeys/customer": {"customer_id": "c1"},
    "/journeys/pause": {"journey_id": "win_back", "paused": True},
    "/journeys/dry_run": {
        "journey_id": "win_back",
        "start": "2011-06-01T00:00:00Z",
        "end": "2011-06-08T00:00:00Z",
    },
}


class App:
    """The stand-in service: records what reaches it, answers 200 (or ``status``)."""

    def __init__(self, status: int = 200):
        self.calls: list[tuple[str, bytes]] = []
        self.status = status

    async def __call__(self, scope, receive, send):
        body = b""
        if scope["type"] == "http" and scope["method"] == "POST":
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
        self.calls.append((scope["path"], body))
        out = json.dumps({"error": "boom"} if self.status >= 500 else {"ok": True}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def models():
    from service.service import RevivalService

    return {api.route: api.input_spec for api in RevivalService.apis.values()}


def _settings(url: str, **api):
    return load_settings().model_copy(update={"store_url": url, "api": ApiSettings(**api)})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def gate(models, tmp_path):
    """(client, app, store, make_key) over a SQLite store with the default api settings."""
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    store = SqlContactStore(url)
    app = App()
    client = TestClient(Gate(app, models=models, settings=_settings(url)))

    def key(*scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {store.keys.create('t', scopes)[1]}"}

    yield client, app, store, key
    store.close()


def _problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == f"urn:revival:problem:{code}" and body["status"] == status
    assert isinstance(body["detail"], str) and body["title"]
    return body


def test_every_service_route_has_a_scope_and_an_unscoped_route_refuses_to_start(models):
    assert set(models) == set(ENDPOINT_SCOPES) == set(BODIES)
    with pytest.raises(RuntimeError, match="/new_endpoint"):
        Gate(App(), models={**models, "/new_endpoint": models["/decide"]})


@pytest.mark.parametrize("path", sorted(ENDPOINT_SCOPES))
def test_each_route_no_key_401_wrong_scope_403_right_scope_passes(gate, path):
    client, app, _, key = gate
    needed = ENDPOINT_SCOPES[path]
    wrong = "read" if needed != "read" else "decide"
    r = client.post(path, json=BODIES[path])
    _problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    bad = client.post(path, json=BODIES[path], headers={"Authorization": "Bearer rvk_nope"})
    _problem(bad, 401, "unauthorized")
    body = _problem(client.post(path, json=BODIES[path], headers=key(wrong)), 403, "forbidden")
    assert needed in body["detail"]
    assert app.calls == []  # nothing reached the service
    ok = client.post(path, json=BODIES[path], headers=key(needed))
    assert ok.status_code == 200 and [(p, json.loads(b)) for p, b in app.calls] == [
        (path, BODIES[path])
    ]
    assert client.post(path, json=BODIES[path], headers=key("admin")).status_code == 200


def test_keys_are_stored_hashed_and_a_revoked_key_stops_on_another_replica(
    models, store_url, tmp_path
):
    settings = _settings(store_url, key_cache_seconds=0.5)
    replicas = [TestClient(Gate(App(), models=models, settings=settings)) for _ in range(2)]
    store = SqlContactStore(store_url)
    try:
        key, token = store.keys.create("crm", ["decide", "events"])
        engine = sa.create_engine(store_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
        engine.dispose()
        assert len(rows) == 1 and token not in json.dumps([dict(r) for r in rows], default=str)
        assert rows[0]["secret_hash"] == hashlib.sha256(token.encode()).hexdigest()
        if store_url.startswith("sqlite"):
            raw = (tmp_path / "keys.db").read_bytes() + (tmp_path / "keys.db-wal").read_bytes()
            assert token.split("_", 2)[2].encode() not in raw
        auth = {"Authorization": f"Bearer {token}"}
        for r in replicas:
            assert r.post("/decide", json={"customer_id": "c"}, headers=auth).status_code == 200
        store.keys.revoke(key.key_id)  # e.g. `python -m service.auth revoke` on any host
        revoked = time.monotonic()
        while (
            replicas[1].post("/decide", json={"customer_id": "c"}, headers=auth).status_code == 200
        ):
            time.sleep(0.02)
        assert time.monotonic() - revoked <= 0.5 + 0.3  # key_cache_seconds + slack
        _problem(
            replicas[0].post("/decide", json={"customer_id": "c"}, headers=auth),
            401,
            "unauthorized",
        )
    finally:
        store.close()


def test_rate_limit_is_a_bucket_per_key_and_scope_with_429_retry_after(models, tmp_path):
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    store = SqlContactStore(url)
    limits = RateLimits(decide=RateLimit(per_second=0.1, burst=2))
    client = TestClient(Gate(App(), models=models, settings=_settings(url, rate_limits=limits)))
    a = {"Authorization": f"Bearer {store.keys.create('a', ['decide', 'read'])[1]}"}
    b = {"Authorization": f"Bearer {store.keys.create('b', ['decide'])[1]}"}
    first = client.post("/decide", json={"customer_id": "c"}, headers=a)
    assert first.status_code == 200
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("2", "1")
    assert client.post("/decide", json={"customer_id": "c"}, headers=a).status_code == 200
    limited = client.post("/decide", json={"customer_id": "c"}, headers=a)
    _problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) == 10  # one token at 0.1/s
    assert limited.headers["ratelimit-remaining"] == "0"
    # another key, and another scope of the same key, have their own buckets
    assert client.post("/decide", json={"customer_id": "c"}, headers=b).status_code == 200
    assert client.post("/customer", json={"customer_id": "c"}, headers=a).status_code == 200
    store.close()


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(RateLimits(read=RateLimit(per_second=2, burst=3)), clock=lambda: now[0])
    assert [limiter.take("k", "read").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.take("k", "read").retry_after == 1
    now[0] = 0.5  # one token back
    assert limiter.take("k", "read").allowed and not limiter.take("k", "read").allowed
    now[0] = 10.0  # full again, never above the burst
    got = limiter.take("k", "read")
    assert (got.allowed, got.remaining, got.reset_seconds) == (True, 2, 1)


@pytest.mark.parametrize(
    "headers, body",
    [
        ({"content-type": "text/plain"}, b'{"customer_id": "c"}'),
        ({"content-type": "application/x-www-form-urlencoded"}, b"customer_id=c"),
        ({"content-type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
        ({}, b'{"customer_id": "c"}'),
    ],
)
def test_only_json_bodies_are_accepted(gate, headers, body):
    client, app, _, key = gate
    r = client.post("/decide", content=body, headers={**headers, **key("decide")})
    _problem(r, 415, "unsupported_media_type")
    assert app.calls == []


@pytest.mark.parametrize(
    "body, named",
    [
        (b"", "body is required"),
        (b"   ", "body is required"),
        (b'{"customer_id": "a", "customer_id": "b"}', "duplicate key 'customer_id'"),
        (b'{"profile": {"name": "a", "name": "b"}, "customer_id": "c"}', "duplicate key 'name'"),
        (b'["customer_id"]', "JSON object"),
        (b'{"customer_id": "c", "x": NaN}', "NaN"),
        (b'{"customer_id": "c",', "invalid JSON"),
        (b'{"customer_id": "\xff"}', "invalid JSON"),
        (b'{"offset": ' + b"9" * 5000 + b"}", "invalid JSON"),
    ],
)
def test_malformed_json_is_a_400(gate, body, named):
    client, app, _, key = gate
    path = "/decide_batch" if b"offset" in body else "/decide"
    r = client.post(
        path, content=body, headers={"content-type": "application/json", **key("decide")}
    )
    assert named in _problem(r, 400, "malformed_request")["detail"]
    assert app.calls == []


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/decide", {"customer_id": "c", "dry_run": "yes"}, "dry_run"),
        ("/decide", {"customer_id": "c", "dispatch": 1}, "dispatch"),
        ("/decide", {"customer_id": 12}, "customer_id"),
        ("/decide", {"customer_id": "c", "now": 1315300000}, "now"),
        ("/decide", {"customer_id": "c", "now": "1315300000"}, "now"),
        ("/decide", {"customer_id": "c", "now": "0001-01-01T00:00:00"}, "now"),
        ("/decide", {"customer_id": "c", "now": "9999-12-31T23:59:59"}, "now"),
        ("/decide_batch", {"budget": "9"}, "budget"),
        ("/decide_batch", {"offset": 10**30}, "offset"),
        ("/decide_batch", {"offset": 10**400}, "offset"),
        ("/decide_batch", b'{"limit": 1e400}', "limit"),
        ("/recommend", {"customer_id": "c", "k": 10.5}, "k"),
        ("/report", {"campaign_id": "lifecycle", "start": 1315300000}, "start"),
        ("/retrain", {"min_treated": "9"}, "min_treated"),
        ("/events", {"events": [{"customer_id": "c", "event": "opened", "ts": 0}]}, "events[0].ts"),
    ],
)
def test_invalid_fields_are_a_422_naming_each(gate, path, body, field):
    client, app, _, key = gate
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=raw, headers={"content-type": "application/json", **key("admin")})
    errors = _problem(r, 422, "invalid_request")["errors"]
    assert [e["field"] for e in errors] == [field], errors
    assert errors[0]["pointer"] == "/" + field.replace("[", "/").replace("].", "/").replace(
        ".", "/"
    )
    assert app.calls == []


def test_body_limits_413_and_a_stalled_body_408(models, tmp_path):
    url = f"sqlite:///{tmp_path / 'body.db'}"
    store = SqlContactStore(url)
    token = store.keys.create("t", ["decide"])[1]
    app = App()
    gate = Gate(
        app, models=models, settings=_settings(url, max_body_bytes=100, body_timeout_seconds=0.2)
    )
    client = TestClient(gate)
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    big = json.dumps({"customer_id": "x" * 200}).encode()
    _problem(client.post("/decide", content=big, headers=auth), 413, "payload_too_large")

    def chunks():  # no Content-Length: chunked transfer, refused once past the limit
        yield big[:60]
        yield big[60:]

    _problem(client.post("/decide", content=chunks(), headers=auth), 413, "payload_too_large")

    sent: list[dict] = []

    async def stalled() -> None:
        parts = [{"type": "http.request", "body": b'{"custo', "more_body": True}]

        async def receive() -> dict:
            if parts:
                return parts.pop()
            await anyio.sleep(60)  # the client never sends the rest
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        headers = [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        ]
        scope = {"type": "http", "method": "POST", "path": "/decide", "headers": headers}
        with anyio.fail_after(5):
            await gate(scope, receive, send)

    started = time.monotonic()
    anyio.run(stalled)
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 408 and json.loads(sent[1]["body"])["status"] == 408
    assert app.calls == []
    store.close()


def test_refusals_log_one_info_line_and_a_server_error_becomes_a_problem(models, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = SqlContactStore(url)
    token = store.keys.create("t", ["decide"])[1]
    client = TestClient(Gate(App(status=500), models=models, settings=_settings(url)))
    auth = {"Authorization": f"Bearer {token}"}
    with caplog.at_level(logging.DEBUG, logger="service.web.gate"):
        client.post("/decide", json={"customer_id": "c", "dry_run": "yes"}, headers=auth)
    (record,) = caplog.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "422 invalid_request" in record.getMessage()
    r = client.post("/decide", json={"customer_id": "c"}, headers=auth)
    body = _problem(r, 500, "internal_error")
    assert "boom" not in r.text and body["detail"]
    store.close()


def test_open_paths_and_protected_metrics(models, tmp_path):
    url = f"sqlite:///{tmp_path / 'open.db'}"
    store = SqlContactStore(url)
    spec = {"openapi": "3.0.2", "info": {"version": "1"}, "paths": {}}
    open_gate = Gate(App(), models=models, spec=lambda: spec, settings=_settings(url))
    client = TestClient(open_gate)
    assert client.get("/docs.json").json() == spec
    assert client.get("/livez").status_code == 200 and client.get("/metrics").status_code == 200
    closed = TestClient(Gate(App(), models=models, settings=_settings(url, protect_metrics=True)))
    _problem(closed.get("/metrics"), 401, "unauthorized")
    decide_only = {"Authorization": f"Bearer {store.keys.create('d', ['decide'])[1]}"}
    _problem(closed.get("/metrics", headers=decide_only), 403, "forbidden")
    metrics = {"Authorization": f"Bearer {store.keys.create('m', ['metrics'])[1]}"}
    assert closed.get("/metrics", headers=metrics).status_code == 200
    assert closed.get("/livez").status_code == 200
    store.close()
