"""Column mappings (features.mapping): any shop's export through ``--mapping FILE.yaml``.

Hand-made files with known answers for the rules (returns signed, dropped or flagged; only
the mapped columns read; errors naming the file and the key), the checked-in examples, and
the CLI on a plain ``customer_id,date,amount`` export made from the shared log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.env import DEFAULT_DATA
from features.loaders import load_transactions
from features.mapping import LogMapping, read_log_mapping

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mappings"


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


@pytest.fixture
def export(tmp_path) -> Path:
    """Five rows: two sales, a refund by sign, a refund by type, a column nobody maps."""
    return _write(
        tmp_path / "export.csv",
        """
Kunde,Datum,Betrag,Art,Notiz
k1,03.01.2021,20.00,Kauf,x
k1,10.01.2021,-5.00,Storno,y
k2,04.01.2021,7.50,Kauf,"a, b"
k2,05.01.2021,3.00,Retoure,z
k3,06.01.2021,12.00,Kauf,
""",
    )


def _mapping(tmp_path: Path, returns: str) -> LogMapping:
    return read_log_mapping(
        _write(
            tmp_path / "m.yaml",
            f"""
columns: {{customer_id: Kunde, ts: Datum, amount: Betrag}}
dayfirst: true
returns: {returns}
""",
        )
    )


def test_negative_amounts_are_returns_by_default(export, tmp_path):
    tx = load_transactions(export, _mapping(tmp_path, "negative")).transactions
    assert tx.sort_values("ts")["quantity"].tolist() == [1.0, 1.0, 1.0, 1.0, -1.0]
    assert (tx["quantity"] * tx["unit_price"]).sum() == pytest.approx(20 + 7.5 + 3 + 12 - 5)
    assert tx["ts"].min() == pd.Timestamp("2021-01-03")  # 03.01. read day first


def test_drop_counts_the_returns_it_drops(export, tmp_path):
    loaded = load_transactions(export, _mapping(tmp_path, "drop"))
    assert loaded.report.dropped["return (mapping: returns: drop)"] == 1
    assert (loaded.transactions["quantity"] > 0).all() and loaded.report.rows_kept == 4


def test_a_type_column_marks_returns_whatever_their_sign(export, tmp_path):
    m = _mapping(tmp_path, "{column: Art, values: [Storno, Retoure]}")
    assert m.used_columns == ["Kunde", "Datum", "Betrag", "Art"]  # Notiz is never read
    tx = load_transactions(export, m).transactions.set_index("customer_id")
    assert tx.loc["k2", "quantity"].tolist() == [1.0, -1.0]  # +3.00 typed Retoure: a return
    assert tx.loc["k1", "quantity"].tolist() == [1.0, -1.0]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("columns: {customer_id: a, ts: b}", "'amount'"),
        ("columns: {ts: b, amount: c}", "'customer_id'"),
        ("columns: {customer_id: a, ts: b, amount: c, sku: d}", "sku"),
        ("columns: {customer_id: a, ts: b, amount: c}\nreturn: drop", "return"),
        ("columns: {customer_id: a, ts: b, amount: c}\nreturns: sometimes", "returns"),
        ("columns: {customer_id: a, ts: b, amount: c}\ndate_format: 5", "date_format"),
        ("[a, b]", "columns"),
    ],
)
def test_a_bad_mapping_names_the_file_and_the_key(tmp_path, text, names):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError, match=names) as err:
        read_log_mapping(path)
    assert str(path) in str(err.value)


def test_a_mapped_column_missing_from_the_export_is_named(export, tmp_path):
    m = read_log_mapping(
        _write(tmp_path / "m.yaml", "columns: {customer_id: Kunde, ts: Date, amount: Betrag}")
    )
    with pytest.raises(ValueError, match="Date"):
        load_transactions(export, m)


def test_the_checked_in_examples_are_valid():
    retail = read_log_mapping(EXAMPLES / "online_retail_ii.yaml")
    plain = read_log_mapping(EXAMPLES / "orders_amount.yaml")
    assert set(retail.columns) >= {"customer_id", "order_id", "ts", "item_id", "quantity"}
    assert set(plain.columns) == {"customer_id", "ts", "amount"}


@pytest.mark.integration
def test_the_cli_reads_a_plain_order_export_of_the_shared_log_through_its_mapping(tmp_path):
    """The shared log summed to one row per order, items dropped: without a mapping the
    CLI says what is missing and points at --mapping; with the example it reads every
    order, customer and pound of it."""
    tx = load_transactions(DEFAULT_DATA).transactions
    tx["amount"] = tx["quantity"] * tx["unit_price"]
    orders = tx.groupby(["customer_id", "order_id"], as_index=False).agg(
        date=("ts", "min"), amount=("amount", "sum")
    )
    orders = orders[orders["amount"] != 0]
    orders["date"] = orders["date"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "orders.csv"
    orders[["customer_id", "date", "amount"]].to_csv(path, index=False)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "features", "--data", str(path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    refused = cli()
    assert refused.returncode == 2 and "--mapping" in refused.stderr
    ok = cli("--mapping", str(EXAMPLES / "orders_amount.yaml"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"customers   {orders['customer_id'].nunique():>9,}" in ok.stdout
    loaded = load_transactions(path, read_log_mapping(EXAMPLES / "orders_amount.yaml"))
    # orders of one customer on one day with the same value are one line of the export
    same_day = orders.duplicated(["customer_id", "date", "amount"]).sum()
    assert loaded.report.dropped["exact duplicate line"] == same_day
    kept = loaded.transactions
    assert (kept["quantity"] * kept["unit_price"]).sum() == pytest.approx(
        orders["amount"].sum()
        - orders[orders.duplicated(["customer_id", "date", "amount"])]["amount"].sum(),
        rel=1e-9,
    )


def test_the_service_setting_is_checked_at_start_up(tmp_path, monkeypatch):
    from service.config import ConfigError, load_settings

    good = EXAMPLES / "orders_amount.yaml"
    monkeypatch.setenv("REVIVAL_DATA_MAPPING", str(good))
    assert load_settings().log_mapping == read_log_mapping(good)
    bad = _write(tmp_path / "bad.yaml", "columns: {customer_id: a}")
    monkeypatch.setenv("REVIVAL_DATA_MAPPING", str(bad))
    with pytest.raises(ConfigError, match="data_mapping") as err:
        load_settings()
    assert str(bad) in str(err.value)
