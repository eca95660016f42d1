"""Settings of the HTTP API itself: scopes, rate limits and input bounds (``api:`` block).

Kept apart from :mod:`service.config` (which embeds :class:`ApiSettings` as ``Settings.api``)
because nothing here is decision policy: it is who may call, how often, and what a request
may contain.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["SCOPES", "ApiSettings", "RateLimit", "RateLimits", "Scope"]

# decide: /decide, /decide_batch, /recommend · read: /customer, /report · events: /events ·
# admin: /reload, /retrain, /retrain_status, /keys/* (and every other scope) ·
# metrics: /metrics when api.protect_metrics is true.
Scope = Literal["decide", "read", "events", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = get_args(Scope)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RateLimit(_Model):
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=10_000_000)


class RateLimits(_Model):
    """One bucket per key and scope (per replica: each replica counts its own requests)."""

    decide: RateLimit = RateLimit(per_second=500, burst=1000)
    read: RateLimit = RateLimit(per_second=100, burst=200)
    events: RateLimit = RateLimit(per_second=100, burst=200)
    admin: RateLimit = RateLimit(per_second=1, burst=10)
    metrics: RateLimit = RateLimit(per_second=10, burst=20)

    def of(self, scope: Scope) -> RateLimit:
        return getattr(self, scope)


class ApiSettings(_Model):
    """Access control, rate limits and request bounds of the HTTP API."""

    max_body_bytes: int = Field(default=1_000_000, ge=1, description="request size limit")
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="a request body must arrive within this"
    )
    now_window_days: int = Field(
        default=730,
        ge=1,
        le=36_500,
        description="`now` must be this close to the server clock or to the data's end",
    )
    key_cache_seconds: float = Field(
        default=5.0, ge=0, le=3600, description="a revoked key stops working within this"
    )
    protect_metrics: bool = Field(default=False, description="/metrics needs a metrics key")
    bootstrap_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="the admin key created on a first start (else a random one is printed)",
    )
    rate_limits: RateLimits = RateLimits()
