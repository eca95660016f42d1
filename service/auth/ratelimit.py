"""Token-bucket rate limits per API key and scope, in this process.

Each replica keeps its own buckets (no shared state on the request path): behind a load
balancer spreading N replicas evenly, a key gets up to N times the configured rate. The
``RateLimit-*`` header fields follow the IETF httpapi draft "RateLimit header fields for
HTTP" (limit, remaining, seconds to a full bucket) and a 429 carries ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from service.api_config import RateLimit, RateLimits, Scope

__all__ = ["Allowance", "RateLimiter"]

_MAX_BUCKETS = 100_000  # keys x scopes; far above any real deployment, bounds memory


@dataclass(frozen=True)
class Allowance:
    """The outcome of one request against its bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # seconds until one request is allowed (0 if allowed now)

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.retry_after).encode()))
        return out


class RateLimiter:
    """A bucket per ``(key_id, scope)``: ``burst`` tokens, refilled at ``per_second``."""

    def __init__(self, limits: RateLimits, clock: object = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, last time
        self._lock = threading.Lock()

    def take(self, key_id: str, scope: Scope) -> Allowance:
        """Spend one token of the key's ``scope`` bucket if there is one."""
        limit: RateLimit = self.limits.of(scope)
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            tokens, last = self._buckets.get((key_id, scope), (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - last) * limit.per_second)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.clear()
            self._buckets[(key_id, scope)] = (tokens, now)
        missing = limit.burst - tokens
        return Allowance(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_seconds=math.ceil(missing / limit.per_second),
            retry_after=0 if allowed else math.ceil((1.0 - tokens) / limit.per_second),
        )
