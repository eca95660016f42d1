"""Cross-sell targets (new items bought in the label window) and top-k metrics of a model."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from features.snapshot import id_codes
from servable.crosssell.base import Recommender
from training.metrics import hit_rate_at_k, ndcg_at_k, recall_at_k

__all__ = [
    "cross_sell_targets",
    "customers_before",
    "evaluate",
    "sample_customers",
    "sample_rows",
    "stable_sample",
]


def customers_before(
    transactions: pd.DataFrame, cutoff: pd.Timestamp, active_days: int | None = None
) -> list[str]:
    """Customers with any row before ``cutoff`` (or a purchase in the ``active_days`` before it)."""
    t = cutoff
    ts = transactions["ts"]
    if active_days is None:
        mask = ts < t
    else:
        mask = (ts < t) & (ts >= t - pd.Timedelta(days=active_days))
        mask &= transactions["quantity"] > 0
    return sorted(transactions.loc[mask, "customer_id"].unique().tolist())


def cross_sell_targets(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp,
    horizon_days: int,
    customers: Iterable[str] | None = None,
) -> dict[str, set[str]]:
    """Items each customer bought in ``[cutoff, cutoff + H)`` and never bought before ``cutoff``.

    Only customers with at least one such item appear; ``customers`` restricts the result.
    A "buy" is a row with quantity > 0 (a return is not a purchase).
    """
    t0 = cutoff.to_datetime64()
    t1 = (cutoff + pd.Timedelta(days=horizon_days)).to_datetime64()
    ts = transactions["ts"].to_numpy()
    buys = (transactions["quantity"].to_numpy() > 0) & transactions["item_id"].notna().to_numpy()
    # (customer, item) pairs as one integer: the history is compared as integers, not strings
    customer, customer_ids = id_codes(transactions["customer_id"])
    item, item_ids = id_codes(transactions["item_id"])
    n_items = max(len(item_ids), 1)
    pair = customer.astype(np.int64) * n_items + item
    window = pd.unique(pair[buys & (ts >= t0) & (ts < t1)])
    # the window's pairs bought before: the history is probed against the (small) window,
    # not hashed whole (~0.2 GB on the 16× tiled log)
    before = pair[buys & (ts < t0)]
    new = np.setdiff1d(window, before[pd.Series(before).isin(window).to_numpy()])
    found = pd.DataFrame(
        {"customer_id": customer_ids[new // n_items], "item_id": item_ids[new % n_items]}
    )
    if customers is not None:
        found = found[found["customer_id"].isin(list(customers))]
    return {c: set(g.tolist()) for c, g in found.groupby("customer_id", sort=True)["item_id"]}


def evaluate(
    recommender: Recommender,
    targets: Mapping[str, set[str]],
    k: int = 10,
    customers: Iterable[str] | None = None,
) -> dict[str, float]:
    """recall@k, ndcg@k and hit_rate@k averaged over customers with targets (+ n_customers).

    ``customers`` restricts the population (customers without targets are skipped).
    """
    ids = sorted(targets) if customers is None else sorted(set(customers) & set(targets))
    ids = [c for c in ids if targets[c]]
    if not ids:
        raise ValueError("no customer with cross-sell targets to evaluate")
    recs = recommender.recommend(ids, k=k, exclude_seen=True)
    recommended = [recs[c] for c in ids]
    relevant = [targets[c] for c in ids]
    return {
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(recommended, relevant, k),
        "n_customers": float(len(ids)),
    }


def stable_sample(ids: Iterable[str], n: int | None) -> list[str]:
    """At most ``n`` of ``ids`` (sorted): those with the smallest CRC-32 of the id.

    A stable sample: the same customers whatever the order or the other rows, so every grid
    point and every run sees the same people. ``None``: every id."""
    ids = sorted(set(ids))
    if n is None or len(ids) <= n:
        return ids
    return sorted(sorted(ids, key=lambda c: (zlib.crc32(c.encode()), c))[:n])


def sample_customers(targets: Mapping[str, set[str]], n: int | None) -> dict[str, set[str]]:
    """At most ``n`` customers of ``targets`` (:func:`stable_sample`).

    Tuning needs a ranking of grid points, not the metric to the last digit; a few thousand
    customers give that, and the cost of each evaluation then stops growing with the
    customer base. ``None``: everyone."""
    if n is not None and n < 1:
        raise ValueError(f"validation_users: at least 1, or None for every customer; got {n!r}")
    return {c: targets[c] for c in stable_sample(targets, n)}


def sample_rows(transactions: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """The rows of at most ``n`` customers (:func:`stable_sample`); all rows when the log has
    no more (or ``n`` is None). Whole customers, so each keeps every row of their history."""
    if n is not None and n < 1:
        raise ValueError(f"tuning_customers: at least 1, or None for every customer; got {n!r}")
    ids = transactions["customer_id"].unique()
    if n is None or len(ids) <= n:
        return transactions
    return transactions[transactions["customer_id"].isin(stable_sample(ids, n))]
