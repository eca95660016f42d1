"""Customer data over HTTP and the import CLI: profiles upserted and stitched, requests by
any identifier, a merge undone, a stored revoke winning, erasure that leaves no identifier
in any table and keeps the report's totals, the birthday trigger from stored profiles."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa
from auth import AUTH
from starlette.testclient import TestClient

from core.store import SqlContactStore
from core.store.schema import TABLES

NOW = datetime(2011, 9, 20, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def api(service_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("customers_api")
    env = service_env(folder)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            ids = client.post("/decide_batch", json={"now": NOW.isoformat(), "limit": 6})
            rows = ids.json()["rows"]
            yield SimpleNamespace(
                client=client, store=store, ids=[r["customer_id"] for r in rows], env=env
            )
            store.close()


def _post(api, path: str, body: dict, status: int = 200) -> dict:
    r = api.client.post(path, json=body)
    assert r.status_code == status, r.text[:500]
    return r.json()


def test_profiles_join_on_a_shared_identifier_and_any_identifier_names_the_customer(api):
    c = api.ids[0]
    out = _post(
        api,
        "/customers",
        {
            "customers": [
                {"customer_id": c, "identifiers": {"email": " Kim@Example.com "}, "name": "Kim"},
                {
                    "customer_id": "W-1",
                    "source": "wechat",
                    "identifiers": {"email": "kim@example.com", "wechat_openid": "oKim_123456"},
                    "consents": {"wechat": {"granted": True, "ts": "2011-09-01T00:00:00Z"}},
                    "locale": "zh-CN",
                },
            ]
        },
    )
    assert out["customers"] == {c: c, "wechat:W-1": c}
    assert out["merges"] == [{"survivor": c, "absorbed": "wechat:W-1", "kind": "email"}]
    assert out["consents_recorded"] == 1
    view = _post(api, "/customer", {"customer_id": "wechat_openid:oKim_123456"})
    assert view["customer_id"] == c
    prof = view["profile"]
    assert prof["members"] == [c, "wechat:W-1"] and prof["locale"] == "zh-CN"
    assert prof["identifiers"]["email"] == ["kim@example.com"]
    assert view["consents"]["wechat"] is True
    d = _post(
        api,
        "/decide",
        {"customer_id": "email:KIM@example.com", "now": NOW.isoformat(), "dry_run": True},
    )
    assert d["customer_id"] == c
    # the merge is audited and can be undone; then the WeChat profile stands alone
    [merge] = prof["merges"]
    undone = _post(api, "/customers/unmerge", {"merge_id": merge["merge_id"]})
    assert undone["customers"] == [c, "wechat:W-1"]
    _post(api, "/customers/unmerge", {"merge_id": merge["merge_id"]}, status=404)
    assert api.store.profiles.resolve(["wechat:W-1"]) == {"wechat:W-1": "wechat:W-1"}


def test_a_bad_identifier_is_a_422_naming_the_field_and_nothing_is_stored(api):
    before = api.store.counts()
    body = {
        "customers": [
            {"customer_id": "ok-1", "identifiers": {"phone": "07700 900001"}},
            {"customer_id": "bad-1", "identifiers": {"phone": "call me"}},
        ]
    }
    r = api.client.post("/customers", json=body)
    assert r.status_code == 422 and "customers[1].identifiers.phone" in r.text, r.text
    assert api.store.counts() == before
    r = api.client.post(
        "/customers", json={"customers": [{"customer_id": "x", "birthday": "2999-01-01"}]}
    )
    assert r.status_code == 422 and "birthday" in r.text
    r = api.client.post("/decide", json={"customer_id": "email:nobody@", "now": NOW.isoformat()})
    assert r.status_code == 422 and "customer_id" in r.text


def test_a_stored_revoke_wins_over_a_request_grant(api):
    c = api.ids[1]
    _post(
        api,
        "/customers",
        {
            "customers": [
                {
                    "customer_id": c,
                    "identifiers": {"phone": "+447700900002", "email": "rev@example.com"},
                    "consents": {"email": {"granted": False, "ts": "2011-09-10T00:00:00Z"}},
                }
            ]
        },
    )
    body = {
        "customer_id": c,
        "now": NOW.isoformat(),
        "dry_run": True,
        "channels": ["email"],
        "profile": {"consents": {"email": True}},
    }
    d = _post(api, "/decide", body)
    assert d["channel"] is None and "consent_revoked" in json.dumps(d["reasons"])


def test_the_import_cli_reports_refused_rows_by_field_and_line(api, tmp_path):
    from service.config import load_settings
    from service.customers import CustomerDesk
    from service.customers.importer import import_profiles

    path = tmp_path / "crm.csv"
    pd.DataFrame(
        {
            "Member": ["M1", "M2", "M3", "M4"],
            "Mobile": ["07700 900011", "nonsense", "07700 900013", ""],
            "Mail": ["m1@example.com", "", "", "m4@example"],
            "SMS opt-in": ["yes", "no", "maybe", ""],
        }
    ).to_csv(path, index=False)
    settings = load_settings()
    desk = CustomerDesk(settings, api.store)
    pairs = ["customer_id=Member", "phone=Mobile", "email=Mail", "consent_sms=SMS opt-in"]
    report = import_profiles(path, desk, settings, pairs=pairs, source="crm")
    assert (report.rows_in, report.rows_stored, report.refused_rows) == (4, 1, 3)
    assert report.refused == {
        "identifiers.phone": [3],
        "consent_sms": [4],
        "identifiers.email": [5],
    }
    assert report.consents_recorded == 1
    assert api.store.profiles.resolve(["phone:+447700900011"]) == {"phone:+447700900011": "crm:M1"}
    with pytest.raises(ValueError, match="nothing stored"):
        import_profiles(path, desk, settings, pairs=pairs, source="crm", strict=True)
    with pytest.raises(ValueError, match="unknown field"):
        import_profiles(path, desk, settings, pairs=["customer=Member"])
    with pytest.raises(ValueError, match=r"column\(s\) \['Phone'\]"):
        import_profiles(path, desk, settings, pairs=["customer_id=Member", "phone=Phone"])


def _rows_text(store: SqlContactStore) -> list[str]:
    """Every value of every row of every table, JSON texts opened (what a grep would see)."""
    out: list[str] = []
    with store.engine.connect() as conn:
        for table in TABLES:
            for row in conn.execute(sa.select(table)):
                for v in row:
                    out.append(str(v))
                    if isinstance(v, str) and v[:1] in "[{":
                        with contextlib.suppress(ValueError):
                            out += [str(x) for x in _leaves(json.loads(v))]
    return out


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def test_erasure_leaves_no_identifier_in_any_table_and_keeps_report_totals(api, tmp_path):
    c = api.ids[2]
    _post(
        api,
        "/customers",
        {
            "customers": [
                {
                    "customer_id": c,
                    "identifiers": {"email": "erase.me@example.com", "phone": "+447700900099"},
                    "name": "Erasmus",
                    "consents": {"sms": {"granted": True, "ts": "2011-09-01T00:00:00Z"}},
                },
                {
                    "customer_id": "E-9",
                    "source": "pos",
                    "identifiers": {"email": "erase.me@example.com"},
                },
            ]
        },
    )
    decisions = [
        _post(api, "/decide", {"customer_id": ref, "now": (NOW + timedelta(days=i)).isoformat()})
        for i, ref in enumerate([c, "pos:E-9", "email:erase.me@example.com"])
    ]
    events = [
        {
            "customer_id": "pos:E-9",
            "event": "purchase",
            "order_id": "ord-e9",
            "value": 42.0,
            "ts": (NOW + timedelta(days=4)).isoformat(),
        },
        {
            "customer_id": c,
            "event": "cart_abandoned",
            "item_ids": ["85123A"],
            "value": 9.0,
            "ts": (NOW + timedelta(days=4)).isoformat(),
        },
    ]
    _post(api, "/events", {"events": events})
    period = {
        "campaign_id": "lifecycle",
        "start": NOW.isoformat(),
        "end": (NOW + timedelta(days=30)).isoformat(),
    }
    before = _post(api, "/report", period)
    counts = api.store.counts()
    secrets = [c, "pos:E-9", "erase.me@example.com", "+447700900099", "Erasmus"]

    def found(text: list[str]) -> list[str]:
        return [s for s in secrets if any(s == v or (len(s) > 5 and s in v) for v in text)]

    assert found(_rows_text(api.store)) == secrets  # the grep can see them before
    out = _post(
        api, "/customers/erase", {"customer_id": "phone:07700 900099", "reason": "asked by e-mail"}
    )
    assert out["rows"]["profiles"] == 2 and out["rows"]["decisions"] == len(decisions)
    assert out["rows"]["points_ledger"] == 1  # the purchase's points: the account closes
    assert api.store.points.expiring_between(NOW, NOW + timedelta(days=3650)) == []
    assert found(_rows_text(api.store)) == []
    after = _post(api, "/report", period)
    assert _totals(after) == _totals(before)
    for table in ("decisions", "events", "behaviour", "consents"):
        assert api.store.counts()[table] == counts[table], table
    _post(api, "/decide", {"customer_id": c, "now": NOW.isoformat()}, status=404)
    _post(api, "/customer", {"customer_id": "pos:E-9"}, status=404)
    again = _post(api, "/customers", {"customers": [{"customer_id": c}]}, status=422)
    assert again["errors"][0]["field"] == "customers[0].customer_id"  # an erased id is not reused
    batch = {"customer_ids": [c, api.ids[3]], "now": NOW.isoformat(), "decisions": False}
    rows = _post(api, "/decide_batch", batch)["rows"]  # left out like an id not served
    assert [r["customer_id"] for r in rows] == [api.ids[3]]
    from service.config import load_settings
    from service.customers import CustomerDesk
    from service.customers.importer import import_profiles
    from service.runtime import load_snapshot

    settings = load_settings()
    crm = tmp_path / "crm.csv"
    crm.write_text(f"customer_id,email\n{api.ids[4]},kept@example.com\n{c},back@example.com\n")
    report = import_profiles(crm, CustomerDesk(settings, api.store), settings)
    assert report.rows_stored == 1 and report.refused == {"customer_id (erased)": [3]}
    # the next snapshot excludes them, stored or rebuilt
    erased = api.store.profiles.erased_hashes()
    for source in ("newest", "data"):
        snap = load_snapshot(settings, source, api.store.profiles.identity_map(), erased)
        assert c not in snap.positions and len(snap.positions) > 100


def _totals(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("generated_at", "warnings")}


def test_the_birthday_trigger_enrols_stored_birthdays_at_the_local_time(api):
    from service.journeys.config import FactTrigger
    from service.journeys.triggers import _birthday_entries

    london = ZoneInfo("Europe/London")
    state = SimpleNamespace(snapshot=SimpleNamespace(positions={"a": 0, "b": 1, "leap": 2}))
    born = {
        "a": date(1980, 9, 25),
        "b": date(1990, 12, 1),
        "leap": date(1992, 2, 29),
        "x": date(1980, 9, 25),
    }
    trig = FactTrigger(kind="fact", fact="birthday", days=-3, at_local="10:00")
    day = datetime(2011, 9, 22, tzinfo=london), datetime(2011, 9, 23, tzinfo=london)
    fired = _birthday_entries("birthday", trig, born, state, london, *day)
    # a's birthday is 25 September: three days before, at 10:00 London; x is not served
    assert [(e.customer_id, e.trigger_key) for e in fired] == [("a", "birthday:2011")]
    assert fired[0].at == datetime(2011, 9, 22, 9, tzinfo=UTC)
    leap_day = datetime(2011, 2, 25, tzinfo=london), datetime(2011, 2, 26, tzinfo=london)
    assert [
        e.customer_id for e in _birthday_entries("birthday", trig, born, state, london, *leap_day)
    ] == ["leap"]
    # the store's birthdays feed it
    api.store.profiles.upsert(
        [
            __import__("core.store", fromlist=["ProfileRecord"]).ProfileRecord(
                profile_id=api.ids[3], source="shop", birthday=date(1975, 10, 2)
            )
        ],
        limit=3,
    )
    assert api.store.profiles.birthdays()[api.ids[3]] == date(1975, 10, 2)
