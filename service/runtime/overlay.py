"""Live purchases since the snapshot: each customer's last purchase time and items bought.

Purchases posted to ``events`` update this overlay, read by the next decision; the store
keeps the events and purchases since the snapshot are re-read from it at start-up
(:meth:`PurchaseOverlay.load_since`). Items of such purchases live only in memory (the event
log has no item column): after a restart the transaction log is the source again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.store import ContactStore

__all__ = ["LivePurchases", "PurchaseOverlay"]

log = logging.getLogger(__name__)


@dataclass
class LivePurchases:
    """One customer's purchases since the snapshot: last time and item -> last epoch second."""

    last_purchase: datetime | None = None
    items: dict[str, float] = field(default_factory=dict)

    def merged(self, bought: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        """``bought`` (item -> (last epoch second, times)) with these purchases added."""
        if not self.items:
            return bought
        out = dict(bought)
        for item, ts in self.items.items():
            last, n = out.get(item, (-math.inf, 0))
            out[item] = (max(last, ts), n + 1)
        return out


class PurchaseOverlay:
    """The live purchases of every customer who bought since the snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._customers: dict[str, LivePurchases] = {}

    def get(self, customer_id: str) -> LivePurchases | None:
        """The customer's live purchases, if any."""
        return self._customers.get(customer_id)

    def note(self, customer_id: str, ts: datetime, items: Sequence[str]) -> None:
        """A purchase at ``ts`` of ``items`` (possibly none known)."""
        with self._lock:
            ov = self._customers.setdefault(customer_id, LivePurchases())
            if ov.last_purchase is None or ts > ov.last_purchase:
                ov.last_purchase = ts
            for item in items:
                ov.items[item] = max(ov.items.get(item, -math.inf), ts.timestamp())

    def load_since(self, store: ContactStore, since: datetime) -> None:
        """The purchase events stored since ``since`` (their items are unknown); a store that
        cannot answer is logged and skipped: it may be shared and large, never block start-up."""
        try:
            ev = store.events_between(since, datetime(9999, 1, 1, tzinfo=UTC), event="purchase")
        except Exception as exc:
            log.warning("could not read purchase events since the snapshot: %s", exc)
            return
        for cid, ts in zip(ev["customer_id"], ev["ts"], strict=True):
            self.note(str(cid), ts.to_pydatetime(), [])
