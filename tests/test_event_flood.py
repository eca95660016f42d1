"""#14 acceptance: a purchase-event flood (10,000 anonymous, future-dated or duplicated
purchases) leaves the next retrain's data fingerprint and attribution metrics unchanged; and
retraining on the real path refuses poisoned purchase events that an earlier version stored
(exit code 3, nothing trained or registered)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import EventRecord, SqlContactStore
from training.pipeline import TrainConfig
from training.retrain import REFUSED, RetrainConfig, main, read_outcomes, with_event_orders

pytestmark = pytest.mark.integration

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))
FLOOD = 10_000


def _fingerprint(cfg: RetrainConfig) -> tuple[str, dict]:
    """What the next retrain would train on (the data fingerprint) and its attribution."""
    o = read_outcomes(cfg)
    return with_event_orders(o.loaded, o.purchases, cfg.timezone).report.sha256, o.summary


def test_a_purchase_flood_leaves_the_next_retrains_data_unchanged(service_env, champions, tmp_path):
    data, _ = champions
    env = service_env(tmp_path) | {"REVIVAL_API__MAX_BODY_BYTES": "5000000"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            rows = client.post(
                "/decide_batch",
                json={"now": NOW.isoformat(), "limit": 60, "decisions": True, "record": True},
            ).json()["rows"]
            bought = [
                {
                    "customer_id": r["customer_id"],
                    "event": "purchase",
                    "order_id": f"o-{i}",
                    "ts": (NOW + timedelta(days=2)).isoformat(),
                    "value": 20.0 + i,
                }
                for i, r in enumerate(rows[:20])
            ]
            assert client.post("/events", json={"events": bought}).json()["inserted"] == 20
            store = SqlContactStore(env["REVIVAL_STORE_URL"])
            cfg = RetrainConfig(
                train=TrainConfig(data=Path(data)),
                store_url=env["REVIVAL_STORE_URL"],
                until=datetime.now(UTC),
            )
            fingerprint, summary = _fingerprint(cfg)
            assert summary["purchases_from_events"] == 20 and summary["decisions"] == len(rows)
            counts = store.counts()

            t0 = time.perf_counter()
            target = bought[0]
            anonymous = [target | {"order_id": f"anon-{i}"} for i in range(FLOOD)]  # all valid
            r = client.post("/events", json={"events": anonymous}, headers={"Authorization": ""})
            assert r.status_code == 401, r.text[:300]
            future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            mixed = [  # every other one future-dated: the whole request is refused
                target | {"order_id": f"flood-{i}", "ts": future}
                if i % 2
                else target | {"value": float(i % 500)}
                for i in range(FLOOD)
            ]
            r = client.post("/events", json={"events": mixed})
            assert r.status_code == 422 and "events[1].ts" in r.text, r.text[:300]
            duplicates = [  # the stored order again, at other times and values
                target | {"value": float(i % 500), "ts": (NOW + timedelta(minutes=i)).isoformat()}
                for i in range(FLOOD)
            ]
            r = client.post("/events", json={"events": duplicates})
            assert r.status_code == 200, r.text[:300]
            assert (r.json()["inserted"], r.json()["duplicates"]) == (0, FLOOD)
            seconds = time.perf_counter() - t0

            assert store.counts() == counts
            assert _fingerprint(cfg) == (fingerprint, summary)
            store.close()
    assert seconds < 60, seconds


def _store_purchases(url: str, start: datetime, n: int) -> None:
    """``n`` purchases as an earlier version stored them (no order id: no dedup key)."""
    with SqlContactStore(url) as store:
        store.record_events(
            [
                EventRecord(
                    customer_id=f"{12346 + i % 40}",
                    ts=start + timedelta(seconds=i),
                    event="purchase",
                    value=10.0,
                )
                for i in range(n)
            ]
        )


def test_retrain_refuses_purchase_events_an_earlier_version_stamped(champions, tmp_path, capsys):
    """The incident: 511 purchases without ts were stamped with the server clock, years after
    the log, and merged into the training log; retraining now stops before training (exit
    code 3) and says which events to look at."""
    data, _ = champions
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _store_purchases(url, datetime(2026, 12, 4, 9, 0, tzinfo=UTC), 511)
    tracking = tmp_path / "mlflow.db"
    argv = ["--data", str(data), "--store-url", url, "--tracking-uri", f"sqlite:///{tracking}"]
    code = main([*argv, "--until", "2026-12-05"])
    err = capsys.readouterr().err
    assert code == REFUSED, err
    assert "refused: purchase events do not continue the log: the week of 2026-11-30 (511 " in err
    assert "customers 12346 (13)" in err
    assert "SELECT * FROM events WHERE event = 'purchase' AND ts >= '2026-11-30 00:00:00'" in err
    assert not tracking.exists()  # nothing trained or registered
    # the same events are future-dated for a run whose wall clock is before them
    code = main([*argv, "--until", "2026-12-01"])
    err = capsys.readouterr().err
    assert code == REFUSED and "511 purchase event(s) are later than the wall clock" in err
    assert not tracking.exists()


def test_retrain_refuses_a_week_flooded_with_purchase_events(champions, tmp_path, capsys):
    """511 purchase events in the week right after the log's end (the 10% slice ends on
    31 August 2011): more than 3x the log's median weekly orders (30)."""
    data, _ = champions
    url = f"sqlite:///{tmp_path / 'flooded.db'}"
    _store_purchases(url, datetime(2011, 9, 7, 9, 0, tzinfo=UTC), 511)
    tracking = tmp_path / "mlflow.db"
    argv = ["--data", str(data), "--store-url", url, "--tracking-uri", f"sqlite:///{tracking}"]
    code = main([*argv, "--until", "2026-12-05"])
    err = capsys.readouterr().err
    assert code == REFUSED, err
    assert "refused: purchase events exceed 3 x the reference orders in 1 week(s)" in err
    assert "week of 2011-09-05: 511 event orders vs reference 30 (log median)" in err
    assert not tracking.exists()
