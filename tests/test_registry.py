"""Champion gate and pyfunc registration against a real SQLite MLflow store in a temp dir."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.labels import build_training_frame, training_cutoffs
from features.snapshot import build_features, model_columns
from servable.propensity import ChurnModel, GBMParams
from training.registry import (
    CHAMPION,
    champion_gate,
    champion_version,
    load_champion,
    log_snapshot_model,
    use_store,
)


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    use_store(uri, "gate-test")
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def churn_and_snapshot(synthetic_tx):
    cutoff = pd.Timestamp("2021-03-01")
    cutoffs = training_cutoffs(synthetic_tx, cutoff, horizon=60, step_days=20, max_cutoffs=6)
    frame = build_training_frame(synthetic_tx, cutoffs, horizon=60, observed_until=cutoff)
    model = ChurnModel(horizon=60, params=GBMParams(max_rounds=50, early_stopping=10)).fit(
        frame, model_columns(frame)
    )
    return model, build_features(synthetic_tx, cutoff)


def _register(model, snapshot) -> str:
    with mlflow.start_run():
        info = log_snapshot_model(model, "churn", snapshot, registered_model_name="churn")
    return str(info.registered_model_version)


def test_gate_moves_alias_only_for_a_better_model(store, churn_and_snapshot):
    model, snap = churn_and_snapshot
    v1 = _register(model, snap)
    d1 = champion_gate(store, "churn", v1, "auc", 0.80, {"bgnbd": 0.78})
    assert d1.promoted and "no champion yet" in d1.reason
    assert str(champion_version(store, "churn").version) == v1

    v2 = _register(model, snap)
    d2 = champion_gate(store, "churn", v2, "auc", 0.79, {"bgnbd": 0.78})
    assert not d2.promoted and "does not beat champion" in d2.reason
    assert str(champion_version(store, "churn").version) == v1  # alias untouched

    v3 = _register(model, snap)
    d3 = champion_gate(store, "churn", v3, "auc", 0.80, {"bgnbd": 0.78})
    assert not d3.promoted  # a tie is not better
    assert str(champion_version(store, "churn").version) == v1

    v4 = _register(model, snap)
    d4 = champion_gate(store, "churn", v4, "auc", 0.82, {"bgnbd": 0.78})
    assert d4.promoted and d4.champion_version == v1
    assert str(champion_version(store, "churn").version) == v4
    tags = store.get_model_version("churn", v4).tags
    assert tags["gate.promoted"] == "true" and float(tags["backtest.auc"]) == 0.82


def test_gate_requires_beating_baselines_unless_forced(store, churn_and_snapshot):
    model, snap = churn_and_snapshot
    v1 = _register(model, snap)
    d = champion_gate(store, "churn", v1, "auc", 0.80, {"bgnbd": 0.81, "recency": 0.7})
    assert not d.promoted and "bgnbd" in d.reason and "recency" not in d.reason
    assert champion_version(store, "churn") is None
    forced = champion_gate(store, "churn", v1, "auc", 0.80, {"bgnbd": 0.81}, force=True)
    assert forced.promoted and "forced" in forced.reason
    assert str(champion_version(store, "churn").version) == v1


def test_gate_refuses_a_model_that_wins_on_average_but_loses_on_most_origins(
    store, churn_and_snapshot
):
    model, snap = churn_and_snapshot
    v1 = _register(model, snap)
    # mean 0.80 beats bgnbd's 0.79, but bgnbd wins on 2 of the 3 origins
    d = champion_gate(
        store, "churn", v1, "auc", 0.80, {"bgnbd": 0.79}, origin_losses={"bgnbd": (2, 3)}
    )
    assert not d.promoted and "most backtest origins" in d.reason and "2 of 3" in d.reason
    assert champion_version(store, "churn") is None
    ok = champion_gate(
        store, "churn", v1, "auc", 0.80, {"bgnbd": 0.79}, origin_losses={"bgnbd": (1, 3)}
    )
    assert ok.promoted


def test_champion_loads_from_registry_with_identical_predictions(store, churn_and_snapshot):
    model, snap = churn_and_snapshot
    v = _register(model, snap)
    champion_gate(store, "churn", v, "auc", 0.9, {}, force=True)
    loaded = load_champion("churn", CHAMPION)
    np.testing.assert_array_equal(loaded.predict(snap), model.predict(snap))
    pyfunc = mlflow.pyfunc.load_model(f"models:/churn@{CHAMPION}")
    out = pyfunc.predict(snap[model.input_columns])
    np.testing.assert_allclose(out["p_churn"].to_numpy(), model.predict(snap))
