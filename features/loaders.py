"""Loaders that adapt real files to the transactions contract, with a cleaning report.

* :func:`load_online_retail` — UCI Online Retail II (Chen, Sain & Guo 2012,
  doi:10.24432/C5CG6D, CC BY 4.0).
* :func:`load_csv` — any shop's export through a column mapping; works without item ids
  and with an order *amount* instead of quantity × price.

Every loader reads a CSV file (gzipped or not) or a **Parquet dataset**: a ``.parquet`` file
or a folder of them (hive-partitioned folders too — what a warehouse export writes), of
which only the needed columns are read (:func:`features.tables.read_table`). Errors in a Parquet dataset
name the row number (1-based, in the dataset's file order) where a CSV's name the line.
Text columns are read as categoricals, cleaned or parsed once per distinct value
(:func:`features.contracts.per_category`, :func:`~features.contracts.per_value`) and stay
categoricals in the contract's frame: a log has far fewer distinct ids, dates and names than
lines, so a line costs a code per column instead of a string (issue #19).
* :func:`load_hillstrom` — Kevin Hillstrom's MineThatData e-mail experiment (2008) as a
  campaign table (treatment arm, pre-treatment features, outcomes).

Malformed values (undecodable bytes, a missing column, an unparsable date or number, a
negative price on a sale) are *errors* naming the file, the column and the line numbers.
Rows that are well-formed but cannot be a customer purchase are *dropped and counted* per
reason in a :class:`CleaningReport` — never silently lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contracts import (
    DataContractError,
    per_category,
    per_value,
    validate_transactions,
)
from features.mapping import MAPPABLE, LogMapping
from features.tables import file_sha256, read_table, table_columns

__all__ = [
    "CleaningReport",
    "Loaded",
    "hillstrom_arm_summary",
    "load_csv",
    "load_hillstrom",
    "load_online_retail",
    "load_transactions",
]

# Online Retail II product codes are five digits plus an optional variant suffix
# (85123A, 15056BL, 79323LP ...); everything else is postage, fees, manual adjustments,
# discounts, samples, gift vouchers or tests.
_PRODUCT_CODE = re.compile(r"^\d{5}[A-Z]{0,2}\d?$")
_RETAIL_COLUMNS = ["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"]


@dataclass
class CleaningReport:
    """What a loader read, kept and dropped (per reason), and what it produced."""

    source: str
    rows_in: int
    dropped: dict[str, int] = field(default_factory=dict)
    rows_kept: int = 0
    customers: int = 0
    orders: int = 0
    items: int = 0
    return_rows: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    sha256: str | None = None
    # several sources (features.sources): name -> rows_in, rows_kept, customers, orders
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    linked_customers: int = 0  # source customers the identity map joined into another

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def count(self, tx: pd.DataFrame) -> None:
        """Set what the clean transactions ``tx`` hold: rows, customers, orders, items,
        returns and the period."""
        self.rows_kept = len(tx)
        self.customers = int(tx["customer_id"].nunique())
        self.orders = int(tx["order_id"].nunique())
        self.items = int(tx["item_id"].nunique()) if tx["item_id"].notna().any() else 0
        self.return_rows = int((tx["quantity"] < 0).sum())
        if len(tx):
            self.first_ts, self.last_ts = str(tx["ts"].min()), str(tx["ts"].max())

    def to_text(self) -> str:
        lines = [
            f"source      {self.source}",
            f"sha256      {self.sha256}",
            f"rows in     {self.rows_in:>9,}",
        ]
        for reason, n in self.dropped.items():
            lines.append(f"  dropped   {n:>9,}  {reason}")
        lines += [
            f"rows kept   {self.rows_kept:>9,}  ({self.return_rows:,} returns/cancellations)",
            f"customers   {self.customers:>9,}",
            f"orders      {self.orders:>9,}",
            f"items       {self.items:>9,}",
            f"period      {self.first_ts} .. {self.last_ts}",
        ]
        if self.linked_customers:
            lines.append(
                f"  linked    {self.linked_customers:>9,}  source customers joined by identity"
            )
        for name, counts in self.per_source.items():
            lines.append(
                f"  source    {name:<10} " + "  ".join(f"{k} {v:,}" for k, v in counts.items())
            )
        return "\n".join(lines)


@dataclass
class Loaded:
    """A loader's output: the transactions, the cleaning report and an item catalogue."""

    transactions: pd.DataFrame
    report: CleaningReport
    items: pd.DataFrame  # item_id, name (most frequent description); empty without items

    @property
    def item_text(self) -> dict[str, str]:
        """Item id → description, for the cross-sell model's content vectors."""
        named = self.items.dropna(subset=["name"])
        return dict(zip(named["item_id"].astype(str), named["name"].astype(str), strict=True))


