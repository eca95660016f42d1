"""Who is calling: bearer tokens verified against the store's keys, cached briefly.

A verified key is cached for ``api.key_cache_seconds`` (by the SHA-256 of its token, never
the token), so a request costs one hash and a dict lookup; after that the store is asked
again, which is how a key revoked on one replica stops working on every other one within
that time. Unknown tokens are not cached (nothing for a caller to fill memory with).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.store import ApiKey, KeyStore, hash_key

__all__ = ["KeyCache", "bearer_token"]

_MAX_ENTRIES = 10_000


class KeyCache:
    """Verifies ``Authorization: Bearer`` tokens (:meth:`verify`)."""

    def __init__(
        self, keys: KeyStore, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> ApiKey | None:
        """The key with ``token`` if it was verified less than ``ttl_s`` ago (no store read)."""
        hit = self._cache.get(hash_key(token))
        if hit is not None and self._clock() - hit[1] < self.ttl_s:
            return hit[0]
        return None

    def verify(self, token: str) -> ApiKey | None:
        """The active key with ``token``, or ``None`` (asks the store unless cached)."""
        if (key := self.cached(token)) is not None:
            return key
        digest, now = hash_key(token), self._clock()
        key = self.keys.verify(token)
        with self._lock:
            if key is None:
                self._cache.pop(digest, None)
            else:
                if len(self._cache) >= _MAX_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = (key, now)
        return key


def bearer_token(header: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None``."""
    if not header:
        return None
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
