"""The stored serving snapshot (features.serving, features.stored) on a hand-made log.

Known answers are worked out by hand: epochs are the London wall-clock times of the log
as UTC seconds (GMT in January and March, BST = UTC+1 in July); the cut-off is the day
after the last transaction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.contracts import validate_transactions
from features.loaders import CleaningReport, Loaded
from features.serving import build_serving
from features.snapshot import build_features, coded_ids
from features.stored import StoredSnapshotError, read_stored, write_stored

JAN_10_1200 = 1610280000.0  # 2021-01-10 12:00 GMT
MAR_01_0830 = 1614587400.0  # 2021-03-01 08:30 GMT
JUL_01_1000 = 1625130000.0  # 2021-07-01 10:00 BST = 09:00 UTC

ROWS = [  # customer, order, ts, item, quantity, unit price
    ("A", "a1", "2021-01-10 12:00", "X", 2, 1.5),
    ("A", "a1", "2021-01-10 12:00", "Y", 1, 4.0),
    ("A", "a2", "2021-07-01 10:00", "X", 1, 1.5),
    ("A", "a3", "2021-03-01 08:30", "Y", -1, 4.0),
    ("B", "b1", "2021-03-01 08:30", "Z", 3, 0.1),
]


def hand_log() -> Loaded:
    df = pd.DataFrame(
        ROWS, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    )
    tx = validate_transactions(df, "hand")
    report = CleaningReport(source="hand", rows_in=len(df), rows_kept=len(df), customers=2)
    items = pd.DataFrame({"item_id": ["X", "Y", "Z"], "name": ["Mug", "Lamp", "Pen"]})
    return Loaded(tx, report, items)


def bits(frame: pd.DataFrame) -> np.ndarray:
    """The frame's float64 values as raw bits (NaN compares equal to itself)."""
    return frame.to_numpy(dtype="float64").view("int64")


def test_the_serving_snapshot_has_the_hand_worked_item_history():
    data = build_serving(hand_log(), "Europe/London")
    assert data.cutoff == pd.Timestamp("2021-07-02")
    assert data.at.isoformat() == "2021-07-01T23:00:00+00:00"
    assert data.bought == {
        "A": {"X": (JUL_01_1000, 2), "Y": (JAN_10_1200, 1)},
        "B": {"Z": (MAR_01_0830, 1)},
    }
    assert data.returned == {"A": {"Y": MAR_01_0830}}
    assert data.item_names == {"X": "Mug", "Y": "Lamp", "Z": "Pen"}
    assert data.features.loc["A", "monetary_all"] == 8.5
    assert data.features.loc["B", "monetary_all"] == 3 * 0.1  # 0.30000000000000004


def test_a_training_runs_coded_log_gives_the_same_serving_snapshot():
    """Training hands the serving snapshot its log with ids and labels integer-coded."""
    plain = hand_log()
    plain.transactions["country"] = ["GB", "GB", "FR", "GB", "DE"]
    coded = dataclasses.replace(plain, transactions=coded_ids(plain.transactions))
    assert isinstance(coded.transactions["country"].dtype, pd.CategoricalDtype)
    a, b = build_serving(plain, "Europe/London"), build_serving(coded, "Europe/London")
    pd.testing.assert_frame_equal(b.features, a.features, check_exact=True)
    assert b.bought == a.bought and b.returned == a.returned
    assert b.countries == a.countries == {"A": "GB", "B": "DE"}


def test_an_earlier_cutoff_cuts_the_item_history_too():
    data = build_serving(hand_log(), "Europe/London", cutoff=pd.Timestamp("2021-06-01"))
    assert data.bought == {
        "A": {"X": (JAN_10_1200, 1), "Y": (JAN_10_1200, 1)},
        "B": {"Z": (MAR_01_0830, 1)},
    }
    assert data.returned == {"A": {"Y": MAR_01_0830}}
    assert data.features.loc["A", "orders_all"] == 1


