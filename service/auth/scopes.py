"""Which scope each endpoint needs, and what a key's scopes allow."""

from __future__ import annotations

from collections.abc import Iterable

from service.api_config import SCOPES, Scope

__all__ = ["ENDPOINT_SCOPES", "OPEN_PATHS", "SCOPES", "Scope", "allows"]

# POST endpoints and the scope a key needs for each. Anything not listed here or in
# OPEN_PATHS is BentoML's (404/405).
ENDPOINT_SCOPES: dict[str, Scope] = {
    "/decide": "decide",
    "/decide_batch": "decide",
    "/recommend": "decide",
    "/customer": "read",
    "/report": "read",
    "/events": "events",
    "/reload": "admin",
    "/retrain": "admin",
    "/retrain_status": "admin",
    "/keys/create": "admin",
    "/keys/list": "admin",
    "/keys/revoke": "admin",
}

# Health probes and the API description answer without a key (orchestrators and API tools
# call them); /metrics too unless api.protect_metrics.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/docs.json", "/", "/metrics"})


def allows(granted: Iterable[str], needed: Scope) -> bool:
    """True if a key with scopes ``granted`` may call an endpoint needing ``needed``
    (``admin`` includes every scope)."""
    granted = set(granted)
    return needed in granted or "admin" in granted
