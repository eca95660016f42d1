"""Training through the Dask engine (``lightgbm.dask`` on a ``LocalCluster`` of 2 worker
processes with a memory limit each) against the local engine.

Stated tolerance (the distributed learner bins each feature from every worker's sample
and merges histograms, so trees differ slightly from the local ones): on the same data,
registered models' probabilities differ by at most 0.03 on average per customer and
correlate ≥ 0.98; the expected days to the next order (an L1 regression with a flat loss)
differ by at most 15 % of their mean and correlate ≥ 0.85; backtest AUCs within 0.02.
"""

from __future__ import annotations

import os
import subprocess
import sys

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from dask.utils import key_split
from distributed import get_task_stream
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from core.env import PROJECT_ROOT
from features.distributed import connect
from features.loaders import load_transactions
from features.snapshot import build_features
from servable.propensity import LOCAL
from training.backtest import metric_value
from training.dask_engine import DaskTrainer
from training.pipeline import TrainConfig, train

PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": 7,
    "num_threads": 1,
}


def _problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy binary problem: a booster overfits it after a few dozen rounds."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.5, size=n) > 0).astype(float)
    return x, y


def test_early_stopping_on_the_cluster_keeps_the_best_round_of_the_validation_loss(dask_client):
    train_set, valid = _problem(6_000, 1), _problem(2_000, 2)
    names = [f"f{i}" for i in range(6)]
    trainer = DaskTrainer(dask_client, block=40)
    booster = trainer.early_stopped(PARAMS, train_set, valid, names, max_rounds=1_000, patience=30)
    grown = booster.num_trees()
    assert grown < 1_000  # it stopped early ...
    assert booster.best_iteration + 30 <= grown <= booster.best_iteration + 30 + 40  # ... in time
    losses = [  # the validation log loss after each round, computed independently
        np.mean(
            -valid[1] * np.log(p := booster.predict(valid[0], num_iteration=k))
            - (1 - valid[1]) * np.log(1 - p)
        )
        for k in range(1, grown + 1)
    ]
    assert booster.best_iteration == int(np.argmin(losses)) + 1
    assert booster.feature_name() == names
    local = LOCAL.early_stopped(PARAMS, train_set, valid, names, 1_000, 30)
    auc = [roc_auc_score(valid[1], b.predict(valid[0])) for b in (booster, local)]
    assert abs(auc[0] - auc[1]) < 0.01


def test_a_fixed_number_of_rounds_on_the_cluster(dask_client):
    x, _ = _problem(3_000, 3)
    y = 2.0 * x[:, 0] + np.random.default_rng(4).laplace(size=len(x))  # an L1 target
    regression, names = {**PARAMS, "objective": "regression_l1"}, list("abcdef")
    booster = DaskTrainer(dask_client).rounds(regression, x, y, names, 25)
    assert isinstance(booster, lgb.Booster) and booster.num_trees() == 25
    local = LOCAL.rounds(regression, x, y, names, 25)
    assert np.corrcoef(booster.predict(x), local.predict(x))[0, 1] > 0.98


