"""Which scope each endpoint needs, and what a key's scopes allow."""

from __future__ import annotations

from collections.abc import Iterable

from service.api_config import SCOPES, Scope

__all__ = ["ENDPOINT_SCOPES", "SCOPES", "Scope", "allows"]

# POST endpoints and the scope a key needs for each. Every other path (health probes,
# /metrics unless api.protect_metrics, /docs.json) needs no key; BentoML answers 404/405
# for paths and methods it does not have.
ENDPOINT_SCOPES: dict[str, Scope] = {
    "/decide": "decide",
    "/decide_batch": "decide",
    "/recommend": "decide",
    "/customer": "read",
    "/report": "read",
    "/journeys": "read",
    "/journeys/customer": "read",
    "/journeys/dry_run": "read",
    "/journeys/pause": "admin",
    "/events": "events",
    "/points": "events",  # an adjust also needs admin (service.points)
    "/customers": "events",
    "/customers/unmerge": "admin",
    "/customers/erase": "admin",
    "/reload": "admin",
    "/retrain": "admin",
    "/retrain_status": "admin",
    "/keys/create": "admin",
    "/keys/list": "admin",
    "/keys/revoke": "admin",
}


def allows(granted: Iterable[str], needed: Scope) -> bool:
    """True if a key with scopes ``granted`` may call an endpoint needing ``needed``
    (``admin`` includes every scope)."""
    granted = set(granted)
    return needed in granted or "admin" in granted
