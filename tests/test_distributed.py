"""The feature snapshot on a Dask ``LocalCluster`` (2 worker processes, a memory limit each)
against the local engine: every feature of every customer of the shared log, read from an
exported Parquet dataset and scattered from a loaded log (as training does), and the CLI's
``--export`` then ``--engine dask --scheduler ADDRESS``; the training frames held by the
workers against the local ones, and what a model reads of them (``TrainingRows``)."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.env import DEFAULT_DATA, PROJECT_ROOT
from features.contracts import DataContractError, validate_transactions
from features.cutoff import in_time_order
from features.distributed import ClusterFrames, ClusterLog, build_features_dask
from features.labels import LocalFrames
from features.loaders import load_transactions
from features.snapshot import build_features, coded_ids
from servable.training_rows import FrameRows

pytestmark = pytest.mark.integration

CUTOFF = "2011-06-02"


def _features(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "features", "--cutoff", CUTOFF, *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shared log cleaned and exported by the CLI: ``(folder, its stdout)``."""
    folder = tmp_path_factory.mktemp("export") / "log"
    return folder, _features("--data", str(DEFAULT_DATA), "--export", str(folder))


def test_the_cluster_builds_every_feature_of_every_customer_as_the_local_engine(
    dask_client, exported
):
    folder, _ = exported
    assert len(list(folder.glob("*.parquet"))) == 2  # 622,943 rows, 500,000 per part
    tx = validate_transactions(pd.read_parquet(folder))
    local = build_features(tx, pd.Timestamp(CUTOFF))
    remote = build_features_dask(folder, pd.Timestamp(CUTOFF), dask_client, partitions=8)
    assert len(local) > 4_000
    _assert_same_features(local, remote)


def _assert_same_features(local: pd.DataFrame, remote: pd.DataFrame) -> None:
    """Every feature of every customer, equal up to the order in which lines with the same
    timestamp are summed."""
    assert list(remote.columns) == list(local.columns)
    assert remote.index.equals(local.index)
    assert (remote.dtypes == local.dtypes).all()
    a, b = local.to_numpy(), remote.to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


@pytest.fixture(scope="module")
def coded_log():
    return coded_ids(in_time_order(load_transactions(DEFAULT_DATA).transactions))


def test_a_scattered_log_builds_each_cutoffs_snapshot_as_the_local_engine(dask_client, coded_log):
    tx = coded_log
    log = ClusterLog.scatter(dask_client, tx, partitions=6)
    try:
        assert log.parts.npartitions == 6
        assert len(log.parts) == len(tx)  # every line sent once
        for cutoff in ("2010-03-01", CUTOFF, "2011-12-10"):  # the last: after the whole log
            t = pd.Timestamp(cutoff)
            local = build_features(tx, t)
            assert len(local) > 1_000
            _assert_same_features(local, log.features(t))
    finally:
        log.release()


def test_the_workers_training_frame_is_the_local_one_and_reads_the_same(dask_client, coded_log):
    tx = coded_log
    stacked = [pd.Timestamp(t) for t in ("2010-12-01", "2011-01-01", "2011-02-01", "2011-03-01")]
    bound, end = pd.Timestamp(CUTOFF), pd.Timestamp("2011-12-10")
    local = LocalFrames(tx, stacked, [end])
    frames = ClusterFrames(dask_client, tx, stacked, [end])
    _assert_same_features(local.snapshots[end], frames.snapshots[end])
    assert set(frames.snapshots) == {end}  # only the scored snapshot came to the driver
    for observed_until in (bound, None):  # a backtest origin's frame, the refit's
        here = FrameRows(local.training_frame(stacked, 90, observed_until))
        there = frames.training_frame(stacked, 90, observed_until)
        _assert_same_rows(here, there, frames.log.customer_ids)
    frames.keep_only(end)  # the log and snapshots dropped: the frame built from them lives
    assert frames.log is None and set(frames.snapshots) == {end}
    assert len(there.at(there.newest())) == len(here.at(here.newest()))


