"""Tests for features.loaders on small CSV files written to tmp_path.

The Online Retail II sample has one line per drop reason (line numbers in the comments
count the header as line 1), so every count in the cleaning report is known by hand.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contracts import DataContractError, validate_transactions
from features.loaders import (
    hillstrom_arm_summary,
    load_csv,
    load_hillstrom,
    load_online_retail,
    load_transactions,
)
from features.snapshot import build_features
from features.tables import read_table

RETAIL_HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"
RETAIL_LINES = [
    "489434,85048, LIGHT ,12,2009-12-01 07:45:00,6.95,13085,United Kingdom",  # 2 kept
    "489434,79323p,CHERRY LIGHTS,12,2009-12-01 07:45:00,6.75,13085,United Kingdom",  # 3 kept
    "489435,22423,REGENCY CAKESTAND,2,2009-12-01 09:00:00,12.75,13086.0,United Kingdom",  # 4 kept
    "489435,22423,REGENCY CAKESTAND,2,2009-12-01 09:00:00,12.75,13086.0,United Kingdom",  # 5 dup
    "489436,POST,POSTAGE,1,2009-12-02 10:00:00,18.00,13087,France",  # 6 non-product
    "489436,M,Manual,1,2009-12-02 10:00:00,2.00,13087,France",  # 7 non-product
    "489437,D,Discount,-1,2009-12-02 11:00:00,5.00,13087,France",  # 8 non-product
    "489438,BANK CHARGES,Bank Charges,1,2009-12-02 12:00:00,15.00,13087,France",  # 9 non-product
    "489439,AMAZONFEE,AMAZON FEE,1,2009-12-02 13:00:00,100.00,13087,France",  # 10 non-product
    "489440,21232,STRAWBERRY MUG,5,2009-12-03 11:00:00,1.25,,United Kingdom",  # 11 no customer
    "A489441,B,Adjust bad debt,1,2009-12-03 12:00:00,-50.00,13088,United Kingdom",  # 12 A
    "489442,22111,HOT WATER BOTTLE,3,2009-12-04 12:00:00,0,13089,United Kingdom",  # 13 zero price
    "C489443,22112,CHOCOLATE BOTTLE,5,2009-12-05 12:00:00,4.95,13085,United Kingdom",  # 14 C, qty > 0
    "C489444,85048, LIGHT ,-2,2009-12-06 12:00:00,6.95,13085,United Kingdom",  # 15 kept, return
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",  # 16 kept
    "536366,22633,HAND WARMER,6,2010-12-09 15:00:00,1.85,17850,United Kingdom",  # 17 kept
    # a second extract starts: time jumps back more than a day, into the first's period
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",  # 18 overlap
    "536367,84879,BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,13047,United Kingdom",  # 19 kept
    "536368,22960,JAM MAKING SET,6,2010-12-10 09:00:00,4.25,13047,United Kingdom",  # 20 kept
]
EXPECTED_DROPS = {
    "overlapping extract": 1,
    "exact duplicate": 1,
    "no customer id": 1,
    "A invoice": 1,
    "non-product code": 5,
    "zero price": 1,
    "cancellation with positive quantity": 1,
}


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def retail_file(tmp_path: Path, lines=None, header=RETAIL_HEADER, gz=False, name="retail.csv"):
    return write(tmp_path / name, [header, *(RETAIL_LINES if lines is None else lines)], gz)


def drops(report) -> dict[str, int]:
    """Report counts keyed by the EXPECTED_DROPS phrase each reason contains."""
    out = {}
    for phrase in EXPECTED_DROPS:
        hits = [n for reason, n in report.dropped.items() if phrase in reason]
        assert len(hits) == 1, (phrase, report.dropped)
        out[phrase] = hits[0]
    return out


# --------------------------------------------------------------------------- Online Retail II


def test_online_retail_cleaning_report(tmp_path):
    path = retail_file(tmp_path)
    loaded = load_online_retail(path)
    rep = loaded.report
    assert rep.source == str(path)
    assert rep.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rep.rows_in == 19
    assert len(rep.dropped) == len(EXPECTED_DROPS)
    assert drops(rep) == EXPECTED_DROPS
    assert rep.rows_kept == 8
    assert rep.rows_in == rep.rows_kept + sum(rep.dropped.values())
    assert (rep.customers, rep.orders, rep.items, rep.return_rows) == (4, 7, 7, 1)
    assert rep.first_ts == "2009-12-01 07:45:00"
    assert rep.last_ts == "2010-12-10 09:00:00"
    text = rep.to_text()
    assert str(path) in text and "overlapping extract" in text
    assert rep.to_dict()["rows_kept"] == 8


def test_online_retail_transactions(tmp_path):
    tx = load_online_retail(retail_file(tmp_path)).transactions
    assert list(tx["order_id"]) == [
        "489434",
        "489434",
        "489435",
        "C489444",
        "536365",
        "536366",
        "536367",
        "536368",
    ]
    # upper-cased
    assert list(tx["item_id"]) == [
        "85048",
        "79323P",
        "22423",
        "85048",
        "85123A",
        "22633",
        "84879",
        "22960",
    ]
    # "13086.0" is read as "13086"
    assert list(tx["customer_id"]) == [
        "13085",
        "13085",
        "13086",
        "13085",
        "17850",
        "17850",
        "13047",
        "13047",
    ]
    assert tx["quantity"].tolist() == [12, 12, 2, -2, 6, 6, 32, 6]  # cancellation kept negative
    assert tx["unit_price"].tolist() == pytest.approx(
        [6.95, 6.75, 12.75, 6.95, 2.55, 1.85, 1.69, 4.25]
    )
    assert tx["ts"].iloc[3] == pd.Timestamp("2009-12-06 12:00")
    assert tx["ts"].dtype == "datetime64[ns]"
    assert tx["country"].iloc[0] == "United Kingdom"
    assert tx.index.equals(pd.RangeIndex(8))
    # ids and labels stay integer codes (a code per line, not a string), categories sorted
    for col in ("customer_id", "order_id", "item_id", "country"):
        assert isinstance(tx[col].dtype, pd.CategoricalDtype), col
        cats = list(tx[col].cat.categories)
        assert cats == sorted(cats) and tx[col].cat.categories.dtype == "str", col


def test_validate_keeps_a_categorical_of_the_cleaned_text():
    raw = pd.DataFrame(
        {
            "customer_id": pd.Categorical([" 1", "1 ", "2", None, "2"]),
            "order_id": ["a", "b", "c", "d", "e"],
            "ts": pd.to_datetime(["2021-01-01"] * 5),
            "quantity": [1.0] * 5,
            "unit_price": [1.0] * 5,
            "country": pd.Categorical(["UK", " UK", "", "FR", "FR"]),
        }
    )
    tx = validate_transactions(raw.dropna(subset=["customer_id"]))
    assert isinstance(tx["customer_id"].dtype, pd.CategoricalDtype)
    assert list(tx["customer_id"].cat.categories) == ["1", "2"]  # " 1" and "1 " are one id
    assert tx["customer_id"].tolist() == ["1", "1", "2", "2"]
    assert tx["country"].iloc[:2].tolist() == ["UK", "UK"] and pd.isna(tx["country"].iloc[2])
    assert tx["order_id"].dtype == "str"  # text that came in as text stays text
    with pytest.raises(DataContractError, match="customer_id"):
        validate_transactions(raw)  # an empty id is still an error, categorical or not


def test_online_retail_item_names_are_stripped(tmp_path):
    items = load_online_retail(retail_file(tmp_path)).items
    names = dict(zip(items["item_id"], items["name"], strict=True))
    assert names["85048"] == "LIGHT"
    assert names["79323P"] == "CHERRY LIGHTS"
    assert len(names) == 7


def test_gzip_input_gives_the_same_result(tmp_path):
    plain = load_online_retail(retail_file(tmp_path))
    gz_path = retail_file(tmp_path, gz=True, name="retail.csv.gz")
    assert gz_path.read_bytes()[:2] == b"\x1f\x8b"
    packed = load_online_retail(gz_path)
    pd.testing.assert_frame_equal(packed.transactions, plain.transactions, check_exact=True)
    a, b = plain.report.to_dict(), packed.report.to_dict()
    for key in ("source", "sha256"):
        a.pop(key), b.pop(key)
    assert a == b
    assert packed.report.sha256 == hashlib.sha256(gz_path.read_bytes()).hexdigest()


def test_repeated_lines_in_one_extract_are_duplicates_not_overlap(tmp_path):
    lines = [RETAIL_LINES[0], RETAIL_LINES[0], RETAIL_LINES[0], RETAIL_LINES[1]]
    rep = load_online_retail(retail_file(tmp_path, lines)).report
    assert drops(rep)["exact duplicate"] == 2
    assert drops(rep)["overlapping extract"] == 0
    assert rep.rows_kept == 2


def test_every_later_extract_drops_its_copies_of_earlier_lines_in_the_overlap(tmp_path):
    # three extracts, each jumping back into the period before: the n-th copy of a line in a
    # later extract is dropped while an earlier extract holds n copies of it, and not after
    a = "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom"
    b = "536366,22633,WARMER,6,2010-12-09 15:00:00,1.85,17850,United Kingdom"
    c = "536369,22960,JAM SET,6,2010-12-12 09:00:00,4.25,13047,United Kingdom"
    late = "536370,22961,JAM POT,1,2010-12-20 09:00:00,4.25,13047,United Kingdom"
    lines = [a, b, a, b, c, a, a, b, c, late]  # extracts: [a b] [a b c] [a a b c late]
    rep = load_online_retail(retail_file(tmp_path, lines)).report
    # extract 2: a, b (c is new); extract 3: both a's (two earlier copies), b, c (late: new)
    assert drops(rep)["overlapping extract"] == 2 + 4
    assert rep.rows_kept == len(lines) - 6


# --------------------------------------------------------------------------- errors


def test_missing_column_names_file_and_column(tmp_path):
    header = "Invoice,StockCode,Description,Quantity,InvoiceDate,Customer ID,Country"
    lines = ["489434,85048,LIGHT,12,2009-12-01 07:45:00,13085,United Kingdom"]
    path = retail_file(tmp_path, lines, header=header)
    with pytest.raises(DataContractError) as err:
        load_online_retail(path)
    assert err.value.column == "Price"
    assert str(path) in str(err.value) and "'Price'" in str(err.value)


def test_unparsable_date_names_file_column_and_lines(tmp_path):
    lines = list(RETAIL_LINES)
    lines[1] = lines[1].replace("2009-12-01 07:45:00", "2009-13-45 07:45:00")  # line 3
    lines[5] = lines[5].replace("2009-12-02 10:00:00", "yesterday")  # line 7
    path = retail_file(tmp_path, lines)
    with pytest.raises(DataContractError) as err:
        load_online_retail(path)
    assert err.value.column == "InvoiceDate"
    assert err.value.rows == [3, 7]
    msg = str(err.value)
    assert str(path) in msg and "'InvoiceDate'" in msg and "rows 3, 7" in msg


def test_negative_price_on_a_sale_names_file_column_and_line(tmp_path):
    lines = list(RETAIL_LINES)
    lines[2] = lines[2].replace(",12.75,", ",-12.75,")  # line 4, a kept sale
    path = retail_file(tmp_path, lines[:3])
    with pytest.raises(DataContractError) as err:
        load_online_retail(path)
    assert err.value.column == "Price"
    assert err.value.rows == [4]
    assert str(path) in str(err.value) and "negative price" in str(err.value)


def test_negative_price_on_a_dropped_adjustment_is_not_an_error(tmp_path):
    loaded = load_online_retail(retail_file(tmp_path, [RETAIL_LINES[0], RETAIL_LINES[10]]))
    assert drops(loaded.report)["A invoice"] == 1
    assert loaded.report.rows_kept == 1


@pytest.mark.parametrize("gz", [False, True])
def test_non_utf8_bytes_name_file_column_and_lines(tmp_path, gz):
    lines = [RETAIL_HEADER.encode()] + [line.encode() for line in RETAIL_LINES[:6]]
    lines[4] = lines[4].replace(b"REGENCY", b"R\xe9GENCY")  # latin-1 byte on line 5
    lines[6] = lines[6].replace(b"Manual", b"Manual \xa3")  # and on line 7
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / ("latin1.csv.gz" if gz else "latin1.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataContractError) as err:
        load_online_retail(path)
    assert err.value.rows == [5, 7]
    assert err.value.column == "Description"
    msg = str(err.value)
    assert str(path) in msg and "UTF-8" in msg and "rows 5, 7" in msg and "'Description'" in msg


def test_gzip_error_line_numbers(tmp_path):
    lines = list(RETAIL_LINES)
    lines[3] = lines[3].replace(",2,", ",two,")  # line 5
    path = retail_file(tmp_path, lines, gz=True, name="bad.csv.gz")
    with pytest.raises(DataContractError) as err:
        load_online_retail(path)
    assert (err.value.column, err.value.rows) == ("Quantity", [5])
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataContractError, match="nope.csv"):
        load_online_retail(path)


# --------------------------------------------------------------------------- generic CSV

CD_HEADER = "customer_id,date,number_of_cds,dollar_value"
CD_LINES = [
    "00001,19970101,1,11.77",  # 2
    "00002,19970112,1,12.00",  # 3
    "00002,19970112,5,77.00",  # 4 same customer and day: same order as line 3
    "00003,19970102,2,20.76",  # 5
    "00003,19970330,2,20.76",  # 6
    "00004,19970101,0,0.00",  # 7 zero quantity
    ",19970101,1,5.00",  # 8 no customer
    "00003,19970102,2,20.76",  # 9 exact duplicate of line 5
    "00003,19970402,-1,-10.38",  # 10 a return
]
CD_MAPPING = {
    "customer_id": "customer_id",
    "ts": "date",
    "quantity": "number_of_cds",
    "amount": "dollar_value",
}


def cd_file(tmp_path, lines=CD_LINES, header=CD_HEADER, name="cdshop.csv"):
    return write(tmp_path / name, [header, *lines])


def test_generic_csv_cd_shop(tmp_path):
    loaded = load_csv(cd_file(tmp_path), CD_MAPPING, date_format="%Y%m%d")
    rep, tx = loaded.report, loaded.transactions
    assert rep.rows_in == 9
    assert rep.dropped == {
        "exact duplicate line": 1,
        "no customer id": 1,
        "zero quantity or zero value": 1,
    }
    assert rep.rows_kept == 6 == rep.rows_in - sum(rep.dropped.values())
    assert (rep.customers, rep.orders, rep.items, rep.return_rows) == (3, 5, 0, 1)
    assert list(tx["customer_id"]) == ["00001", "00002", "00002", "00003", "00003", "00003"]
    assert tx["order_id"].iloc[1] == tx["order_id"].iloc[2] == "00002@1997-01-12T00:00:00"
    assert tx["order_id"].nunique() == 5
    assert tx["quantity"].tolist() == [1, 1, 5, 2, 2, -1]
    assert tx["unit_price"].tolist() == pytest.approx([11.77, 12.0, 15.4, 10.38, 10.38, 10.38])
    assert tx["ts"].tolist() == [
        pd.Timestamp(d)
        for d in (
            "1997-01-01",
            "1997-01-12",
            "1997-01-12",
            "1997-01-02",
            "1997-03-30",
            "1997-04-02",
        )
    ]
    assert tx["item_id"].isna().all()
    assert loaded.items.empty

    feats = build_features(tx, pd.Timestamp("1997-05-01"))
    assert list(feats.index) == ["00001", "00002", "00003"]
    assert feats.loc["00002", "orders_all"] == 1
    assert feats.loc["00002", "basket_lines"] == 2
    assert feats.loc["00002", "monetary_all"] == pytest.approx(89.0)
    assert feats.loc["00003", "monetary_all"] == pytest.approx(41.52)
    assert feats.loc["00003", "return_rate_value"] == pytest.approx(10.38 / 41.52)
    assert feats[["distinct_items", "top_family_share", "price_index"]].isna().all().all()


def test_generic_csv_amount_only_and_optional_columns(tmp_path):
    lines = [
        "c1,2021-01-05 10:00,o1,sku-1,web,DE,30.0",
        "c1,2021-01-09 11:00,o2,sku-2,web,DE,-12.5",
    ]
    path = cd_file(tmp_path, lines, header="cust,when,order,sku,chan,land,total")
    mapping = {
        "customer_id": "cust",
        "ts": "when",
        "order_id": "order",
        "item_id": "sku",
        "channel": "chan",
        "country": "land",
        "amount": "total",
    }
    tx = load_csv(path, mapping).transactions
    assert tx["quantity"].tolist() == [1.0, -1.0]  # no quantity: +1 per sale, -1 per return
    assert tx["unit_price"].tolist() == [30.0, 12.5]
    assert tx["order_id"].tolist() == ["o1", "o2"]
    assert tx["item_id"].tolist() == ["SKU-1", "SKU-2"]
    assert tx["channel"].tolist() == ["web", "web"]
    assert tx["country"].tolist() == ["DE", "DE"]
    assert tx["ts"].tolist() == [pd.Timestamp("2021-01-05 10:00"), pd.Timestamp("2021-01-09 11:00")]


def test_only_the_mapped_columns_of_a_csv_are_read(tmp_path):
    lines = ["c1,2021-01-05,30.0,a long note", "c2,2021-01-06,12.0,"]
    path = cd_file(tmp_path, lines, header="cust,when,total,notes")
    df = read_table(path, dtype={"cust": "category"}, columns=["cust", "total", "absent"])
    assert list(df.columns) == ["cust", "total"]  # an asked-for column not in the file is skipped
    assert df.index.tolist() == [2, 3]  # still indexed by file line
    assert list(read_table(path).columns) == ["cust", "when", "total", "notes"]
    mapping = {"customer_id": "cust", "ts": "when", "amount": "total"}
    assert load_csv(path, mapping).transactions["customer_id"].tolist() == ["c1", "c2"]


def test_csv_read_in_chunks_equals_one_read(tmp_path, monkeypatch):
    """Text read as categoricals chunk by chunk: ids keep their zeros, chunks with other
    (or no) values unite, and the loaded log is the one read in a single chunk."""
    import features.tables as tables

    lines = ["00001,1997-01-01,1,5.0", ",1997-01-02,1,5.0", ",1997-01-03,1,5.0"]
    lines += ["00002,1997-01-04,2,7.5", "00001,1997-01-05,1,5.0"]
    path = cd_file(tmp_path, lines)
    whole = load_csv(path, CD_MAPPING)
    monkeypatch.setattr(tables, "CSV_CHUNK_LINES", 2)  # the second chunk has no customer id
    raw = read_table(path, dtype={"customer_id": "category"})
    assert isinstance(raw["customer_id"].dtype, pd.CategoricalDtype)
    assert raw.loc[[2, 5, 6], "customer_id"].tolist() == ["00001", "00002", "00001"]
    assert raw.loc[[3, 4], "customer_id"].isna().all()
    chunked = load_csv(path, CD_MAPPING)
    pd.testing.assert_frame_equal(chunked.transactions, whole.transactions)
    assert (
        chunked.report.dropped
        == whole.report.dropped
        == {
            "exact duplicate line": 0,
            "no customer id": 2,
            "zero quantity or zero value": 0,
        }
    )


def test_generic_csv_dayfirst(tmp_path):
    path = cd_file(tmp_path, ["1,13/01/1997,1,5.0", "1,02/03/1997,1,5.0"])
    tx = load_csv(path, CD_MAPPING, dayfirst=True).transactions
    assert tx["ts"].tolist() == [pd.Timestamp("1997-01-13"), pd.Timestamp("1997-03-02")]


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({**CD_MAPPING, "sku": "number_of_cds"}, "sku"),
        ({k: v for k, v in CD_MAPPING.items() if k != "ts"}, "'ts'"),
        ({k: v for k, v in CD_MAPPING.items() if k != "customer_id"}, "'customer_id'"),
        ({"customer_id": "customer_id", "ts": "date", "quantity": "number_of_cds"}, "'amount'"),
    ],
)
def test_generic_csv_mapping_errors(tmp_path, mapping, key):
    with pytest.raises(ValueError, match=key):
        load_csv(cd_file(tmp_path), mapping)


def test_generic_csv_mapped_column_missing_from_file(tmp_path):
    path = cd_file(tmp_path)
    with pytest.raises(DataContractError) as err:
        load_csv(path, {**CD_MAPPING, "ts": "day"})
    assert err.value.column == "day"
    assert str(path) in str(err.value)


def test_generic_csv_bad_values(tmp_path):
    path = cd_file(tmp_path, ["1,19970101,1,11.77", "2,19970102,1,ten"], name="bad_number.csv")
    with pytest.raises(DataContractError) as err:
        load_csv(path, CD_MAPPING, date_format="%Y%m%d")
    assert (err.value.column, err.value.rows) == ("dollar_value", [3])
    assert str(path) in str(err.value)

    path = cd_file(tmp_path, ["1,19970101,1,11.77", "2,1997-99-99,1,5"], name="bad_date.csv")
    with pytest.raises(DataContractError) as err:
        load_csv(path, CD_MAPPING, date_format="%Y%m%d")
    assert (err.value.column, err.value.rows) == ("date", [3])

    path = write(
        tmp_path / "neg.csv", ["cust,when,qty,price", "1,2021-01-01,1,2.0", "1,2021-01-02,1,-2.0"]
    )
    mapping = {"customer_id": "cust", "ts": "when", "quantity": "qty", "unit_price": "price"}
    with pytest.raises(DataContractError) as err:
        load_csv(path, mapping)
    assert (err.value.column, err.value.rows) == ("price", [3])
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- auto-detection


def test_load_transactions_detects_online_retail(tmp_path):
    for gz in (False, True):
        path = retail_file(tmp_path, gz=gz, name=f"retail{gz}.csv")
        loaded = load_transactions(path)
        assert drops(loaded.report) == EXPECTED_DROPS
        pd.testing.assert_frame_equal(
            loaded.transactions, load_online_retail(path).transactions, check_exact=True
        )


def test_load_transactions_contract_header(tmp_path):
    path = write(
        tmp_path / "contract.csv",
        [
            "customer_id,order_id,ts,item_id,quantity,unit_price,channel",
            "c1,o1,2021-01-05 10:00:00,ab12c,2,3.5,app",
            "c2,o2,2021-01-06 11:00:00,ab12d,1,4.0,web",
        ],
    )
    loaded = load_transactions(path)
    tx = loaded.transactions
    assert tx["order_id"].tolist() == ["o1", "o2"]
    assert tx["item_id"].tolist() == ["AB12C", "AB12D"]
    assert tx["quantity"].tolist() == [2.0, 1.0]
    assert tx["unit_price"].tolist() == [3.5, 4.0]
    assert tx["channel"].tolist() == ["app", "web"]
    assert "overlapping extract" not in " ".join(loaded.report.dropped)

    amount = write(tmp_path / "amount.csv", ["customer_id,ts,amount", "c1,2021-01-05,9.5"])
    tx = load_transactions(amount).transactions
    assert (tx["quantity"].tolist(), tx["unit_price"].tolist()) == ([1.0], [9.5])
    assert tx["order_id"].tolist() == ["c1@2021-01-05T00:00:00"]


# --------------------------------------------------------------------------- Parquet datasets


def _parquet_parts(frame: pd.DataFrame, folder: Path, rows: int) -> Path:
    """``frame`` as a folder of Parquet files of ``rows`` rows each (a warehouse export)."""
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), rows)):
        frame.iloc[start : start + rows].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return folder


def test_a_parquet_dataset_loads_like_the_same_rows_as_csv(tmp_path):
    """Online Retail II with typed columns (timestamps, float customer ids, int quantities)
    in three files gives the CSV's frame, report counts and item names."""
    csv = retail_file(tmp_path)
    typed = pd.read_csv(csv, parse_dates=["InvoiceDate"])
    assert typed["Customer ID"].dtype == "float64"
    folder = _parquet_parts(typed, tmp_path / "retail", rows=6)
    assert len(list(folder.iterdir())) > 2
    a, b = load_transactions(csv), load_transactions(folder)
    pd.testing.assert_frame_equal(a.transactions, b.transactions, check_exact=True)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert b.report.dropped == a.report.dropped and b.report.rows_in == a.report.rows_in
    # a contract-named single file, read with only its mapped columns
    contract = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "ts": pd.to_datetime(["2021-01-05 10:00", "2021-01-06 11:00"]),
            "amount": [9.5, 4.0],
            "unused": ["x" * 50, "y"],
        }
    )
    path = tmp_path / "orders.parquet"
    contract.to_parquet(path, index=False)
    tx = load_transactions(path).transactions
    assert tx["unit_price"].tolist() == [9.5, 4.0] and "unused" not in tx.columns


