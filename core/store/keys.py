"""API keys in the shared store: created, listed, revoked, verified — never stored in clear.

A key is ``rvk_<key_id>_<secret>``: ``key_id`` (8 hex characters) is public and names the
key in listings and logs; the secret is 256 random bits (:func:`secrets.token_urlsafe`).
Only the SHA-256 of the whole key is stored. A fast hash is enough because the keys are
random and long (a key-derivation function such as scrypt protects *low-entropy passwords*
against guessing; nothing can guess 256 random bits) — the practice of GitHub's and
Stripe's tokens. Verification looks the hash up, so it costs one indexed read; the service
caches verified keys for a few seconds (:mod:`service.auth.access`).

Keys live in the store's database, so every replica sharing the store sees the same keys.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from core.store.db import Database
from core.store.records import InvalidRecord
from core.store.schema import api_keys

__all__ = ["KEY_PREFIX", "ApiKey", "KeyStore", "hash_key"]

KEY_PREFIX = "rvk_"
_NAME_MAX = 64


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(token: str) -> str:
    """The stored form of a key: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _row_key(row: sa.Row) -> ApiKey:
    scopes = tuple(s for s in row.scopes.split(",") if s)
    return ApiKey(row.key_id, row.name, scopes, row.created_at, row.revoked_at)


def _checked(name: str, scopes: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    name = name.strip()
    if not name or len(name) > _NAME_MAX:
        raise InvalidRecord(f"key name: 1..{_NAME_MAX} characters, got {len(name)}")
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    if not out or any(not s.isidentifier() for s in out):
        raise InvalidRecord(f"key scopes: one or more names, got {list(scopes)!r}")
    return name, out


class KeyStore:
    """The ``api_keys`` table of a store (:meth:`core.store.SqlContactStore.keys`)."""

    def __init__(self, db: Database):
        self._db = db

    def create(
        self, name: str, scopes: Iterable[str], token: str | None = None
    ) -> tuple[ApiKey, str]:
        """Store a new key and return it with its token — the only time the token is seen.

        ``token``: use this secret instead of a random one (a deployment's bootstrap key);
        it must be at least 32 characters.
        """
        created = self._create(name, scopes, token, only_first=False)
        assert created is not None
        return created

    def create_first(
        self, name: str, scopes: Iterable[str], token: str | None = None
    ) -> tuple[ApiKey, str] | None:
        """Like :meth:`create`, but only when the store has no active key (first start);
        ``None`` otherwise. Atomic: of several replicas starting together, one creates it."""
        return self._create(name, scopes, token, only_first=True)

    def _create(
        self, name: str, scopes: Iterable[str], token: str | None, only_first: bool
    ) -> tuple[ApiKey, str] | None:
        name, scopes = _checked(name, scopes)
        if token is not None and len(token) < 32:
            raise InvalidRecord("a given key must have at least 32 characters")
        key = ApiKey(secrets.token_hex(4), name, scopes, datetime.now(UTC))
        token = token or f"{KEY_PREFIX}{key.key_id}_{secrets.token_urlsafe(32)}"
        row = {
            "key_id": key.key_id,
            "name": key.name,
            "scopes": ",".join(key.scopes),
            "secret_hash": hash_key(token),
            "created_at": key.created_at,
        }
        with self._db.tx(write=True, lock="revival:keys") as conn:
            if only_first:
                active = sa.select(sa.func.count()).select_from(api_keys)
                if conn.execute(active.where(api_keys.c.revoked_at.is_(None))).scalar_one():
                    return None
            conn.execute(api_keys.insert().values(**row))
        return key, token

    def verify(self, token: str) -> ApiKey | None:
        """The active key with this token, or ``None`` (unknown or revoked)."""
        with self._db.tx() as conn:
            row = conn.execute(
                sa.select(api_keys).where(api_keys.c.secret_hash == hash_key(token))
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        return _row_key(row)

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first."""
        q = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self._db.tx() as conn:
            return [_row_key(r) for r in conn.execute(q)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id (idempotent); :class:`LookupError` if there is none."""
        now = datetime.now(UTC)
        with self._db.tx(write=True, lock="revival:keys") as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise LookupError(f"no API key with id {key_id!r}")
        return _row_key(row)