def _check_price(price: pd.Series, keep: np.ndarray, source: str, column: str) -> None:
    """A negative price on a kept line is a data error; name the file's column and lines."""
    neg = keep & (price < 0).to_numpy()
    if neg.any():
        raise DataContractError(
            source, column, "negative price on a sale", price.index[neg].tolist()
        )


def _text(s: pd.Series, upper: bool = False) -> pd.Series:
    """A text column stripped (and upper-cased), per distinct value
    (:func:`~features.contracts.per_category`)."""
    return per_category(s, lambda v: v.str.strip().str.upper() if upper else v.str.strip())


def _to_ts(s: pd.Series, fmt: str | None, dayfirst: bool = False) -> pd.Series:
    """Timestamps in ``fmt``, any other recognisable format as a fallback; NaT if neither."""
    if dayfirst:
        return pd.to_datetime(s, dayfirst=True, errors="coerce")
    out = pd.to_datetime(s, format=fmt, errors="coerce") if fmt else pd.Series(pd.NaT, s.index)
    todo = out.isna() & s.notna()
    if todo.any():
        out[todo] = pd.to_datetime(s[todo], format="mixed", errors="coerce")
    return out


def _parse_ts(
    df: pd.DataFrame, col: str, source: str, fmt: str | None, dayfirst: bool = False
) -> pd.Series:
    out = per_value(df[col], lambda v: _to_ts(v, fmt, dayfirst))
    bad = out.isna()
    if bad.any():
        raise DataContractError(source, col, "unparsable or missing date", df.index[bad].tolist())
    return out.astype("datetime64[ns]")


