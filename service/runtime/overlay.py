"""Purchases since the snapshot, as a decision sees them: last purchase time and items bought.

Purchase events posted to ``/events`` are stored with their item ids; every decision reads
the customer's purchases since the snapshot in the same statement as its contact history
(:func:`core.store.queries.history_statement`), so a purchase posted to any replica is seen
by the next decision on every replica, and a restart forgets nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["LivePurchases"]


@dataclass
class LivePurchases:
    """One customer's purchases since the snapshot: last time and item -> last epoch second."""

    last_purchase: datetime | None = None
    items: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, purchases: Sequence[tuple[datetime, Sequence[str]]]) -> LivePurchases | None:
        """The purchases (time, item ids) read with the history; None when there are none."""
        if not purchases:
            return None
        live = cls()
        for ts, items in purchases:
            if live.last_purchase is None or ts > live.last_purchase:
                live.last_purchase = ts
            for item in items:
                live.items[item] = max(live.items.get(item, -math.inf), ts.timestamp())
        return live

    def merged(self, bought: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        """``bought`` (item -> (last epoch second, times)) with these purchases added."""
        if not self.items:
            return bought
        out = dict(bought)
        for item, ts in self.items.items():
            last, n = out.get(item, (-math.inf, 0))
            out[item] = (max(last, ts), n + 1)
        return out
