"""Items for the message: the customer's own regulars or the cross-sell (ALS) candidates,
never one returned or bought too recently. See docs/design.md, "Decision engine" (Items)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from service.engine.inputs import CustomerView
from service.engine.policy import OWN_ITEM_INTENTS, PolicyParams


def regulars(bought: Mapping[str, tuple[float, int]], limit: int | None = None) -> list[str]:
    """A customer's own items, most bought first (then most recent, then id)."""
    order = sorted(bought.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
    return [item for item, _ in order[:limit]]


def message_items(
    intent: str,
    view: CustomerView,
    candidates: Sequence[str],
    now_s: float,
    k: int,
    p: PolicyParams,
) -> tuple[list[str], list[str]]:
    """Up to ``k`` items for the message, and the reasons; returned items never pass.

    Intents in :data:`OWN_ITEM_INTENTS` name the customer's own most-bought items (falling
    back to the cross-sell candidates when none qualifies); the others name candidates.
    """
    returned_cut = now_s - p.return_block_days * 86400.0
    recent_cut = now_s - p.recent_purchase_days * 86400.0
    returned, bought = view.returned, view.bought  # looked up per item: O(k), not O(history)
    dropped = {"returned": 0, "recent": 0}

    def pick(pool: Sequence[str]) -> list[str]:
        chosen: list[str] = []
        for item in pool:
            if returned.get(item, -math.inf) >= returned_cut:
                dropped["returned"] += 1
            elif bought.get(item, _NEVER)[0] >= recent_cut:
                dropped["recent"] += 1
            elif item not in chosen:
                chosen.append(item)
                if len(chosen) == k:
                    break
        return chosen

    chosen: list[str] = []
    source = "cross_sell"  # the registered cross-sell model's picks
    if intent in OWN_ITEM_INTENTS:
        chosen = pick(view.regulars or regulars(view.bought))
        source = "own_regulars"
    if not chosen:
        chosen = pick(candidates)
        source = "cross_sell" if source == "cross_sell" else "cross_sell_fallback"
    reasons = [f"items:{source}:{len(chosen)}"]
    if dropped["returned"]:
        reasons.append(f"excluded_returned_{p.return_block_days:g}d:{dropped['returned']}")
    if dropped["recent"]:
        reasons.append(f"excluded_bought_{p.recent_purchase_days:g}d:{dropped['recent']}")
    return chosen, reasons


_NEVER = (-math.inf, 0)