@pytest.mark.integration
class TestTrainingOnDask:
    """``python -m training --engine dask --scheduler ADDRESS`` end to end on every 4th
    customer of the real log, against ``train()`` on the local engine."""

    @pytest.fixture(scope="class")
    def runs(self, dask_client, real_log_slice, tmp_path_factory):
        data = real_log_slice(4)
        root = tmp_path_factory.mktemp("engines")
        uris = {e: f"sqlite:///{root / e}.db" for e in ("local", "dask")}
        common = ["--data", str(data), "--origins", "1", "--max-cutoffs", "4"]
        common += ["--als-grid", "small", "--no-snapshot", "--force", "--experiment", "engines"]
        address = dask_client.scheduler.address
        with get_task_stream(dask_client) as tasks:  # every client's tasks on the scheduler
            out = subprocess.run(
                [sys.executable, "-m", "training", *common, "--tracking-uri", uris["dask"]]
                + ["--engine", "dask", "--scheduler", address],
                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        ran = {key_split(t["key"]) for t in tasks.data}
        cfg = TrainConfig(
            data=data,
            tracking_uri=uris["local"],
            origins=1,
            max_cutoffs=4,
            als_grid="small",
            snapshot_timezone=None,
            force=True,
            experiment="engines",
        )
        local = train(cfg)
        yield data, uris, out.stdout, local, ran
        mlflow.set_tracking_uri(None)

    def test_the_run_names_its_engine_and_registers_every_model(self, runs, dask_client):
        _, uris, stdout, _, _ = runs
        address = dask_client.scheduler.address
        assert (
            f"engine: snapshots, training frames and boosters on dask: 2 workers at {address}"
            in stdout
        )
        for engine, uri in uris.items():
            client = MlflowClient(uri)
            for name in ("churn", "next_purchase", "cross_sell"):
                assert client.get_model_version(name, "1").status == "READY"
            run = client.search_runs(
                [client.get_experiment_by_name("engines").experiment_id],
                filter_string="tags.stage = 'training'",
            )[0]
            assert run.data.params["train.engine"] == engine

    def test_the_snapshots_frames_and_boosters_ran_on_the_workers(self, runs):
        ran = runs[-1]
        assert "customer_features" in ran, sorted(ran)  # every cutoff's snapshot, per part
        # task names drop the functions' leading underscore
        assert "finished" in ran, sorted(ran)  # each part's snapshot, with the shop's totals
        assert "stacked" in ran, sorted(ran)  # each part's training frame (features + labels)
        # each part's model matrix (with its BG/NBD columns; its task fused into the array's)
        assert any("matrix" in k for k in ran), " ".join(sorted(ran))
        assert "train_part" in ran, " ".join(sorted(ran))  # lightgbm.dask's per-worker training

    def test_registered_models_predict_as_the_local_engines_within_tolerance(self, runs):
        data, uris, _, _, _ = runs
        tx = load_transactions(data).transactions
        snapshot = build_features(tx, tx["ts"].max().normalize() + pd.Timedelta(days=1))
        out = {}
        for engine, uri in uris.items():
            mlflow.set_tracking_uri(uri)
            out[engine] = {
                n: mlflow.pyfunc.load_model(f"models:/{n}/1").predict(snapshot)
                for n in ("churn", "next_purchase")
            }
        for name, column in (("churn", "p_churn"), ("next_purchase", "p_buy_30d")):
            a, b = out["local"][name][column], out["dask"][name][column]
            assert (a - b).abs().mean() <= 0.03, (name, (a - b).abs().mean())
            assert np.corrcoef(a, b)[0, 1] >= 0.98
        a, b = (
            out["local"]["next_purchase"]["expected_days"],
            out["dask"]["next_purchase"]["expected_days"],
        )
        assert (a - b).abs().mean() <= 0.15 * a.mean()
        assert np.corrcoef(a, b)[0, 1] >= 0.85

    def test_backtest_metrics_agree(self, runs):
        _, uris, _, local, _ = runs
        client = MlflowClient(uris["dask"])
        run = client.search_runs(
            [client.get_experiment_by_name("engines").experiment_id],
            filter_string="tags.stage = 'training'",
        )[0]
        for task in ("churn", "next_purchase"):
            remote = run.data.metrics[f"{task}.model.all.auc"]
            assert abs(remote - metric_value(local.metrics, task, "model", "auc")) <= 0.02


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"]
        + ["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-snapshot"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env=os.environ | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )  # fmt: skip
    assert out.returncode == 2
    assert "error: scheduler 'tcp://127.0.0.1:9': cannot connect" in out.stderr


def test_without_dask_installed_the_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    with pytest.raises(ValueError, match=r"pip install -e '\.\[dask\]'"), connect("local"):
        pass
