"""Short histories: a log of 12–18 months trains with the short-history protocol, chosen
automatically and said (printed and logged), never silently; a long log keeps the standard
one. On the 14-month slice below the standard protocol cannot train at all (no training
cutoff's label window ends before the churn model's validation cutoff)."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest

from core.env import DEFAULT_DATA
from training.pipeline import TrainConfig
from training.protocol import SHORT_HISTORY, choose_protocol

ROOT = Path(__file__).resolve().parents[1]


def test_a_long_log_keeps_the_standard_protocol(synthetic_tx):
    """540 days of log: the standard protocol fits its cutoffs; nothing changes."""
    cfg = TrainConfig(max_cutoffs=12)
    cutoff = synthetic_tx["ts"].max().normalize() - pd.Timedelta(days=90)
    chosen, name, _ = choose_protocol(synthetic_tx, cutoff, cfg)
    assert chosen == cfg and name == "standard"


def test_a_year_of_log_gets_the_short_protocol_and_says_so(synthetic_tx):
    last = synthetic_tx["ts"].max()
    year = synthetic_tx[synthetic_tx["ts"] >= last - pd.Timedelta(days=365)]
    cutoff = last.normalize() - pd.Timedelta(days=90)
    chosen, name, why = choose_protocol(year, cutoff, TrainConfig())
    assert (chosen.min_history_days, chosen.step_days) == tuple(SHORT_HISTORY.values())
    assert chosen.horizon == 90 and name == "short history"
    assert "the standard protocol fits 1 training cutoffs" in why


@pytest.mark.integration
def test_a_14_month_slice_of_the_shared_log_trains_with_the_short_history_protocol(tmp_path):
    raw = pd.read_csv(DEFAULT_DATA, dtype=str)
    ts = pd.to_datetime(raw["InvoiceDate"])
    customer = raw["Customer ID"].map(
        lambda c: isinstance(c, str) and zlib.crc32(c.encode()) % 10 == 0
    )
    keep = customer & (ts >= ts.max() - pd.DateOffset(months=14))
    data = tmp_path / "slice14.csv"
    raw[keep].to_csv(data, index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--data", str(data), "--tracking-uri", uri, "--als-grid", "small", "--no-snapshot"]
    out = subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = next(line for line in out.stdout.splitlines() if line.startswith("protocol: "))
    assert said.startswith("protocol: short history (") and "every 14 d after 90 d" in said
    assert "gate churn v1" in out.stdout and "gate next_purchase v1" in out.stdout

    import mlflow

    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["revival"], filter_string="tags.stage='training'")
    assert run["params.protocol"].iloc[0] == "short history"
    assert run["params.protocol.min_history_days"].iloc[0] == "90"
    mlflow.set_tracking_uri(None)