def test_parquet_errors_name_the_dataset_column_and_row(tmp_path):
    bad = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "ts": ["2021-01-05", "soon", "x"],
                        "amount": [1.0, 2.0, 3.0]})  # fmt: skip
    folder = _parquet_parts(bad, tmp_path / "bad", rows=2)
    with pytest.raises(DataContractError) as err:
        load_transactions(folder)
    assert err.value.column == "ts" and err.value.rows == [2, 3]
    assert str(folder) in str(err.value)
    with pytest.raises(DataContractError, match="Parquet"):
        load_transactions(write(tmp_path / "broken.parquet", ["not parquet"]))


def test_the_fingerprint_of_a_dataset_changes_with_any_of_its_files(tmp_path):
    from features.tables import file_sha256

    frame = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "ts": ["2021-01-05"] * 2, "amount": [1.0, 2.0]}
    )
    folder = _parquet_parts(frame, tmp_path / "ds", rows=1)
    before = file_sha256(folder)
    assert file_sha256(folder) == before
    frame.iloc[1:].assign(amount=3.0).to_parquet(folder / "part-001.parquet", index=False)
    assert file_sha256(folder) != before


def test_load_transactions_unknown_header_names_the_file(tmp_path):
    path = write(tmp_path / "mystery.csv", ["who,when,what", "1,2021-01-01,3"])
    with pytest.raises(DataContractError) as err:
        load_transactions(path)
    assert str(path) in str(err.value)
    assert err.value.column == "customer_id"
    path = write(tmp_path / "noprice.csv", ["customer_id,ts,quantity", "1,2021-01-01,3"])
    with pytest.raises(DataContractError) as err:
        load_transactions(path)
    assert err.value.column == "unit_price"