def test_store_and_load_round_trip_exactly(tmp_path: Path):
    loaded = hand_log()
    data = build_serving(loaded, "Europe/London")
    meta = write_stored(data, tmp_path / "snap")
    back = read_stored(tmp_path / "snap")

    expected = build_features(loaded.transactions, pd.Timestamp("2021-07-02"))
    pd.testing.assert_frame_equal(back.features, expected, check_exact=True)
    assert np.array_equal(bits(back.features), bits(expected))
    assert np.isnan(back.features.loc["B", "gap_cv"])  # NaN survives
    assert back.bought == data.bought and back.returned == data.returned
    assert back.cutoff == pd.Timestamp("2021-07-02") and back.at == data.at
    assert back.timezone == "Europe/London" and back.item_names == data.item_names
    assert back.report == loaded.report
    assert meta["customers"] == 2 and meta["bought_rows"] == 3 and meta["returned_rows"] == 1


def test_a_damaged_or_foreign_snapshot_is_refused_by_name(tmp_path: Path):
    folder = tmp_path / "snap"
    write_stored(build_serving(hand_log(), "Europe/London"), folder)
    raw = bytearray((folder / "bought.parquet").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "bought.parquet").write_bytes(bytes(raw))
    with pytest.raises(StoredSnapshotError, match="bought.parquet"):
        read_stored(folder)

    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(meta | {"schema_version": 99}))
    with pytest.raises(StoredSnapshotError, match="schema_version 99"):
        read_stored(folder)


# --------------------------------------------------------------------------- via MLflow


@pytest.fixture
def hand_csv(tmp_path: Path) -> Path:
    path = tmp_path / "hand.csv"
    pd.DataFrame(
        ROWS, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    ).to_csv(path, index=False)
    return path


def test_score_cli_logs_a_snapshot_run_the_service_loads(tmp_path: Path, hand_csv: Path, caplog):
    from service.config import load_settings
    from service.runtime import build_snapshot, load_snapshot, newest_snapshot_run
    from training.score import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = load_settings().model_copy(
        update={"data_path": hand_csv, "mlflow_tracking_uri": uri}
    )
    try:
        with caplog.at_level(logging.WARNING, logger="service.runtime.snapshot"):
            fallback = load_snapshot(settings)  # nothing stored yet: built from data_path
        assert fallback.source == f"data:{hand_csv}"
        assert "no stored snapshot" in caplog.text and "python -m training" in caplog.text

        args = ["--data", str(hand_csv), "--tracking-uri", uri, "--experiment", "t"]
        assert main([*args, "--snapshot-only"]) == 0
        run_id = newest_snapshot_run(uri)
        assert run_id is not None
        run = mlflow.MlflowClient(uri).get_run(run_id)
        assert run.data.tags["revival.snapshot"] == "1"
        assert run.data.tags["snapshot.cutoff"] == "2021-07-02"
        assert run.data.params["snapshot.customers"] == "2"

        stored = load_snapshot(settings.model_copy(update={"data_path": tmp_path / "gone.csv"}))
        built = build_snapshot(settings)
        assert stored.source == run_id and built.source.startswith("data:")
        assert np.array_equal(stored.values.view("int64"), built.values.view("int64"))
        assert stored.positions == built.positions and stored.columns == built.columns
        assert stored.bought == built.bought and stored.returned == built.returned
        assert [stored.regulars(c) for c in ("A", "B", "nobody")] == [["X", "Y"], ["Z"], []]
        assert [built.regulars(c) for c in ("A", "B", "nobody")] == [["X", "Y"], ["Z"], []]
        assert stored.at == built.at and stored.cutoff == built.cutoff
        assert stored.origin["name"] == "hand.csv"

        with pytest.raises(StoredSnapshotError, match="no-such-run"):
            load_snapshot(settings, "no-such-run")
        assert load_snapshot(settings, "data").source == f"data:{hand_csv}"
    finally:
        mlflow.set_tracking_uri(None)
