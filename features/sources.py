"""Several transaction logs as one, on unified customers.

A brand's purchases sit in several systems — the online shop, a store POS export — each
with its own customer ids. :func:`load_sources` loads each log (:func:`load_transactions`),
qualifies the ids of every source but the primary one (``pos:777``; order ids too, so two
systems' order numbers never collide, :func:`core.identity.profile_id`), concatenates them
in time order and applies the identity map (profile id → unified customer, from
:meth:`core.store.ProfileStore.identity_map`), so features, stage and scores are computed
once per person. The cleaning report keeps each source's counts and how many source
customers the map joined.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.identity import erasure_hash, profile_id
from features.loaders import CleaningReport, Loaded, load_transactions
from features.mapping import LogMapping

__all__ = ["Source", "drop_erased", "load_sources", "unify"]


@dataclass(frozen=True)
class Source:
    """A named transaction log (CSV/.gz or Parquet, in any format :func:`load_transactions` reads)."""

    name: str
    path: Path
    mapping: LogMapping | None = None  # an export read through a column mapping

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"source name {self.name!r}: must be non-empty, without ':'")


def _qualified(loaded: Loaded, source: str, primary: str) -> pd.DataFrame:
    tx = loaded.transactions
    if source == primary:
        return tx
    tx = tx.copy()
    for col in ("customer_id", "order_id"):
        tx[col] = [profile_id(source, v, primary) for v in tx[col].astype(str)]
    return tx


def drop_erased(tx: pd.DataFrame, erased: Collection[str]) -> tuple[pd.DataFrame, int]:
    """``tx`` without the rows of customers whose :func:`core.identity.erasure_hash` is in
    ``erased`` (the store's suppression list), and how many rows that dropped."""
    if not erased:
        return tx, 0
    ids = tx["customer_id"].astype(str)
    gone = {c for c in ids.unique() if erasure_hash(c) in erased}
    if not gone:
        return tx, 0
    keep = ~ids.isin(gone).to_numpy()
    return tx[keep].reset_index(drop=True), int((~keep).sum())


def unify(tx: pd.DataFrame, identity: Mapping[str, str]) -> pd.DataFrame:
    """``tx`` with each ``customer_id`` replaced by its unified customer (ids the map does
    not name are their own customer)."""
    if not identity:
        return tx
    ids = tx["customer_id"].astype(str)
    mapped = ids.map(identity)
    if not mapped.notna().any():
        return tx
    out = tx.copy()
    out["customer_id"] = mapped.fillna(ids).astype(tx["customer_id"].dtype)
    return out


def _merged_report(parts: Sequence[tuple[str, Loaded]], tx: pd.DataFrame) -> CleaningReport:
    report = CleaningReport(
        source=" + ".join(f"{name}={ld.report.source}" for name, ld in parts),
        rows_in=sum(ld.report.rows_in for _, ld in parts),
    )
    for _, ld in parts:
        for reason, n in ld.report.dropped.items():
            report.dropped[reason] = report.dropped.get(reason, 0) + n
    report.per_source = {
        name: {
            "rows_in": ld.report.rows_in,
            "rows_kept": ld.report.rows_kept,
            "customers": ld.report.customers,
            "orders": ld.report.orders,
        }
        for name, ld in parts
    }
    report.count(tx)
    report.sha256 = ",".join(str(ld.report.sha256) for _, ld in parts)
    return report


def load_sources(
    primary: Source,
    more: Sequence[Source] = (),
    identity: Mapping[str, str] | None = None,
    erased: Collection[str] = (),
) -> Loaded:
    """The transactions of ``primary`` and ``more`` sources on unified customers, without
    erased customers (``erased``: their hashes; dropped rows are counted in the report).
    With one source, no identity map and nobody erased, exactly :func:`load_transactions`."""
    names = [primary.name, *(s.name for s in more)]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    parts = [(s.name, load_transactions(s.path, s.mapping)) for s in (primary, *more)]
    if more:
        tx = pd.concat([_qualified(ld, n, primary.name) for n, ld in parts], ignore_index=True)
        tx = tx.sort_values("ts", kind="stable").reset_index(drop=True)
    else:
        tx = parts[0][1].transactions
    tx, n_source = drop_erased(tx, erased)
    before = tx["customer_id"].nunique()
    tx = unify(tx, identity or {})
    linked = before - tx["customer_id"].nunique()
    tx, n_unified = drop_erased(tx, erased)
    if tx is parts[0][1].transactions:
        return parts[0][1]
    items = pd.concat([ld.items for _, ld in parts], ignore_index=True)
    items = items.drop_duplicates("item_id").reset_index(drop=True)
    report = _merged_report(parts, tx)
    if n_source + n_unified:
        report.dropped["erased customer (right to erasure)"] = n_source + n_unified
    report.linked_customers = int(linked)
    return Loaded(tx, report, items)
