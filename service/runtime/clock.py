"""Request times as aware UTC datetimes (naive ones are in the policy's default time zone)."""

from __future__ import annotations

from datetime import UTC, datetime

from service.config import Settings

__all__ = ["aware"]


def aware(dt: datetime | None, settings: Settings, default: datetime | None = None) -> datetime:
    """A request time as aware UTC (naive = the configured default time zone); ``None`` is
    ``default``, or now."""
    if dt is None:
        return default if default is not None else datetime.now(UTC)
    return settings.to_utc(dt)
