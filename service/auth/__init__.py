"""API keys, scopes and rate limits of the HTTP API (enforced by :mod:`service.web.gate`).

* :mod:`service.auth.scopes` — the scope each endpoint needs;
* :mod:`service.auth.access` — bearer tokens verified against the store's keys, cached;
* :mod:`service.auth.ratelimit` — token buckets per key and scope;
* :mod:`service.auth.cli` — ``python -m service.auth create|list|revoke``.
"""

from __future__ import annotations

from service.auth.access import KeyCache, bearer_token
from service.auth.ratelimit import Allowance, RateLimiter
from service.auth.scopes import ENDPOINT_SCOPES, SCOPES, Scope, allows

__all__ = [
    "ENDPOINT_SCOPES",
    "SCOPES",
    "Allowance",
    "KeyCache",
    "RateLimiter",
    "Scope",
    "allows",
    "bearer_token",
]
