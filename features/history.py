"""Customers' item history as columns: what a replica keeps of every (customer, item) pair.

A 64× tiled shop has 25 M (customer, item) pairs; as a dict per customer of tuples they were
most of a replica's memory. :class:`ItemHistory` holds them as a few arrays — per pair an
item code, the last time (epoch seconds) and, for purchases, the times bought — grouped by
customer and ranked within each customer most bought first, then most recent, then item id
(the order of :func:`service.engine.regulars`), so a customer's regulars are the head of
their rows. It reads as a mapping customer → {item: value}; a customer's dict is built only
when asked for, one decision's worth at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ItemHistory"]


@dataclass(frozen=True, eq=False)
class ItemHistory(Mapping[str, dict[str, Any]]):
    """customer → item → ``(last, times)`` (purchases) or ``last`` (returns), as columns.

    ``customers`` are sorted; customer ``k``'s rows are ``offsets[k]:offsets[k + 1]`` of
    ``item_codes`` (into ``item_ids``), ``last`` and ``times`` (None for returns)."""

    customers: np.ndarray
    offsets: np.ndarray
    item_ids: np.ndarray
    item_codes: np.ndarray
    last: np.ndarray
    times: np.ndarray | None = None

    @classmethod
    def from_codes(
        cls,
        customer: np.ndarray,
        customers: np.ndarray,
        item: np.ndarray,
        item_ids: np.ndarray,
        last: np.ndarray,
        times: np.ndarray | None = None,
    ) -> ItemHistory:
        """From one row per pair: ``customer`` and ``item`` are codes into the distinct
        ``customers`` and ``item_ids`` (any order, as are the rows)."""
        customer, customers = _sorted(customer, customers)
        item, item_ids = _sorted(item, item_ids)
        last = np.asarray(last, dtype=np.float64)
        keys = [item, -last] if times is None else [item, -last, -np.asarray(times)]
        order = np.lexsort([*keys, customer])
        offsets = np.zeros(len(customers) + 1, np.int64)
        np.cumsum(np.bincount(customer, minlength=len(customers)), out=offsets[1:])
        return cls(
            customers=customers,
            offsets=offsets,
            item_ids=item_ids,
            item_codes=item.astype(np.int32)[order],
            last=last[order],
            times=None if times is None else np.asarray(times, dtype=np.int64)[order],
        )

    @classmethod
    def from_pairs(
        cls,
        customer: Any,
        item: Any,
        last: np.ndarray,
        times: np.ndarray | None = None,
    ) -> ItemHistory:
        """From one row per (customer, item) pair: ids as any array-like of strings (or a
        categorical), rows in any order."""
        c, customers = pd.factorize(customer)
        i, item_ids = pd.factorize(item)
        return cls.from_codes(c, np.asarray(customers), i, np.asarray(item_ids), last, times)

    @classmethod
    def empty(cls, times: bool) -> ItemHistory:
        """No customer at all (a log without items); ``times``: a purchase history."""
        none = np.zeros(0, np.int64)
        return cls.from_codes(none, none, none, none, np.zeros(0), none if times else None)

    @property
    def pairs(self) -> int:
        """How many (customer, item) pairs it holds."""
        return len(self.item_codes)

    def _rows(self, customer: str) -> slice | None:
        k = int(np.searchsorted(self.customers, customer))
        if k == len(self.customers) or self.customers[k] != customer:
            return None
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def __getitem__(self, customer: str) -> dict[str, Any]:
        rows = self._rows(customer)
        if rows is None:
            raise KeyError(customer)
        items = self.item_ids[self.item_codes[rows]].tolist()
        last = self.last[rows].tolist()
        if self.times is None:
            return dict(zip(items, last, strict=True))
        return dict(zip(items, zip(last, self.times[rows].tolist(), strict=True), strict=True))

    def __iter__(self) -> Iterator[str]:
        return iter(self.customers.tolist())

    def __len__(self) -> int:
        return len(self.customers)

    def __contains__(self, customer: object) -> bool:
        return isinstance(customer, str) and self._rows(customer) is not None

    def head(self, customer: str, n: int) -> list[str]:
        """The customer's first ``n`` items in rank order (for purchases: their regulars,
        most bought first); empty for a customer without history."""
        rows = self._rows(customer)
        if rows is None:
            return []
        stop = min(rows.stop, rows.start + n)
        return self.item_ids[self.item_codes[rows.start : stop]].tolist()

    def without(self, customers: Collection[str]) -> ItemHistory:
        """The history without the rows of ``customers`` (erasures)."""
        drop = np.isin(self.customers, list(customers))
        if not drop.any():
            return self
        per = np.diff(self.offsets)
        keep_rows = np.repeat(~drop, per)
        offsets = np.zeros(int((~drop).sum()) + 1, np.int64)
        np.cumsum(per[~drop], out=offsets[1:])
        return ItemHistory(
            customers=self.customers[~drop],
            offsets=offsets,
            item_ids=self.item_ids,
            item_codes=self.item_codes[keep_rows],
            last=self.last[keep_rows],
            times=None if self.times is None else self.times[keep_rows],
        )

    def customer_codes(self) -> np.ndarray:
        """Each row's customer as a position in ``customers`` (for storing the history as one
        long table)."""
        return np.repeat(np.arange(len(self.customers), dtype=np.int32), np.diff(self.offsets))


def _sorted(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes`` into ``uniques`` re-coded into the sorted ``uniques`` (as strings)."""
    uniques = np.asarray(uniques, dtype=str)
    order = np.argsort(uniques, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[np.asarray(codes, dtype=np.int64)], uniques[order]
