"""Replicas sharing one store serve the same thing: the versions a /reload published (within
``replica_sync_seconds``), and purchases posted to any of them."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.config import load_settings

NOW = datetime(2011, 12, 12, 10, 0, tzinfo=UTC)  # after the slice's snapshot


@pytest.fixture
def replicas(champions, tmp_path: Path) -> Iterator[tuple]:
    """Two runtimes on one SQLite store and a private copy of the champions' MLflow store
    (so registering a new version here changes no other test's registry)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from service.runtime import Runtime

    data, uri = champions
    db = tmp_path / "mlflow.db"
    shutil.copy(uri.removeprefix("sqlite:///"), db)  # artifacts stay where they are (read-only)
    copy_uri = f"sqlite:///{db}"
    settings = load_settings().model_copy(
        update={
            "data_path": data,
            "mlflow_tracking_uri": copy_uri,
            "store_url": f"sqlite:///{tmp_path / 'store.db'}",
            "holdout_share": 0.0,
            "replica_sync_seconds": 0.2,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVIVAL_MLFLOW_TRACKING_URI", copy_uri)
        a = Runtime(settings)
        b = Runtime(settings)
        mlflow.set_tracking_uri(copy_uri)
        yield a, b, MlflowClient()
        mlflow.set_tracking_uri(None)
    a.close()
    b.close()


def test_a_reload_on_one_replica_is_served_by_the_other(replicas) -> None:
    a, b, client = replicas
    assert a.generation == b.generation == 1  # the first start published, the second adopted
    assert a.state.models.versions == b.state.models.versions
    old = a.state.models.versions["churn"]
    new = client.copy_model_version(f"models:/churn/{old}", "churn")  # a new champion
    client.set_registered_model_alias("churn", "champion", new.version)
    assert b.state.models.versions["churn"] == old  # nothing moves before a reload
    out = a.reload()
    assert out.model_versions["churn"] == str(new.version) and out.generation == 2
    t0 = time.monotonic()
    while b.state.models.versions["churn"] != str(new.version):
        assert time.monotonic() - t0 < 10, "replica b did not follow the reload"
        time.sleep(0.05)
    assert b.generation == 2 and b.state.models.versions == a.state.models.versions
    served = a.store.serving.history()
    assert [s.generation for s in served] == [2, 1] and "reload" in served[0].changed_by


def test_a_purchase_posted_to_one_replica_is_seen_by_the_other(replicas) -> None:
    from service.schemas import BatchRequest, DecideRequest, EventIn

    a, b, _ = replicas
    ranked = b.decide_batch(BatchRequest(now=NOW, limit=50, decisions=False))
    revived = [r.customer_id for r in ranked.rows]
    cid = next(
        c for c in revived if b.decide(DecideRequest(customer_id=c, now=NOW, dry_run=True)).revive
    )
    item = next(iter(b.state.snapshot.item_names))
    a.record(
        [
            EventIn(
                customer_id=cid,
                event="purchase",
                order_id=f"o-{cid}",
                ts=NOW - timedelta(days=1),
                value=12.5,
                item_ids=[item],
            )
        ],
        [],
    )
    after = b.decide(DecideRequest(customer_id=cid, now=NOW, dry_run=True))
    assert not after.revive and "purchased_since_snapshot" in after.reasons["who"]
    seen = b.customer(cid, NOW)
    assert seen.live_purchase_at == NOW - timedelta(days=1)
    assert item in [t["item_id"] for t in seen.top_items]
