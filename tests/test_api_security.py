"""Issue #14's findings against the real service (champions trained on a slice of the real
log): each request that once got a 200 or a 500 now gets the named 4xx problem, and no
rejected request stores anything (row counts of every table before and after)."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from auth import AUTH, TEST_KEY
from starlette.testclient import TestClient

from core.store import SqlContactStore
from service.auth import ENDPOINT_SCOPES
from service.web import package_version

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def svc(service_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("security")
    env = service_env(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi()) as client:
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            rows = client.post(
                "/decide_batch", json={"decisions": False, "limit": 5}, headers=AUTH
            ).json()["rows"]
            keys = {
                scope: {"Authorization": f"Bearer {store.keys.create(scope, [scope])[1]}"}
                for scope in ("decide", "read", "events", "admin")
            }
            yield SimpleNamespace(client=client, store=store, cid=rows[0]["customer_id"], keys=keys)
            store.close()


def _bodies(cid: str) -> dict[str, dict]:
    """A valid body per endpoint (retrain: attribution only, the cheapest real job)."""
    return {
        "/decide": {"customer_id": cid, "now": NOW.isoformat(), "dry_run": True},
        "/decide_batch": {"now": NOW.isoformat(), "limit": 2, "decisions": False},
        "/recommend": {"customer_id": cid, "k": 3},
        "/customer": {"customer_id": cid},
        "/report": {"campaign_id": "lifecycle"},
        "/events": {"events": [{"customer_id": cid, "event": "opened", "ts": NOW.isoformat()}]},
        "/points": {"customer_id": cid, "kind": "burn", "points": 5, "ref": "matrix-1"},
        "/reload": {},
        "/retrain": {"attribution_only": True},
        "/retrain_status": {"job_id": "set below"},
        "/keys/create": {"name": "matrix", "scopes": ["read"]},
        "/keys/list": {},
        "/keys/revoke": {"key_id": "set below"},
        "/customers": {
            "customers": [
                {"customer_id": cid, "identifiers": {"email": "Matrix@Example.com"}},
                {
                    "customer_id": "m-7",
                    "source": "pos",
                    "identifiers": {"email": "matrix@example.com"},
                },
            ]
        },
        "/customers/unmerge": {"merge_id": 0},  # set below, from the merge /customers made
        "/customers/erase": {"customer_id": "someone-else", "reason": "asked on the phone"},
        "/journeys": {},
        "/journeys/customer": {"customer_id": cid},
        "/journeys/pause": {"journey_id": "birthday", "paused": False},
        "/journeys/dry_run": {
            "journey_id": "first_order_followup",
            "start": NOW.isoformat(),
            "end": (NOW + timedelta(days=7)).isoformat(),
            "limit": 3,
        },
    }


def test_every_endpoint_no_key_401_wrong_scope_403_right_scope_2xx(svc):
    bodies = _bodies(svc.cid)
    seen = set()
    svc.store.points.adjust(svc.cid, 10, NOW, "matrix-grant")  # what the /points burn spends
    last = ("/retrain_status", "/keys/revoke", "/customers/unmerge")
    for path in sorted(ENDPOINT_SCOPES, key=lambda p: p in last):
        needed = ENDPOINT_SCOPES[path]
        wrong = svc.keys["read" if needed != "read" else "decide"]
        body = bodies[path]
        before = svc.store.counts()
        assert svc.client.post(path, json=body).status_code == 401, path
        assert svc.client.post(path, json=body, headers=wrong).status_code == 403, path
        assert svc.store.counts() == before, path
        r = svc.client.post(path, json=body, headers=svc.keys[needed])
        assert 200 <= r.status_code < 300, (path, r.text[:300])
        if path == "/retrain":
            bodies["/retrain_status"]["job_id"] = r.json()["job_id"]
        if path == "/keys/create":
            bodies["/keys/revoke"]["key_id"] = r.json()["key_id"]
        if path == "/customers":
            assert r.json()["customers"]["pos:m-7"] == svc.cid
            bodies["/customers/unmerge"]["merge_id"] = svc.store.profiles.merge_log(svc.cid)[-1][
                "merge_id"
            ]
        seen.add(path)
    assert seen == set(ENDPOINT_SCOPES)


def _refused(svc, path: str, status: int, named: str, *, json=None, content=None, headers=None):
    before = svc.store.counts()
    kwargs = {"json": json} if content is None else {"content": content}
    r = svc.client.post(path, headers={**AUTH, **(headers or {})}, **kwargs)
    assert r.status_code == status, (path, json, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert isinstance(problem["detail"], str) and named in r.text, (named, r.text[:300])
    assert "IODescriptor" not in r.text and "Traceback" not in r.text
    assert svc.store.counts() == before, path
    return problem


def test_finding_1_anonymous_callers_and_cross_site_forms_are_refused(svc):
    before = svc.store.counts()
    for _ in range(20):
        assert svc.client.post("/customer", json={"customer_id": svc.cid}).status_code == 401
    assert svc.client.post("/retrain", content=b"", headers=JSON).status_code == 401
    consent = {"consents": [{"customer_id": svc.cid, "channel": "email", "granted": False}]}
    assert svc.client.post("/events", json=consent).status_code == 401
    assert svc.store.counts() == before
    form = {"content-type": "application/x-www-form-urlencoded"}
    _refused(svc, "/retrain", 415, "application/json", content=b"force=true", headers=form)
    text = {"content-type": "text/plain"}
    _refused(svc, "/events", 415, "text/plain", content=b'{"events": []}', headers=text)


@pytest.mark.parametrize("path", sorted(ENDPOINT_SCOPES))
def test_finding_4_multipart_without_boundary_is_a_415_everywhere(svc, path):
    multipart = {"content-type": "multipart/form-data"}
    _refused(svc, path, 415, "multipart", content=b"--x\r\n", headers=multipart)


@pytest.mark.parametrize("path", ["/decide", "/decide_batch", "/customer", "/recommend"])
@pytest.mark.parametrize("now", ["0001-01-01T00:00:00", "9999-12-31T23:59:59", "3000-01-01"])
def test_finding_3_and_4_now_far_away_is_a_422_and_records_nothing(svc, path, now):
    body = {"now": now} if path == "/decide_batch" else {"customer_id": svc.cid, "now": now}
    problem = _refused(svc, path, 422, "now", json=body)
    assert problem["errors"][0]["field"] == "now"


def test_now_must_be_near_the_clock_or_the_data(svc):
    body = {"customer_id": svc.cid, "now": "2040-01-01T00:00:00"}  # valid date, far from both
    assert "api.now_window_days" in _refused(svc, "/decide", 422, "now", json=body)["detail"]


def test_finding_4_and_6_offsets_numbers_and_coercion(svc):
    _refused(svc, "/decide_batch", 422, "offset", json={"offset": 10**30})
    big = b'{"offset": ' + b"1" * 400 + b"}"
    _refused(svc, "/decide_batch", 422, "offset", content=big, headers=JSON)
    _refused(svc, "/decide", 422, "dry_run", json={"customer_id": svc.cid, "dry_run": "yes"})
    _refused(svc, "/decide_batch", 422, "budget", json={"budget": "9"})
    _refused(svc, "/decide", 422, "now", json={"customer_id": svc.cid, "now": 1315300000})
    dup = b'{"customer_id": "a", "customer_id": "%s"}' % svc.cid.encode()
    _refused(svc, "/decide", 400, "duplicate key", content=dup, headers=JSON)
    _refused(svc, "/retrain", 400, "body is required", content=b"", headers=JSON)
    _refused(svc, "/reload", 400, "body is required", content=b"", headers=JSON)


def test_finding_7_client_errors_are_one_info_line_and_the_spec_is_complete(svc, caplog):
    with caplog.at_level(logging.INFO):
        svc.client.post("/decide_batch", json={"budget": -1}, headers=AUTH)
        svc.client.post("/decide", json={"customer_id": "no-such-customer"}, headers=AUTH)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info]
    spec = svc.client.get("/docs.json").json()
    assert spec["info"]["version"] == package_version() != "None"
    assert "Bearer" in spec["info"]["description"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["properties"]["detail"]["type"] == "string"
    for path in ENDPOINT_SCOPES:
        op = spec["paths"][path]["post"]
        assert op["security"] == [{"bearer": []}]
        for status in ("401", "403", "413", "415", "422", "429"):
            content = op["responses"][status]["content"]
            assert list(content) == ["application/problem+json"], (path, status)
    assert {"404", "409", "503"} <= set(spec["paths"]["/decide"]["post"]["responses"])
    assert "Retry-After" in spec["paths"]["/decide"]["post"]["responses"]["429"]["headers"]


def test_first_start_creates_an_admin_key_and_prints_it_once(
    service_env, tmp_path, capfd, fresh_app
):
    env = {k: v for k, v in service_env(tmp_path).items() if k != "REVIVAL_API__BOOTSTRAP_KEY"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("REVIVAL_API__BOOTSTRAP_KEY", raising=False)
        with TestClient(fresh_app()) as client:
            printed = capfd.readouterr().out
            (token,) = re.findall(r"rvk_\S+", printed)
            auth = {"Authorization": f"Bearer {token}"}
            assert client.post("/keys/list", json={}, headers=auth).status_code == 200
            assert client.post("/keys/list", json={}, headers=AUTH).status_code == 401
        with TestClient(fresh_app()):  # a restart: the key exists, nothing printed
            assert "rvk_" not in capfd.readouterr().out
    store = SqlContactStore(env["REVIVAL_STORE_URL"])
    (key,) = store.keys.list()
    store.close()
    assert key.scopes == ("decide", "read", "events", "admin", "metrics") and token != TEST_KEY
