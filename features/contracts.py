"""The three data contracts of the product: transactions, customers, message events.

Every source (Online Retail II, a shop's CSV export, the live API) is adapted to these
frames by a loader; everything downstream relies only on them. ``validate_*`` coerces
dtypes and raises :class:`DataContractError` naming the source, the column, the reason
and up to five offending rows (the frame's index labels; loaders index frames by the
line number in the source file so the rows point into the file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "BOOL_WORDS",
    "CHANNELS",
    "CUSTOMER_COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_TYPES",
    "TRANSACTION_COLUMNS",
    "DataContractError",
    "per_category",
    "per_value",
    "validate_customers",
    "validate_events",
    "validate_transactions",
]

TRANSACTION_COLUMNS: dict[str, str] = {
    "customer_id": "str",
    "order_id": "str",
    "ts": "datetime64[ns]",
    "item_id": "str",  # optional: a log without items still gets churn and next purchase
    "quantity": "float64",  # negative = return or cancellation
    "unit_price": "float64",
    "channel": "str",  # optional
    "country": "str",  # optional
}
_TX_REQUIRED = ("customer_id", "order_id", "ts", "quantity", "unit_price")
# How exports spell a yes/no (lower-cased, trimmed)
BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "y": True,
    "0": False,
    "false": False,
    "no": False,
    "n": False,
}

CHANNELS = ("sms", "email", "wechat", "app_push")
CUSTOMER_COLUMNS: dict[str, str] = {
    "customer_id": "str",
    "locale": "str",
    "timezone": "str",
    "birthday": "datetime64[ns]",
    **{f"consent_{c}": "bool" for c in CHANNELS},
    "preferred_channel": "str",
    "phone": "str",
    "email": "str",
    "wechat_openid": "str",
    "member_id": "str",
}
EVENT_TYPES = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "unsubscribed",
    "bounced",
)
EVENT_COLUMNS: dict[str, str] = {
    "customer_id": "str",
    "ts": "datetime64[ns]",
    "channel": "str",
    "campaign_id": "str",
    "event": "str",
}


class DataContractError(ValueError):
    """A frame or file violates a data contract; says where, which column, why and which rows."""

    def __init__(self, source: str, column: str | None, reason: str, rows: Sequence = ()):
        self.source = source
        self.column = column
        self.reason = reason
        self.rows = [_plain(r) for r in list(rows)[:5]]
        self.n_rows = len(rows)
        where = f"column '{column}': " if column else ""
        tail = ""
        if self.rows:
            more = f" and {self.n_rows - len(self.rows)} more" if self.n_rows > 5 else ""
            tail = f" (rows {', '.join(map(str, self.rows))}{more})"
        super().__init__(f"{source}: {where}{reason}{tail}")


def _plain(x):
    return x.item() if isinstance(x, np.generic) else x


def _require(df: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataContractError(
            source, missing[0], f"missing required column(s) {missing}; found {list(df.columns)}"
        )


def per_value(s: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` of a categorical column, applied once to each distinct value and spread back
    to the rows (missing stays missing); a column of any other dtype is passed whole. A log
    has far fewer distinct ids, dates and names than lines."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        return fn(s)
    out = fn(pd.Series(s.cat.categories)).reindex(s.cat.codes.to_numpy())  # -1: NaN/NaT
    out.index = s.index
    return out


def per_category(s: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` (text → text) of a categorical column, applied once to each distinct value, the
    result still categorical, its categories sorted as ``astype("category")`` sorts them
    (values ``fn`` makes equal become one; missing stays missing): a loader's text columns
    stay integer codes through cleaning and the contract. Any other column is passed whole."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        return fn(s)
    code, values = pd.factorize(fn(pd.Series(s.cat.categories.astype("str"))), sort=True)
    codes = np.append(code, -1)[s.cat.codes.to_numpy()]  # -1 (missing) stays missing
    return pd.Series(pd.Categorical.from_codes(codes, values), index=s.index)


def _as_str(df: pd.DataFrame, col: str, source: str, required: bool) -> pd.Series:
    # a categorical is cleaned once per distinct value and stays one (a code per line)
    s = per_category(df[col], _clean_text)
    if required and s.isna().any():
        raise DataContractError(source, col, "empty value", df.index[s.isna()].tolist())
    return s


def _clean_text(s: pd.Series) -> pd.Series:
    """Ids and labels as pandas' str dtype, stripped; empty is missing (NaN). Integer ids are
    fine; floats like 13085.0 are rendered without the ".0"."""
    if pd.api.types.is_float_dtype(s):
        s = s.map(lambda v: np.nan if pd.isna(v) else (str(int(v)) if v == int(v) else str(v)))
    s = s.astype("string").str.strip()
    return s.mask(s == "").astype("str")


def _as_ts(df: pd.DataFrame, col: str, source: str, required: bool = True) -> pd.Series:
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
    else:
        out = pd.to_datetime(s, errors="coerce", format="mixed")
        bad = out.isna() & s.notna()
        if bad.any():
            raise DataContractError(source, col, "unparsable timestamp", df.index[bad].tolist())
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    out = out.astype("datetime64[ns]")
    if required and out.isna().any():
        raise DataContractError(source, col, "missing timestamp", df.index[out.isna()].tolist())
    return out


def _as_float(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    out = pd.to_numeric(df[col], errors="coerce").astype("float64")
    bad = ~np.isfinite(out.to_numpy())
    if bad.any():
        raise DataContractError(source, col, "not a finite number", df.index[bad].tolist())
    return out


def validate_transactions(df: pd.DataFrame, source: str = "transactions") -> pd.DataFrame:
    """Coerce ``df`` to the transactions contract or raise :class:`DataContractError`.

    Rules: required columns present; ids non-empty; ``ts`` parses; ``quantity`` and
    ``unit_price`` finite; ``unit_price`` not negative (a negative price on a sale is a
    data error, not a discount; bad-debt adjustments must be removed by the loader).
    Returns a new frame with exactly the contract's columns (optional ones filled with
    missing values) in contract order. Ids and labels are text (pandas' ``str``); a column
    that comes in categorical (as the loaders read them) stays a categorical of that text, a
    code per line rather than a string (:func:`per_category`; issue #19).
    """
    _require(df, _TX_REQUIRED, source)
    out = pd.DataFrame(index=df.index)
    out["customer_id"] = _as_str(df, "customer_id", source, required=True)
    out["order_id"] = _as_str(df, "order_id", source, required=True)
    out["ts"] = _as_ts(df, "ts", source)
    if "item_id" in df.columns:
        out["item_id"] = _as_str(df, "item_id", source, required=False)
    else:
        out["item_id"] = pd.Series(np.nan, index=df.index, dtype="str")
    out["quantity"] = _as_float(df, "quantity", source)
    out["unit_price"] = _as_float(df, "unit_price", source)
    neg = out["unit_price"] < 0
    if neg.any():
        raise DataContractError(
            source, "unit_price", "negative price on a sale", df.index[neg].tolist()
        )
    for col in ("channel", "country"):
        out[col] = (
            _as_str(df, col, source, required=False)
            if col in df.columns
            else pd.Series(np.nan, index=df.index, dtype="str")
        )
    return out


def validate_customers(df: pd.DataFrame, source: str = "customers") -> pd.DataFrame:
    """Coerce a customer-profile frame: ``customer_id`` unique; consents boolean; locale known."""
    _require(df, ["customer_id"], source)
    out = pd.DataFrame(index=df.index)
    out["customer_id"] = _as_str(df, "customer_id", source, required=True)
    dup = out["customer_id"].duplicated(keep=False)
    if dup.any():
        raise DataContractError(source, "customer_id", "duplicate id", df.index[dup].tolist())
    for col, dtype in CUSTOMER_COLUMNS.items():
        if col == "customer_id":
            continue
        if col not in df.columns:
            out[col] = False if dtype == "bool" else None
        elif dtype == "bool":
            raw = df[col].astype("string").str.strip().str.lower()
            mapped = raw.map(BOOL_WORDS)
            bad = mapped.isna() & raw.notna()
            if bad.any():
                raise DataContractError(source, col, "not a boolean", df.index[bad].tolist())
            out[col] = mapped.fillna(False).astype(bool)
        elif dtype.startswith("datetime"):
            out[col] = _as_ts(df, col, source, required=False)
        else:
            out[col] = _as_str(df, col, source, required=False)
    bad = out["locale"].notna() & ~out["locale"].isin(["zh-CN", "en"])
    if bad.any():
        raise DataContractError(
            source, "locale", "locale must be zh-CN or en", df.index[bad].tolist()
        )
    return out


def validate_events(df: pd.DataFrame, source: str = "events") -> pd.DataFrame:
    """Coerce a message-event frame: known channel and event type, parsable timestamps."""
    _require(df, ["customer_id", "ts", "channel", "event"], source)
    out = pd.DataFrame(index=df.index)
    out["customer_id"] = _as_str(df, "customer_id", source, required=True)
    out["ts"] = _as_ts(df, "ts", source)
    out["channel"] = _as_str(df, "channel", source, required=True)
    bad = ~out["channel"].isin(CHANNELS)
    if bad.any():
        raise DataContractError(
            source, "channel", f"unknown channel (allowed {CHANNELS})", df.index[bad].tolist()
        )
    out["campaign_id"] = (
        _as_str(df, "campaign_id", source, required=False) if "campaign_id" in df.columns else None
    )
    out["event"] = _as_str(df, "event", source, required=True)
    bad = ~out["event"].isin(EVENT_TYPES)
    if bad.any():
        raise DataContractError(
            source, "event", f"unknown event (allowed {EVENT_TYPES})", df.index[bad].tolist()
        )
    return out