def _assert_same_rows(here: FrameRows, there, ids: pd.Index) -> None:
    """The same rows in another order: each frame sorted by cutoff and customer id, then
    every column equal (features up to the summation order, labels exactly); the columns
    and row-wise functions a model reads agree too."""
    assert there.columns == here.columns and len(there) == len(here)
    assert there.newest() == here.newest()
    remote = there.client.compute(there.frame).result()
    remote["customer_id"] = ids.take(remote["customer_id"].astype(int))
    key = ["cutoff", "customer_id"]
    a = here.frame.astype({"customer_id": str}).sort_values(key, ignore_index=True)
    b = remote.astype({"customer_id": str}).sort_values(key, ignore_index=True)
    labels = ["churn", "buy_30d", "days_to_next", "next_observed"]
    pd.testing.assert_frame_equal(a[key + labels], b[key + labels], check_exact=True)
    assert a["next_observed"].any() and not a["next_observed"].all()
    features = a.columns.difference(key + labels)
    _assert_same_features(a[features].astype(float), b[features].astype(float))
    # what a model reads: columns and a row-wise function, in the frame's own row order
    for name in ("churn", "days_to_next"):
        assert np.isclose(np.asarray(there.column(name)).sum(), here.column(name).sum())
    fn = functools.partial(_columns, names=["recency_days", "tenure_days", "churn"])
    wide = np.asarray(there.rowwise(fn, 3))
    assert wide.shape == (len(here), 3)
    assert np.allclose(np.sort(wide, axis=0), np.sort(fn(here.frame), axis=0), rtol=1e-12)


def _columns(rows: pd.DataFrame, names: list[str]) -> np.ndarray:
    return rows[names].to_numpy(float)


def test_a_scattered_log_without_items_and_one_not_coded(dask_client):
    tx = pd.DataFrame(
        {
            "customer_id": ["b", "a", "b", "c", "a", "a"],
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o5"],
            "ts": pd.to_datetime(
                ["2011-01-03", "2011-01-05", "2011-02-01", "2011-02-02", "2011-03-01", "2011-03-01"]
            ),
            "quantity": [1.0, 2.0, 1.0, -1.0, 3.0, 1.0],
            "unit_price": [5.0, 2.0, 7.0, 4.0, 1.0, 9.0],
        }
    )
    tx = validate_transactions(tx)  # item_id: all missing
    t = pd.Timestamp("2011-04-01")
    with pytest.raises(ValueError, match="coded_ids"):
        ClusterLog.scatter(dask_client, tx)
    log = ClusterLog.scatter(dask_client, coded_ids(tx), partitions=3)
    try:
        remote = log.features(t)
    finally:
        log.release()
    local = build_features(tx, t)
    assert list(remote.index) == ["a", "b"]  # c only returned: no purchase, no row
    assert remote["distinct_items"].isna().all()
    _assert_same_features(local, remote)


def test_the_cli_on_a_scheduler_prints_the_local_engines_table(dask_client, exported):
    folder, local = exported
    remote = _features(
        "--data", str(folder), "--engine", "dask", "--scheduler", dask_client.scheduler.address
    )
    assert "dask: 2 workers" in remote
    table = local[local.index("snapshot at") :]
    assert table.split("(")[0] == remote[remote.index("snapshot at") :].split("(")[0]
    assert table.split(")", 1)[1] == remote[remote.index("snapshot at") :].split(")", 1)[1]


def test_a_dataset_without_a_contract_column_or_not_parquet_is_refused(dask_client, tmp_path):
    frame = pd.DataFrame(
        {"customer_id": ["c1"], "ts": pd.to_datetime(["2011-01-01"]), "quantity": [1.0]}
    )
    folder = tmp_path / "bad"
    folder.mkdir()
    frame.to_parquet(folder / "part-0.parquet", index=False)
    with pytest.raises(DataContractError, match="unit_price"):
        build_features_dask(folder, pd.Timestamp(CUTOFF), dask_client)
    with pytest.raises(DataContractError, match="Parquet"):
        build_features_dask(DEFAULT_DATA, pd.Timestamp(CUTOFF), dask_client)