def _parse_num(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    out = pd.to_numeric(df[col], errors="coerce").astype("float64")
    bad = out.isna()
    if bad.any():
        raise DataContractError(source, col, "not a number", df.index[bad].tolist())
    return out


def _overlap_duplicates(keys: np.ndarray, ts: pd.Series) -> np.ndarray:
    """Rows re-exported in an overlapping extract (a sheet starting before the last ended).

    The file is in time order per extract; a jump back in time of more than a day starts a
    new extract. A row of a later extract that duplicates a row of an earlier one (the
    n-th copy of a key matching the n-th copy before) inside the overlapping period is an
    overlap duplicate. Linear in the rows, however many extracts: a row's copies in earlier
    extracts are its copies before it (``g``) less those in its own extract (``occ``); and
    only rows at the timestamps of rows inside an overlap are counted (``keys`` hash whole
    lines, timestamp included, so no other row can be a copy).
    """
    t = ts.to_numpy()
    starts = np.flatnonzero(t[1:] < t[:-1] - np.timedelta64(1, "D")) + 1
    drop = np.zeros(len(t), dtype=bool)
    if not len(starts):
        return drop
    bounds = np.r_[0, starts, len(t)]
    # the latest time of each extract and every one before it; an extract's rows up to the
    # latest time before it are in an overlap (a loop over the few extracts: no per-row
    # extract numbers or running maxima, ~0.8 GB on the 16x tiled log)
    latest = np.maximum.accumulate(np.maximum.reduceat(t, bounds[:-1]))
    in_overlap = np.zeros(len(t), dtype=bool)
    for k in range(1, len(bounds) - 1):
        in_overlap[bounds[k] : bounds[k + 1]] = t[bounds[k] : bounds[k + 1]] <= latest[k - 1]
    rows = np.flatnonzero(ts.isin(np.unique(t[in_overlap])).to_numpy())
    key = pd.Series(keys[rows])
    part = pd.Series(np.searchsorted(bounds, rows, side="right") - 1)  # the rows' extracts
    g = key.groupby(key, sort=False).cumcount().to_numpy()
    occ = key.groupby([key, part], sort=False).cumcount().to_numpy()
    drop[rows] = in_overlap[rows] & (occ < g - occ)
    return drop


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Rows whose key an earlier row already had. By a stable sort, where each key's rows
    form a run in file order: as fast as hashing 13.5 M keys, without a hash table of all
    of them (~0.6 GB on the 16x tiled log; docs/results.md, #19)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.zeros(len(keys), dtype=bool)
    repeated[order[1:][sorted_keys[1:] == sorted_keys[:-1]]] = True
    return repeated


def _drop(reasons: Sequence[tuple[str, np.ndarray]], report: CleaningReport) -> np.ndarray:
    """Rows to keep; each reason's newly dropped rows are counted in ``report`` in order."""
    keep = np.ones(len(reasons[0][1]), dtype=bool)
    for reason, mask in reasons:
        hit = keep & mask
        report.dropped[reason] = int(hit.sum())
        keep &= ~hit
    return keep


def _finish(
    tx: pd.DataFrame, report: CleaningReport, names: pd.Series | None, source: str
) -> Loaded:
    """The contract's frame, the counts, and each item's most frequent (stripped) name."""
    tx = validate_transactions(tx, source=source).reset_index(drop=True)
    report.count(tx)
    if names is not None and len(tx):
        items = (
            pd.DataFrame({"item_id": tx["item_id"], "name": _text(names.reset_index(drop=True))})
            .dropna()
            .groupby(["item_id", "name"], observed=True)
            .size()
            .reset_index(name="n")
            .sort_values(["item_id", "n"], ascending=[True, False])
            .drop_duplicates("item_id")[["item_id", "name"]]
            .reset_index(drop=True)
            .astype({"name": "str"})
        )
    else:
        items = pd.DataFrame({"item_id": pd.Series(dtype=str), "name": pd.Series(dtype=str)})
    return Loaded(tx, report, items)


def load_online_retail(path: str | Path) -> Loaded:
    """Load UCI Online Retail II into the transactions contract.

    Keeps cancellations/returns (``C`` invoices, negative quantity) linked to their
    customer. Drops, counting each reason: rows re-exported by the overlapping 2010-12-01..09
    block, other exact duplicate lines, rows without a customer id (guest checkouts and
    stock write-offs), bad-debt adjustments (``A`` invoices), non-product codes (postage,
    fees, manual lines, discounts, vouchers, tests), zero-price lines and cancellations with
    a positive quantity. Item ids are upper-cased.
    """
    source = str(path)
    raw = read_table(
        path,
        dtype={
            "Invoice": "category",
            "StockCode": "category",
            "Customer ID": "category",
            "Description": "category",
            "Country": "category",
            "InvoiceDate": "category",
        },
    )
    missing = [c for c in _RETAIL_COLUMNS if c not in raw.columns]
    if missing:
        raise DataContractError(source, missing[0], f"missing required column(s) {missing}")
    report = CleaningReport(source=source, rows_in=len(raw), sha256=file_sha256(path))
    keys = pd.util.hash_pandas_object(raw, index=False).to_numpy()  # the lines as written
    ts = _parse_ts(raw, "InvoiceDate", source, "%Y-%m-%d %H:%M:%S")
    qty = _parse_num(raw, "Quantity", source)
    price = _parse_num(raw, "Price", source)
    raw = raw.drop(columns=["InvoiceDate", "Quantity", "Price"])  # parsed: the text is freed
    invoice = _text(raw["Invoice"])
    code = _text(raw["StockCode"], upper=True)
    cust = per_category(
        raw["Customer ID"], lambda v: v.str.strip().str.replace(r"\.0$", "", regex=True)
    )
    reasons: list[tuple[str, np.ndarray]] = [
        ("overlapping extract (repeated 2010-12-01..09 block)", _overlap_duplicates(keys, ts)),
        ("exact duplicate line", _repeated(keys)),
        (
            "no customer id (guest checkout or stock write-off)",
            (cust.isna() | (cust == "")).to_numpy(),
        ),
        ("bad-debt adjustment (A invoice)", invoice.str.startswith("A").to_numpy()),
        (
            "non-product code (postage, fees, discounts, vouchers, tests)",
            ~code.str.match(_PRODUCT_CODE).fillna(False).to_numpy(),
        ),
        ("zero price", (price == 0).to_numpy()),
        (
            "cancellation with positive quantity",
            (invoice.str.startswith("C") & (qty > 0)).to_numpy(),
        ),
    ]
    keep = _drop(reasons, report)
    _check_price(price, keep, source, "Price")
    tx = pd.DataFrame(
        {
            "customer_id": cust,
            "order_id": invoice,
            "ts": ts,
            "item_id": code,
            "quantity": qty,
            "unit_price": price,
            "country": _text(raw["Country"]) if "Country" in raw.columns else None,
        },
        index=raw.index,
        copy=False,  # the kept rows are the one copy
    )[keep]
    names = raw["Description"][keep] if "Description" in raw.columns else None
    del raw, ts, qty, price, invoice, code, cust, keys, reasons  # only the kept rows go on
    return _finish(tx, report, names, source)


def _quantity_and_price(
    raw: pd.DataFrame, mapping: Mapping[str, str], source: str
) -> tuple[pd.Series, pd.Series]:
    """Quantity and unit price per row; from an order ``amount`` when one is mapped."""
    qty = _parse_num(raw, mapping["quantity"], source) if "quantity" in mapping else None
    if "amount" not in mapping:
        return qty, _parse_num(raw, mapping["unit_price"], source)
    amount = _parse_num(raw, mapping["amount"], source)
    if qty is None:
        qty = pd.Series(np.where(amount < 0, -1.0, 1.0), index=raw.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        price = (amount / qty).where(qty != 0, 0.0).abs()
    return qty, price


def _returns(raw: pd.DataFrame, m: LogMapping, qty: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Quantity signed by the mapping's returns rule, and the rows ``drop`` removes."""
    if m.returns == "flag":
        flag = raw[m.return_column].astype("str").str.strip().isin(m.return_values)
        qty = qty.abs().where(~flag, -qty.abs())
    return qty, (qty < 0).to_numpy()


def load_csv(
    path: str | Path,
    mapping: LogMapping | Mapping[str, str],
    *,
    date_format: str | None = None,
    dayfirst: bool = False,
) -> Loaded:
    """Load any shop's CSV or Parquet dataset through a column mapping (:mod:`features.mapping`;
    a plain {contract column: file column} dict with ``date_format`` / ``dayfirst`` is one too).

    Only the mapped columns are read. Quantity and unit price come from ``amount`` when one
    is mapped (``unit_price = amount / quantity``, quantity 1 when none is mapped); the
    returns rule signs or drops returns. Rows without a customer id and zero-value rows are
    dropped and counted; exact duplicates (of the mapped columns) are dropped and counted.
    """
    m = (
        mapping
        if isinstance(mapping, LogMapping)
        else LogMapping(columns=dict(mapping), date_format=date_format, dayfirst=dayfirst)
    )
    cols = m.columns
    source = str(path)
    text_cols = ("customer_id", "order_id", "item_id", "ts", "channel", "country", "item_name")
    raw = read_table(
        path, dtype={cols[c]: "category" for c in text_cols if c in cols}, columns=m.used_columns
    )
    missing = [v for v in m.used_columns if v not in raw.columns]
    if missing:
        raise DataContractError(source, missing[0], f"missing mapped column(s) {missing}")
    raw = raw[m.used_columns]
    report = CleaningReport(source=source, rows_in=len(raw), sha256=file_sha256(path))
    keys = pd.util.hash_pandas_object(raw, index=False).to_numpy()  # the lines as written
    ts = _parse_ts(raw, cols["ts"], source, m.date_format, m.dayfirst)
    cust = _text(raw[cols["customer_id"]])
    qty, price = _quantity_and_price(raw, cols, source)
    qty, dropped_returns = _returns(raw, m, qty)
    if "order_id" in cols:
        order = _text(raw[cols["order_id"]])
    else:
        order = cust.astype("str").fillna("") + "@" + ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    reasons = [
        ("exact duplicate line", _repeated(keys)),
        ("no customer id", (cust.isna() | (cust == "")).to_numpy()),
        ("zero quantity or zero value", ((qty == 0) | (price == 0)).to_numpy()),
    ]
    if m.returns == "drop":
        reasons.append(("return (mapping: returns: drop)", dropped_returns))
    keep = _drop(reasons, report)
    if "amount" not in cols:
        _check_price(price, keep, source, cols["unit_price"])
    tx = pd.DataFrame(
        {"customer_id": cust, "order_id": order, "ts": ts, "quantity": qty, "unit_price": price},
        index=raw.index,
        copy=False,  # the kept rows are the one copy
    )
    if "item_id" in cols:
        tx["item_id"] = _text(raw[cols["item_id"]], upper=True)
    for opt in ("channel", "country"):
        if opt in cols:
            tx[opt] = _text(raw[cols[opt]])
    names = raw[cols["item_name"]][keep] if "item_name" in cols and "item_id" in cols else None
    tx = tx[keep]
    del raw, ts, cust, qty, price, order, keys, reasons  # only the kept rows go on
    return _finish(tx, report, names, source)


def load_transactions(path: str | Path, mapping: LogMapping | None = None) -> Loaded:
    """Load a transaction log: through ``mapping`` when one is given (any shop's export,
    :func:`load_csv`); else Online Retail II, recognised by its header; else a CSV whose
    header uses the contract's column names (``amount`` accepted instead of quantity and
    unit price).
    """
    if mapping is not None:
        return load_csv(path, mapping)
    path = Path(path)
    header = table_columns(path)
    if set(_RETAIL_COLUMNS) <= set(header):
        return load_online_retail(path)
    columns = {c: c for c in MAPPABLE if c in header}
    missing = [c for c in ("customer_id", "ts") if c not in columns]
    if "amount" not in columns:
        missing += [c for c in ("quantity", "unit_price") if c not in columns]
    if missing:
        raise DataContractError(
            str(path),
            missing[0],
            f"header is neither Online Retail II nor the transactions contract: "
            f"missing {missing} (found {header}); give a column mapping (--mapping FILE.yaml, "
            f"see examples/mappings/)",
        )
    return load_csv(path, columns)


HILLSTROM_ARMS = {
    "Mens E-Mail": "mens_email",
    "Womens E-Mail": "womens_email",
    "No E-Mail": "control",
}
_HILLSTROM_COLUMNS = [
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
]


def load_hillstrom(path: str | Path) -> pd.DataFrame:
    """Load the Hillstrom e-mail experiment as a campaign table.

    Columns: ``treatment`` (mens_email / womens_email / control), pre-treatment features
    (recency, history, mens, womens, newbie, zip_code, channel — categoricals as category
    dtype) and outcomes (visit, conversion, spend).
    """
    source = str(path)
    raw = read_table(path)
    missing = [c for c in _HILLSTROM_COLUMNS if c not in raw.columns]
    if missing:
        raise DataContractError(source, missing[0], f"missing required column(s) {missing}")
    arm = raw["segment"].map(HILLSTROM_ARMS)
    if arm.isna().any():
        raise DataContractError(
            source,
            "segment",
            f"unknown arm (expected {list(HILLSTROM_ARMS)})",
            raw.index[arm.isna()].tolist(),
        )
    out = pd.DataFrame(index=raw.index)
    out["treatment"] = arm
    for col in ("recency", "history", "mens", "womens", "newbie", "visit", "conversion", "spend"):
        out[col] = _parse_num(raw, col, source)
    for col in ("zip_code", "channel"):
        out[col] = raw[col].astype("category")
    return out.reset_index(drop=True)


def hillstrom_arm_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per-arm customers, visit rate, conversion rate and mean spend."""
    return df.groupby("treatment", observed=True).agg(
        n=("visit", "size"),
        visit=("visit", "mean"),
        conversion=("conversion", "mean"),
        spend=("spend", "mean"),
    )
