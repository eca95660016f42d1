"""The point-in-time feature snapshot of the transaction log and each customer's item history.

Built once at start-up (and on a data reload): the log is cut at the day after its last
transaction, features are computed as of that cut-off and every customer's bought and
returned items are kept with their last time (epoch seconds UTC) for the item rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from features.loaders import CleaningReport, load_transactions
from features.snapshot import build_features
from service.config import Settings
from service.engine import regulars

__all__ = ["REGULARS_KEPT", "FeatureRow", "Snapshot", "load_snapshot"]

REGULARS_KEPT = 50  # own items kept per customer, most bought first


@dataclass
class Snapshot:
    """Everything derived from the transaction log at start-up (or on a data reload)."""

    cutoff: pd.Timestamp
    at: datetime
    features: pd.DataFrame
    positions: dict[str, int]
    columns: list[str]
    values: np.ndarray  # features as a float matrix (row lookups without pandas)
    bought: dict[str, dict[str, tuple[float, int]]]
    returned: dict[str, dict[str, float]]
    regulars: dict[str, list[str]]
    item_names: dict[str, str]
    report: CleaningReport
    seconds: float
    column_index: dict[str, int] = field(init=False)  # feature name -> column of ``values``

    def __post_init__(self) -> None:
        self.column_index = {name: i for i, name in enumerate(self.columns)}


class FeatureRow(Mapping[str, float]):
    """One customer's row of :attr:`Snapshot.values`, read by feature name. A decision reads
    a handful of columns: building a dict of all of them cost more than the reads."""

    __slots__ = ("_index", "_row")

    def __init__(self, index: Mapping[str, int], row: np.ndarray) -> None:
        self._index = index
        self._row = row

    def __getitem__(self, name: str) -> float:
        return float(self._row[self._index[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _epoch(ts: pd.Series, zone: str) -> np.ndarray:
    """Naive wall-clock times of the log (in ``zone``) as epoch seconds UTC."""
    local = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    fallback = ts.astype("datetime64[ns]").astype("int64") / 1e9
    secs = local.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    out = secs.astype("int64").to_numpy() / 1e9
    return np.where(local.isna().to_numpy(), fallback.to_numpy(), out)


def _item_history(
    tx: pd.DataFrame, zone: str
) -> tuple[dict[str, dict[str, tuple[float, int]]], dict[str, dict[str, float]]]:
    """Per customer: item -> (last bought, times bought) and item -> last returned."""
    bought: dict[str, dict[str, tuple[float, int]]] = {}
    returned: dict[str, dict[str, float]] = {}
    if "item_id" not in tx.columns or not tx["item_id"].notna().any():
        return bought, returned
    lines = tx.loc[tx["item_id"].notna(), ["customer_id", "item_id", "ts", "quantity"]]
    lines = lines.assign(epoch=_epoch(lines["ts"], zone))
    buy = (
        lines[lines["quantity"] > 0]
        .groupby(["customer_id", "item_id"], sort=False)["epoch"]
        .agg(["max", "size"])
    )
    for (cid, item), last, n in zip(
        buy.index, buy["max"].to_numpy(), buy["size"].to_numpy(), strict=True
    ):
        bought.setdefault(cid, {})[item] = (float(last), int(n))
    ret = (
        lines[lines["quantity"] < 0].groupby(["customer_id", "item_id"], sort=False)["epoch"]
    ).max()
    for (cid, item), last in zip(ret.index, ret.to_numpy(), strict=True):
        returned.setdefault(cid, {})[item] = float(last)
    return bought, returned


def load_snapshot(settings: Settings) -> Snapshot:
    """Load the configured log and build the snapshot at the day after its last transaction."""
    t0 = time.perf_counter()
    loaded = load_transactions(settings.data_path)
    tx = loaded.transactions
    if tx.empty:
        raise ValueError(f"{settings.data_path}: no usable transactions")
    cutoff = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    feats = build_features(tx, cutoff)
    at = cutoff.tz_localize(settings.default_timezone).tz_convert("UTC").to_pydatetime()
    bought, returned = _item_history(tx, settings.default_timezone)
    names = {}
    if len(loaded.items):
        names = dict(
            zip(loaded.items["item_id"].astype(str), loaded.items["name"].astype(str), strict=True)
        )
    return Snapshot(
        cutoff=cutoff,
        at=at,
        features=feats,
        positions={c: i for i, c in enumerate(feats.index.astype(str))},
        columns=[str(c) for c in feats.columns],
        values=feats.to_numpy(dtype=float),
        bought=bought,
        returned=returned,
        regulars={c: regulars(items, REGULARS_KEPT) for c, items in bought.items()},
        item_names=names,
        report=loaded.report,
        seconds=time.perf_counter() - t0,
    )
