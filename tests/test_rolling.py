"""The rolling-origin protocol: which origins a log gets, per-origin losses and the gate."""

from __future__ import annotations

import pandas as pd
import pytest

from features.labels import backtest_cutoff
from training.pipeline import TrainConfig
from training.protocol import Origin, plan_origins
from training.rolling import RollingResult, rolling_markdown


def test_origins_are_one_horizon_apart_and_short_ones_are_left_out_with_a_reason(synthetic_tx):
    newest = backtest_cutoff(synthetic_tx, 90)
    origins, dropped = plan_origins(synthetic_tx, newest, TrainConfig(), 4)
    # 540 days of log: two origins keep a purged validation fold, the two oldest do not
    assert [o.cutoff for o in origins] == [newest, newest - pd.Timedelta(days=90)]
    assert [o.protocol for o in origins] == ["standard", "short history"]
    for o in origins:  # every training label window ends by the origin
        assert max(o.train_cutoffs) + pd.Timedelta(days=90) <= o.cutoff
    assert len(dropped) == 2
    assert str((newest - pd.Timedelta(days=180)).date()) in dropped[0]
    assert "purged validation fold" in dropped[0] and "no training cutoff fits" in dropped[1]


def test_an_origin_with_little_history_gets_the_short_history_protocol(synthetic_tx):
    newest = backtest_cutoff(synthetic_tx, 90)
    origins, _ = plan_origins(synthetic_tx, newest, TrainConfig(min_history_days=240), 2)
    assert [o.protocol for o in origins] == ["standard", "short history"]
    short = origins[1]
    cut = short.train_cutoffs
    steps = {(a - b).days for a, b in zip(cut[:-1], cut[1:], strict=True)}
    assert steps == {14}


def _result(values: dict[str, list[float]]) -> RollingResult:
    """A rolling result of churn AUCs per model over origins (newest first)."""
    labels = ["2011-06-02", "2011-03-04", "2010-12-04"]
    rows = [
        {"origin": o, "task": "churn", "model": m, "population": "all", "metric": "auc", "value": v}
        for m, vs in values.items()
        for o, v in zip(labels, vs, strict=True)
    ]
    origins = [Origin(pd.Timestamp(o), 90, (), "standard", "") for o in labels]
    return RollingResult(origins, pd.DataFrame(rows), {}, None)


def test_losses_count_the_origins_where_the_model_does_not_beat_each_baseline():
    r = _result({"model": [0.80, 0.75, 0.70], "bgnbd": [0.79, 0.76, 0.70], "recency": [0.6] * 3})
    assert r.losses("churn", "auc") == {"bgnbd": (2, 3), "recency": (0, 3)}  # a tie is a loss
    mean = r.table
    assert mean.loc[mean.model == "model", "value"].item() == pytest.approx(0.75)


def test_the_table_has_a_row_per_origin_the_mean_and_the_wins():
    r = _result({"model": [0.80, 0.75, 0.70], "bgnbd": [0.79, 0.76, 0.70], "recency": [0.6] * 3})
    md = rolling_markdown(r).splitlines()
    rows = [line for line in md if line.startswith("| 20")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2011-06-02", "| 2011-03-04", "| 2010-12-04"]
    assert rows[0].split(" | ")[3:6] == ["0.8000", "0.7900", "0.6000"]  # AUC model, BG/NBD, recency
    mean = next(line for line in md if line.startswith("| **mean**"))
    assert mean.split(" | ")[3] == "0.7500"
    assert md[-1] == "origins won: churn beats bgnbd on 1/3"
