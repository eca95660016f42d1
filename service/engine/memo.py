"""Per-settings work done once: an identity-keyed memo of what a decision derives from the
immutable settings, params and population aggregate (the formula's tables, the prior
posteriors). Kept for speed: see the comments at its two uses and docs/design.md,
"Decision engine"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

_MEMO: dict[tuple, tuple[Any, Any, Any]] = {}


def memo(build: Callable[..., _T], a: Any, b: Any, *extra: Any) -> _T:
    """``build(a, b, *extra)`` once per identity of the immutable objects ``a`` and ``b``
    (settings, params, a population aggregate) and the values ``extra``: per-decision work
    that only changes when they do. The entry keeps ``a`` and ``b`` alive, so their ids
    cannot be reused by other objects while it exists; bounded by clearing."""
    key = (build, id(a), id(b), extra)
    hit = _MEMO.get(key)
    if hit is None:
        if len(_MEMO) > 1024:
            _MEMO.clear()
        hit = _MEMO[key] = (a, b, build(a, b, *extra))
    return hit[2]
