"""A replica starts from the snapshot training stored, without the transaction log.

The session's champions were trained by the real pipeline, which logs a scoring run with the
serving snapshot at its end. A runtime whose ``data_path`` does not exist must start from
that run and decide exactly as a runtime that featurised the data file itself.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from service.config import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runtimes(champions, tmp_path_factory):
    """(from the stored snapshot with a missing data file, from the data file, run id)."""
    from service.runtime import Runtime, newest_snapshot_run

    data, uri = champions
    folder = tmp_path_factory.mktemp("snapshot_startup")
    base = load_settings().model_copy(update={"mlflow_tracking_uri": uri, "holdout_share": 0.0})
    stored_settings = base.model_copy(
        update={
            "data_path": folder / "no-such-log.csv",
            "store_url": f"sqlite:///{folder / 'stored.db'}",
        }
    )
    data_settings = base.model_copy(
        update={
            "data_path": data,
            "snapshot": "data",
            "store_url": f"sqlite:///{folder / 'data.db'}",
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVIVAL_MLFLOW_TRACKING_URI", uri)
        run_id = newest_snapshot_run(uri)
        stored = Runtime(stored_settings)
        try:
            built = Runtime(data_settings)
        except BaseException:
            stored.close()
            raise
        yield stored, built, run_id
        stored.close()
        built.close()


def test_training_logged_a_tagged_scoring_run_with_the_snapshot(champions, runtimes):
    from mlflow.tracking import MlflowClient

    _, uri = champions
    _, built, run_id = runtimes
    assert run_id is not None
    run = MlflowClient(uri).get_run(run_id)
    tags = run.data.tags
    assert tags["revival.snapshot"] == "1" and tags["stage"] == "scoring"
    assert tags["snapshot.customers"] == str(len(built.state.snapshot.features))
    assert tags["snapshot.cutoff"] == str(built.state.snapshot.cutoff.date())
    assert MlflowClient(uri).get_run(tags["training.run"]).data.tags["stage"] == "training"


def test_a_replica_without_its_log_starts_from_the_stored_snapshot_and_decides_alike(runtimes):
    from service.engine import regulars
    from service.runtime.snapshot import REGULARS_KEPT
    from service.schemas import BatchRequest, DecideRequest

    stored, built, run_id = runtimes
    s, b = stored.state.snapshot, built.state.snapshot
    assert s.source == run_id and b.source.startswith("data:")
    assert s.cutoff == b.cutoff and s.at == b.at
    assert s.positions == b.positions and s.columns == b.columns
    assert np.array_equal(s.values.view("int64"), b.values.view("int64"))
    assert s.bought == b.bought and s.returned == b.returned
    # the stored history keeps each customer's items in the engine's regulars order
    assert all(s.regulars(c) == regulars(b.bought[c], REGULARS_KEPT) for c in b.bought)

    now = b.at + timedelta(days=3)
    customers = list(b.positions)[:: max(1, len(b.positions) // 40)]
    for cid in customers:
        req = DecideRequest(customer_id=cid, now=now, dry_run=True)
        one, other = stored.decide(req), built.decide(req)
        assert one.model_dump(exclude={"decision_id"}) == other.model_dump(
            exclude={"decision_id"}
        ), cid
    batch = BatchRequest(now=now, limit=20, decisions=False)
    rows = [(r.customer_id, r.priority) for r in stored.decide_batch(batch).rows]
    assert rows == [(r.customer_id, r.priority) for r in built.decide_batch(batch).rows]
    assert len(rows) == 20


def test_reload_with_data_loads_the_newest_stored_snapshot(runtimes):
    stored, _, run_id = runtimes
    before = stored.state.snapshot
    out = stored.reload(data=True)
    assert stored.state.snapshot is not before and stored.state.snapshot.source == run_id
    assert out.customers == len(before.features) and out.snapshot_at == before.at
