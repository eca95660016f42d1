"""Integration tests of the features package on the real data in ../shared/data.

* UCI Online Retail II (Chen, Sain & Guo 2012, doi:10.24432/C5CG6D, CC BY 4.0), the
  extract to 2011-08-31 described in ../shared/data/README.md;
* Kevin Hillstrom's MineThatData e-mail experiment (2008).

Expected numbers are the ones the data README documents.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.env import DEFAULT_DATA, HILLSTROM_DATA, PROJECT_ROOT
from features.__main__ import stage_tier_table
from features.labels import backtest_cutoff, build_training_frame, training_cutoffs
from features.lifecycle import STAGES, TIERS, assign_lifecycle
from features.loaders import (
    hillstrom_arm_summary,
    load_csv,
    load_hillstrom,
    load_online_retail,
    load_transactions,
)
from features.snapshot import FEATURE_COLUMNS, build_features

pytestmark = pytest.mark.integration

RETAIL_SHA256 = "c6fca466fb07f924704e7659beca9f5c2b0dd8fa74d0537c51904c67f7740a9c"
BACKTEST_CUTOFF = pd.Timestamp("2011-06-03")
ITEM_COLUMNS = ["distinct_items", "top_family_share", "price_index"]


def reason(report, phrase: str) -> int:
    hits = [n for r, n in report.dropped.items() if phrase in r]
    assert len(hits) == 1, (phrase, report.dropped)
    return hits[0]


@pytest.fixture(scope="module")
def retail():
    return load_online_retail(DEFAULT_DATA)


@pytest.fixture(scope="module")
def snapshot(retail):
    return build_features(retail.transactions, BACKTEST_CUTOFF)


# --------------------------------------------------------------------------- the log


def test_report_arithmetic(retail):
    rep, tx = retail.report, retail.transactions
    assert rep.sha256 == RETAIL_SHA256
    assert rep.rows_in == 846_166  # README: 846,166 rows
    assert rep.rows_in == rep.rows_kept + sum(rep.dropped.values())
    assert rep.rows_kept == len(tx)
    assert rep.customers == tx["customer_id"].nunique()
    assert 4_000 < rep.customers < 6_000
    assert rep.orders == tx["order_id"].nunique()
    assert rep.items == tx["item_id"].nunique()
    assert rep.return_rows == int((tx["quantity"] < 0).sum()) > 0
    # README: 2009-12-01 07:45 -> 2011-08-31 17:45 (the very last lines may lack a customer)
    assert rep.first_ts == "2009-12-01 07:45:00"
    assert (
        pd.Timestamp("2011-08-31") <= pd.Timestamp(rep.last_ts) <= pd.Timestamp("2011-08-31 17:45")
    )
    # about 23% of rows have no customer id
    assert 0.18 < reason(rep, "no customer id") / rep.rows_in < 0.28


def test_duplicates_dropped(retail):
    rep = retail.report
    overlap = reason(rep, "overlapping extract")
    exact = reason(rep, "exact duplicate")
    assert overlap == 22_523  # README: the 2010-12-01..09 block, 22,523 repeated rows
    assert exact > 0
    # every repeated line of the file is dropped by one of the two reasons (both only
    # drop lines that repeat an earlier one), so no exact duplicate line remains
    raw = pd.read_csv(DEFAULT_DATA, dtype=str, keep_default_na=False)
    assert len(raw) == rep.rows_in
    assert int(raw.duplicated().sum()) == overlap + exact


def test_only_real_customer_purchases_remain(retail):
    tx = retail.transactions
    items = tx["item_id"]
    non_products = {
        "POST",
        "DOT",
        "M",
        "D",
        "C2",
        "S",
        "B",
        "BANK CHARGES",
        "AMAZONFEE",
        "CRUK",
        "PADS",
    }
    assert not items.isin(non_products).any()
    for prefix in ("ADJUST", "TEST", "GIFT_0001", "DCGS"):
        assert not items.str.startswith(prefix).any()
    assert items.str.match(r"^\d{5}").all()
    assert (items == items.str.upper()).all()
    assert tx["customer_id"].notna().all()
    assert (tx["unit_price"] > 0).all()
    assert not tx["order_id"].str.startswith("A").any()
    cancel = tx["order_id"].str.startswith("C")
    assert (tx.loc[cancel, "quantity"] < 0).all()
    assert cancel.any()


def test_backtest_cutoff(retail):
    assert backtest_cutoff(retail.transactions) == BACKTEST_CUTOFF


def test_stage_tier_table(retail, snapshot):
    tx = retail.transactions
    buyers = tx.loc[(tx["ts"] < BACKTEST_CUTOFF) & (tx["quantity"] > 0), "customer_id"]
    assert set(snapshot.index) == set(buyers)
    table = stage_tier_table(snapshot)
    assert list(table.index) == [*STAGES, "total"]
    assert list(table.columns) == [*TIERS, "total"]
    inner = table.loc[list(STAGES), list(TIERS)]
    assert int(inner.to_numpy().sum()) == len(snapshot) == table.loc["total", "total"]
    assert (inner > 0).any(axis=1).all()  # every stage has customers
    assert (table.loc[list(STAGES), "total"] == inner.sum(axis=1)).all()
    # tiers are the 40% / 20% quantiles of the snapshot
    share = table.loc["total", list(TIERS)] / len(snapshot)
    assert share["high"] == pytest.approx(0.2, abs=0.01)
    assert share["low"] == pytest.approx(0.4, abs=0.01)


def test_snapshot_on_the_real_log(snapshot):
    assert list(snapshot.columns) == FEATURE_COLUMNS
    always = [
        c
        for c in FEATURE_COLUMNS
        if c not in ("gap_median", "gap_mean", "gap_cv", "days_since_return")
    ]
    assert snapshot[always].notna().all().all()
    assert (snapshot["recency_days"] > 0).all()
    assert (snapshot["recency_days"] <= snapshot["tenure_days"]).all()
    assert (snapshot["orders_30d"] <= snapshot["orders_90d"]).all()
    assert (snapshot["orders_365d"] <= snapshot["orders_all"]).all()
    assert snapshot["trend_90d"].between(-1, 1).all()
    assert snapshot["top_family_share"].between(0, 1).all()
    assert snapshot["usual_hour"].between(0, 23).all()


# --------------------------------------------------------------------------- Hillstrom

# README: visit 0.1828 / 0.1514 / 0.1062, conversion 0.0125 / 0.0088 / 0.0057,
# mean spend 1.4226 / 1.0772 / 0.6528 (men's / women's / no e-mail), to 4 decimals
HILLSTROM_KNOWN = {
    "mens_email": (0.1828, 0.0125, 1.4226),
    "womens_email": (0.1514, 0.0088, 1.0772),
    "control": (0.1062, 0.0057, 0.6528),
}


def test_every_feature_of_every_customer_is_the_same_built_in_partitions(retail, snapshot):
    """Issue #19's structure: the snapshot built per customer-hash partition (shop-level
    aggregates once) equals the one-piece build, bit for bit, for all 5,000+ customers."""
    tx = retail.transactions
    cutoff = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    whole = build_features(tx, cutoff)
    for n in (4, 16):
        pd.testing.assert_frame_equal(
            build_features(tx, cutoff, partitions=n), whole, check_exact=True
        )
    assert len(whole) > 5000


def test_hillstrom_arm_rates():
    df = load_hillstrom(HILLSTROM_DATA)
    assert len(df) == 64_000
    summary = hillstrom_arm_summary(df)
    assert set(summary.index) == set(HILLSTROM_KNOWN)
    assert summary["n"].sum() == 64_000
    assert (abs(summary["n"] / 64_000 - 1 / 3) < 0.01).all()  # three equal arms
    for arm, (visit, conversion, spend) in HILLSTROM_KNOWN.items():
        row = summary.loc[arm]
        tol = 0.5e-4 + 1e-9  # the README rounds to 4 decimals
        assert abs(row["visit"] - visit) <= tol, arm
        assert abs(row["conversion"] - conversion) <= tol, arm
        assert abs(row["spend"] - spend) <= tol, arm


# --------------------------------------------------------------------------- generic loader


def test_generic_loader_pipeline_without_items(retail, snapshot, tmp_path):
    """A CD-shop style log (customer_id, date, number_of_cds, dollar_value) made from the
    real log, one line per order, runs the whole pipeline without item ids."""
    tx = retail.transactions
    per_order = (
        tx.assign(value=tx["quantity"] * tx["unit_price"], date=tx["ts"].dt.strftime("%Y%m%d"))
        .groupby(["customer_id", "order_id"], sort=False)
        .agg(date=("date", "min"), number_of_cds=("quantity", "sum"), dollar_value=("value", "sum"))
        .reset_index()
    )
    per_order["dollar_value"] = per_order["dollar_value"].round(2)
    cd = per_order[["customer_id", "date", "number_of_cds", "dollar_value"]]
    path = tmp_path / "cdshop.csv"
    cd.to_csv(path, index=False)

    mapping = {
        "customer_id": "customer_id",
        "ts": "date",
        "quantity": "number_of_cds",
        "amount": "dollar_value",
    }
    loaded = load_csv(path, mapping, date_format="%Y%m%d")
    rep, cd_tx = loaded.report, loaded.transactions
    assert rep.rows_in == len(cd)
    assert rep.rows_in == rep.rows_kept + sum(rep.dropped.values())
    assert rep.items == 0 and cd_tx["item_id"].isna().all()
    assert rep.customers == retail.report.customers
    assert backtest_cutoff(cd_tx) == BACKTEST_CUTOFF

    feats = build_features(cd_tx, BACKTEST_CUTOFF)
    assert feats[ITEM_COLUMNS].isna().all().all()
    maybe_nan = [*ITEM_COLUMNS, "gap_median", "gap_mean", "gap_cv", "days_since_return"]
    assert feats.drop(columns=maybe_nan).notna().all().all()
    # same customers and purchase days as the item-level log; value from the written file
    assert set(feats.index) == set(snapshot.index)
    pd.testing.assert_series_equal(
        feats["purchase_days"], snapshot.loc[feats.index, "purchase_days"], check_exact=True
    )
    written = pd.read_csv(path, dtype={"customer_id": str, "date": str}).drop_duplicates()
    sales = written[
        (written["dollar_value"] > 0)
        & (written["number_of_cds"] > 0)
        & (pd.to_datetime(written["date"], format="%Y%m%d") < BACKTEST_CUTOFF)
    ]
    expected = sales.groupby("customer_id")["dollar_value"].sum()
    assert np.allclose(feats["monetary_all"], expected.reindex(feats.index), rtol=1e-9, atol=1e-6)

    # training frame of the backtest protocol: cutoffs 2011-03-05 (B - 90 d) back every
    # 30 d while >= 2009-12-01 + 180 d = 2010-05-30: 2011-03-05 - 2010-05-30 = 279 d -> 10
    cutoffs = training_cutoffs(cd_tx, BACKTEST_CUTOFF)
    assert cutoffs[0] == pd.Timestamp("2011-03-05")
    assert len(cutoffs) == 10
    frame = build_training_frame(cd_tx, cutoffs, observed_until=BACKTEST_CUTOFF)
    assert frame["cutoff"].nunique() == 10
    assert frame[ITEM_COLUMNS].isna().all().all()
    assert frame["churn"].isin([0, 1]).all()
    assert 0.2 < frame["churn"].mean() < 0.9
    censored = ~frame["next_observed"]
    assert (frame.loc[censored, "churn"] == 1).all()
    horizon_left = (BACKTEST_CUTOFF - frame["cutoff"]).dt.days
    assert (frame["days_to_next"] <= horizon_left).all()

    lc = assign_lifecycle(feats)
    assert len(lc) == len(feats)
    assert lc["stage"].notna().all() and lc["tier"].notna().all()
    assert set(lc["stage"].astype(str)) == set(STAGES)


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "features", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_report_and_table():
    res = run_cli("--cutoff", "2011-06-02")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert str(DEFAULT_DATA) in out
    assert "846,166" in out
    assert "overlapping extract" in out
    assert "snapshot at 2011-06-02" in out
    assert "lifecycle stage × value tier" in out
    table = out.split("lifecycle stage × value tier", 1)[1]
    for name in (*STAGES, *TIERS, "total"):
        assert name in table


def test_cli_bad_file_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad_dates.csv"
    bad.write_text(
        "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
        "489434,85048,LIGHT,12,2009-12-01 07:45:00,6.95,13085,United Kingdom\n"
        "489434,85049,LIGHT,12,not a date,6.95,13085,United Kingdom\n"
    )
    res = run_cli("--data", str(bad))
    assert res.returncode == 2
    assert str(bad) in res.stderr and "InvoiceDate" in res.stderr and "rows 3" in res.stderr
    assert "Traceback" not in res.stderr

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("who,when,what\n1,2021-01-01,3\n")
    res = run_cli("--data", str(unknown))
    assert res.returncode == 2
    assert str(unknown) in res.stderr and "Traceback" not in res.stderr


def test_the_log_as_a_parquet_dataset_loads_to_the_same_transactions(retail, tmp_path):
    """The shared log with typed columns, written as a folder of Parquet parts (as a
    warehouse export would be), cleans to the CSV's transactions, counts and item names."""
    typed = pd.read_csv(DEFAULT_DATA, parse_dates=["InvoiceDate"])
    folder = tmp_path / "log"
    folder.mkdir()
    for i, start in enumerate(range(0, len(typed), 200_000)):
        part = typed.iloc[start : start + 200_000]
        part.to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    loaded = load_transactions(folder)
    pd.testing.assert_frame_equal(loaded.transactions, retail.transactions, check_exact=True)
    pd.testing.assert_frame_equal(loaded.items, retail.items)
    assert loaded.report.dropped == retail.report.dropped
    assert loaded.report.rows_in == retail.report.rows_in == 846_166
