"""A tiny end-to-end training run on a slice of the real log, twice, into a temp registry."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from training.pipeline import TrainConfig, missing_champions, summary_json, train
from training.registry import CHAMPION

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slice_csv(real_log_slice):
    """Every 8th customer of the real log (by a stable hash), in the contract's columns."""
    return real_log_slice(8)


@pytest.fixture(scope="module")
def runs(slice_csv, tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    cfg = dict(
        data=slice_csv,
        tracking_uri=uri,
        als_grid="small",
        max_cutoffs=4,
        origins=2,
        experiment="e2e",
    )
    assert set(missing_champions(uri)) == {"churn", "next_purchase", "cross_sell"}
    first = train(TrainConfig(**cfg, force_first=True))
    second = train(TrainConfig(**cfg, force_first=True))
    yield uri, first, second
    mlflow.set_tracking_uri(None)


def test_first_run_registers_all_three_champions(runs):
    uri, first, _ = runs
    assert missing_champions(uri) == []
    client = MlflowClient(uri)
    for name in ("churn", "next_purchase", "cross_sell"):
        v = client.get_model_version_by_alias(name, CHAMPION)
        assert str(v.version) == "1"
        assert any(k.startswith("backtest.") for k in v.tags)
    assert {d.model for d in first.decisions if d.promoted} == {
        "churn",
        "next_purchase",
        "cross_sell",
    }


def test_backtest_table_has_every_model_and_population(runs):
    _, first, _ = runs
    t = first.metrics
    for task, models in {
        "churn": {"model", "bgnbd", "recency"},
        "next_purchase": {"model", "bgnbd", "recency", "own_cycle"},
        "cross_sell": {"hybrid", "als", "knn", "popularity"},
    }.items():
        assert set(t[t.task == task].model) == models
    assert set(t.population) == {"all", "active_365d"}
    auc = t[(t.task == "churn") & (t.model == "model") & (t.metric == "auc")]["value"]
    assert (auc > 0.6).all()


def test_run_logs_params_metrics_and_plots(runs):
    uri, first, _ = runs
    client = MlflowClient(uri)
    parent = client.get_run(first.run_id)
    assert parent.data.params["data.sha256"] == first.fingerprint["data.sha256"]
    assert "churn.model.all.auc" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'"
    )
    names = {r.info.run_name for r in children}
    assert names == {"churn", "next_purchase", "cross_sell"}
    churn_run = next(r for r in children if r.info.run_name == "churn")
    plots = {f.path for f in client.list_artifacts(churn_run.info.run_id, "plots")}
    assert {"plots/lift.png", "plots/calibration.png", "plots/feature_importance.png"} <= plots
    assert "plots/calibration_by_origin.png" in plots


def test_the_rolling_origin_table_is_per_origin_and_its_mean_is_gated(runs):
    uri, first, _ = runs
    by = first.by_origin
    origins = first.fingerprint["backtest.origins"].split(",")
    assert len(origins) == 2 and sorted(set(by.origin), reverse=True) == origins
    auc = by[(by.task == "churn") & (by.model == "model") & (by.metric == "auc")]
    auc = auc[auc.population == "all"]
    mean = first.metrics
    logged = mean[
        (mean.task == "churn")
        & (mean.model == "model")
        & (mean.metric == "auc")
        & (mean.population == "all")
    ]["value"].item()
    assert logged == pytest.approx(auc["value"].mean())
    client = MlflowClient(uri)
    assert client.get_run(first.run_id).data.metrics["churn.model.all.auc"] == pytest.approx(logged)
    history = client.get_metric_history(first.run_id, "churn.model.all.auc.by_origin")
    assert sorted(h.step for h in history) == [0, 1]
    arts = {f.path for f in client.list_artifacts(first.run_id)}
    assert {"rolling_origin.md", "backtest_by_origin.csv"} <= arts
    version = client.get_model_version_by_alias("churn", CHAMPION)
    assert version.tags["backtest.origins"] == ",".join(origins)


def test_second_identical_run_keeps_the_champion(runs):
    uri, _, second = runs
    client = MlflowClient(uri)
    for d in second.decisions:
        assert not d.promoted, d
        assert "does not beat champion" in d.reason or "baseline" in d.reason
        assert str(client.get_model_version_by_alias(d.model, CHAMPION).version) == "1"


def test_every_stage_has_its_column_in_the_scale_benchmark(runs):
    from benchmarks.scale import STAGE_KINDS, _row, stage_kind

    _, first, _ = runs
    kinds = {m.name: stage_kind(m.name) for m in first.stages}
    assert "other" not in kinds.values(), kinds
    assert {"load", "features", "propensity", "cross-sell", "refit", "mlflow"} <= set(
        kinds.values()
    )
    # the table's row of this run: log, lines, customers, wall, peak, peak in, kinds, gates
    cells = _row(1, json.loads(summary_json(first)), 10.0, 512.0).strip("| ").split(" | ")
    assert len(cells) == 7 + len(STAGE_KINDS)
    top = max(first.stages, key=lambda m: m.peak_rss_mib)
    assert cells[5] == f"{stage_kind(top.name)} ({top.peak_rss_mib / 1024:.2f} GB)"
