"""A log without items, end to end: a plain ``customer_id,date,amount`` export of the shared
log (orders summed, items dropped) trains from the CLI through ``--mapping``, registers
churn and next purchase (cross-sell skipped, the reason logged), and ``/decide`` answers for
its customers without items, saying so in ``reasons``.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from auth import API_ENV, AUTH
from starlette.testclient import TestClient

from core.env import DEFAULT_DATA
from core.protocols import CROSS_SELL_SKIPPED
from features.loaders import load_transactions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "examples" / "mappings" / "orders_amount.yaml"
NOW = datetime(2011, 9, 1, 10, tzinfo=UTC)


def _orders(path: Path) -> Path:
    """One row per order of the shared log: customer_id, date (a day), amount."""
    tx = load_transactions(DEFAULT_DATA).transactions
    tx["amount"] = tx["quantity"] * tx["unit_price"]
    orders = tx.groupby(["customer_id", "order_id"], as_index=False).agg(
        date=("ts", "min"), amount=("amount", "sum")
    )
    orders = orders[orders["amount"] != 0]
    orders["date"] = orders["date"].dt.strftime("%Y-%m-%d")
    orders[["customer_id", "date", "amount"]].sort_values("date").to_csv(path, index=False)
    return path


def _train(data: Path, uri: str, *more: str) -> subprocess.CompletedProcess:
    args = ["--data", str(data), "--mapping", str(MAPPING), "--tracking-uri", uri, *more]
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_items")
    data = _orders(folder / "orders.csv")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    first = _train(data, uri, "--if-missing", "--max-cutoffs", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    return folder, data, uri, first.stdout


def test_churn_and_next_purchase_register_and_cross_sell_is_skipped_with_its_reason(trained):
    import mlflow
    from mlflow.tracking import MlflowClient

    _, data, uri, out = trained
    assert "cross-sell: skipped (the log has no item ids)" in out
    assert "gate churn v1: PROMOTED" in out and "gate next_purchase v1: PROMOTED" in out
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    for name in ("churn", "next_purchase"):
        version = client.get_model_version_by_alias(name, "champion")
        assert version.tags[CROSS_SELL_SKIPPED] == "the log has no item ids"
    assert not client.search_registered_models(filter_string="name = 'cross_sell'")
    run = mlflow.search_runs(experiment_names=["revival"], filter_string="tags.stage='training'")
    assert run["tags.cross_sell.skipped"].iloc[0] == "the log has no item ids"
    assert "orders_amount.yaml" in run["params.data.mapping"].iloc[0]
    again = _train(data, uri, "--if-missing")  # the absent cross-sell champion is not missing
    assert again.returncode == 0 and "not training" in again.stdout, again.stdout[-2000:]


def test_decide_answers_without_items_and_says_why(trained, monkeypatch):
    folder, data, uri, _ = trained
    env = {
        "REVIVAL_DATA_PATH": str(data),
        "REVIVAL_DATA_MAPPING": str(MAPPING),
        "REVIVAL_MLFLOW_TRACKING_URI": uri,
        "REVIVAL_STORE_URL": f"sqlite:///{folder / 'store.db'}",
        "REVIVAL_HOLDOUT_SHARE": "0",
        **API_ENV,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from service.runtime.decisions import NO_ITEM_MODEL
    from service.service import RevivalService

    with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
        batch = client.post("/decide_batch", json={"now": NOW.isoformat(), "limit": 20})
        assert batch.status_code == 200, batch.text
        rows = batch.json()["rows"]
        assert len(rows) == 20
        for row in rows:
            d = row["decision"]
            assert d["model_versions"] == {"churn": "1", "next_purchase": "1"}
            assert NO_ITEM_MODEL in d["reasons"]["what"]
            assert d["offer"] is None or d["offer"]["items"] == []
        one = client.post(
            "/decide", json={"customer_id": rows[0]["customer_id"], "now": NOW.isoformat()}
        )
        assert one.status_code == 200 and NO_ITEM_MODEL in one.json()["reasons"]["what"]
        rec = client.post("/recommend", json={"customer_id": rows[0]["customer_id"], "k": 3})
        assert rec.status_code == 200 and rec.json()["items"] == []
        assert rec.json()["model_version"] is None
