"""``python -m training.evaluate``: the champions forward at several origins, cross-sell
included, printed and logged as one per-origin table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_evaluate_prints_and_logs_every_origin_with_cross_sell(champions):
    data, uri = champions
    out = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--data", str(data)]
        + ["--tracking-uri", uri, "--origins", "2", "--experiment", "forward"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| 20")]
    end = pd.read_csv(data, usecols=["InvoiceDate"])["InvoiceDate"].max()
    # the day after the log's last day − 90 days (features.labels.backtest_cutoff)
    newest = (pd.Timestamp(end).normalize() + pd.Timedelta(days=1 - 90)).date()
    older = newest - pd.Timedelta(days=90)
    assert [row.split(" | ")[0] for row in table] == [f"| {newest}", f"| {older}"]
    assert "cross_sell" in out.stdout and "| hybrid | all |" in out.stdout
    # the champions were trained on this very log: said, and tagged
    assert "in-sample" in out.stderr

    mlflow.set_tracking_uri(uri)
    try:
        run = mlflow.search_runs(experiment_names=["forward"]).iloc[0]
        assert run["tags.in_sample"] == "true"
        assert run["params.eval.origins"] == f"{newest},{older}"
        history = MlflowClient(uri).get_metric_history(
            run["run_id"], "cross_sell.hybrid.all.recall_at_10.by_origin"
        )
        assert sorted(h.step for h in history) == [0, 1]
        assert 0.0 < run["metrics.cross_sell.hybrid.all.recall_at_10"] < 1.0
    finally:
        mlflow.set_tracking_uri(None)
