"""The learning loop on the real log (10% slice): decide with a 50% hold-out, report purchases
with a known offer effect, retrain with the outcomes, reload — the offer-uplift model now
chooses the offers. Also ``/retrain`` as a background job."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from auth import AUTH
from starlette.testclient import TestClient

from core.store import SqlContactStore

pytestmark = pytest.mark.integration

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))


@pytest.fixture(scope="module")
def loop(service_env, champions, tmp_path_factory):
    """The service on a copy of the champions' MLflow store (so other tests keep seeing v1)
    with a new contact store and half of the eligible customers held out."""
    folder = tmp_path_factory.mktemp("retrain_loop")
    _, uri = champions
    shutil.copy(Path(uri.removeprefix("sqlite:///")), folder / "mlflow.db")
    env = service_env(folder) | {
        "REVIVAL_MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "REVIVAL_HOLDOUT_SHARE": "0.5",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            yield client, env, folder
    import mlflow

    mlflow.set_tracking_uri(None)  # retraining pointed MLflow at the copy; leave no trace


def _recency(data: Path, snapshot_at: str) -> pd.Series:
    from features.loaders import load_transactions
    from features.snapshot import build_features

    at = pd.Timestamp(snapshot_at).tz_convert("Europe/London").tz_localize(None)
    return build_features(load_transactions(data).transactions, at)["recency_days"]


def test_outcomes_retrain_and_reload_switch_offers_to_the_uplift_model(loop):
    client, env, folder = loop
    before = client.post("/reload", json={}).json()
    assert "offer_uplift" not in before["model_versions"]
    assert before["offer_choice"] == "offer_rules: no offer_uplift champion"

    # 1. decide for every eligible customer, recorded; half of them are the hold-out
    batch = client.post(
        "/decide_batch",
        json={"now": NOW.isoformat(), "limit": 1000, "decisions": True, "record": True},
    ).json()
    rows = batch["rows"]
    assert len(rows) == batch["selected"] > 300
    assert all(r["decision"]["reasons"]["what"][0] == before["offer_choice"] for r in rows)
    held = sum(r["holdout"] for r in rows)
    assert 0.4 < held / len(rows) < 0.6

    # 2. purchases with a known effect: contacted customers with recency <= the median buy
    #    with probability 0.6, everyone else (and the whole hold-out) with 0.1
    store = SqlContactStore(env["REVIVAL_STORE_URL"])
    decisions = store.decisions_between(datetime(2011, 1, 1, tzinfo=UTC), datetime.now(UTC))
    store.close()
    snapshot_at = decisions["payload"].iloc[0]["snapshot_at"]
    recency = _recency(Path(env["REVIVAL_DATA_PATH"]), snapshot_at)
    median = recency.median()
    rng = np.random.default_rng(5)
    events = []
    bought: set[str] = set()
    for d in decisions.sort_values("customer_id").itertuples():
        treated = bool(d.payload["contact"])
        p = 0.6 if treated and recency[d.customer_id] <= median else 0.1
        if rng.random() < p:
            bought.add(d.customer_id)
            events.append(
                {
                    "customer_id": d.customer_id,
                    "event": "purchase",
                    "ts": (d.ts + timedelta(days=2)).isoformat(),
                    "value": 25.0,
                    "order_id": f"order-{d.decision_id}",
                }
            )
    posted = client.post("/events", json={"events": events}).json()
    assert posted["inserted"] == len(events) > 50

    # 3. retrain with the outcomes (the CLI, in-process; small settings for the slice)
    from training.retrain import main

    summary_path = folder / "summary.json"
    code = main(
        [
            "--force",
            "--max-cutoffs",
            "4",
            "--als-grid",
            "small",
            "--min-treated",
            "40",
            "--min-control",
            "40",
            "--min-leaf",
            "20",
            "--splits",
            "2",
            # the planted campaign's ~116 purchases fall in one week, ~3.9x the slice's
            # median weekly orders (30): real outcomes here, above the default guard of 3
            "--max-event-order-ratio",
            "5",
            "--summary-out",
            str(summary_path),
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    att = summary["attribution"]
    assert att["decisions"] == len(decisions)
    assert att["purchases_from_events"] == len(events)
    assert att["treated_conversions"] + att["holdout_conversions"] == len(events)
    assert att["treated_conversion_rate"] > att["holdout_conversion_rate"] + 0.15
    arms = {a["arm"]: a for a in summary["offer_uplift"]["arms"]}
    fitted = {a for a, r in arms.items() if r["fitted"]}
    assert "value_reminder" in fitted
    assert all(arms[a]["reason"].startswith("skipped") for a in set(arms) - fitted)
    vr = arms["value_reminder"]
    offered = decisions[decisions["offer_type"] == "value_reminder"]
    contacted = offered["payload"].map(lambda p: p["contact"])
    conv = offered["customer_id"].isin(bought)
    assert (vr["treated"], vr["control"]) == (contacted.sum(), offered["holdout"].sum())
    assert vr["observed_uplift"] == pytest.approx(
        conv[contacted].mean() - conv[offered["holdout"]].mean()
    )
    assert vr["observed_uplift"] > 0.05  # +0.5 for the recent part of the arm, 0 for the rest
    assert vr["predicted_uplift"] == pytest.approx(vr["observed_uplift"], abs=0.05)
    assert summary["offer_uplift"]["gate_value"] > 0  # ranks better than random targeting
    versions = summary["registered"]
    assert versions == {
        "churn": "2",
        "next_purchase": "2",
        "cross_sell": "2",
        "offer_uplift": "1",
    }
    assert all(summary["promoted"].values())  # --force

    # 4. the running service picks up the new champions
    after = client.post("/reload", json={}).json()
    assert after["model_versions"] == versions
    assert after["previous_versions"] == before["model_versions"]
    assert after["changed"] is True
    assert after["offer_choice"] == "offer_uplift_model v1"

    # 5. decisions now carry the model's offer reason code (a customer without a purchase)
    ranked = client.post(
        "/decide_batch",
        json={"now": NOW.isoformat(), "limit": 1000, "decisions": False, "stages": ["at_risk"]},
    ).json()["rows"]
    cid = next(r["customer_id"] for r in ranked if r["customer_id"] not in bought)
    # a week on, so step 1's contact (or, for the hold-out, its shadow) caps nothing
    later = (NOW + timedelta(days=8)).isoformat()
    d = client.post("/decide", json={"customer_id": cid, "now": later, "dry_run": True}).json()
    code = d["reasons"]["what"][0]
    assert code.startswith("offer_uplift_model v1: "), code
    assert d["model_versions"]["offer_uplift"] == "1"
    assert d["offer"]["type"] in fitted | {"none"}


def test_retrain_endpoint_runs_a_background_job(loop):
    client, env, _ = loop
    job = client.post("/retrain", json={"attribution_only": True}).json()
    assert job["status"] in ("running", "succeeded")
    assert "training.retrain" in job["command"] and "--attribution-only" in job["command"]
    deadline = time.monotonic() + 300  # a guard against hanging, not a timed assertion
    status = job
    while status["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.post("/retrain_status", json={"job_id": job["job_id"]}).json()
    assert status["status"] == "succeeded", status["log_tail"]
    store = SqlContactStore(env["REVIVAL_STORE_URL"])
    n = len(store.decisions_between(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)))
    store.close()
    assert status["result"]["attribution"]["decisions"] == n
    assert status["result"]["run_id"] is None  # attribution only: nothing trained

    missing = client.post("/retrain_status", json={"job_id": "nope"})
    assert missing.status_code == 404 and missing.json()["type"].endswith(":unknown_job")
    bad = client.post("/retrain", json={"min_treated": 0})
    assert bad.status_code == 422 and "min_treated" in bad.text