# --------------------------------------------------------------------------- Hillstrom

HILL_HEADER = (
    "recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,"
    "visit,conversion,spend"
)


def test_hillstrom_small_file(tmp_path):
    path = write(
        tmp_path / "hill.csv",
        [
            HILL_HEADER,
            "10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0",
            "6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,1,0,0",
            "7,2) $100 - $200,180.65,0,1,Surburban,1,Web,Womens E-Mail,1,1,30.5",
            "2,1) $0 - $100,45.34,1,0,Urban,0,Web,Mens E-Mail,1,0,0",
        ],
    )
    df = load_hillstrom(path)
    assert df["treatment"].tolist() == ["womens_email", "control", "womens_email", "mens_email"]
    assert isinstance(df["zip_code"].dtype, pd.CategoricalDtype)
    assert df["spend"].tolist() == [0, 0, 30.5, 0]
    summary = hillstrom_arm_summary(df)
    assert summary.loc["womens_email", "n"] == 2
    assert summary.loc["womens_email", "visit"] == pytest.approx(0.5)
    assert summary.loc["womens_email", "spend"] == pytest.approx(15.25)
    assert np.isclose(summary.loc["control", "visit"], 1.0)


def test_hillstrom_unknown_arm(tmp_path):
    path = write(
        tmp_path / "hill.csv",
        [HILL_HEADER, "10,x,1,1,0,Urban,0,Web,No E-Mail,0,0,0", "10,x,1,1,0,Urban,0,Web,SMS,0,0,0"],
    )
    with pytest.raises(DataContractError) as err:
        load_hillstrom(path)
    assert (err.value.column, err.value.rows) == ("segment", [3])


def test_a_tiled_log_is_disjoint_copies_in_the_sources_day_order(tmp_path):
    from benchmarks.startup import tile_log

    src = retail_file(tmp_path, gz=True, name="retail.csv.gz")
    tile_log(src, tmp_path / "x3.csv.gz", 3)
    one, three = load_online_retail(src), load_online_retail(tmp_path / "x3.csv.gz")
    assert three.report.rows_in == 3 * one.report.rows_in
    assert drops(three.report) == {k: 3 * v for k, v in EXPECTED_DROPS.items()}
    assert three.report.customers == 3 * one.report.customers
    ids = set(three.transactions["customer_id"])
    assert {"13085", "t1-13085", "t2-13085"} <= ids and "t1-489434" in set(
        three.transactions["order_id"]
    )
    raw = pd.read_csv(tmp_path / "x3.csv.gz", dtype=str)
    days = pd.to_datetime(raw["InvoiceDate"]).dt.normalize()
    # only the source's own jump back (its second extract) — never one per copy
    assert (days.diff() < pd.Timedelta(0)).sum() == 1
