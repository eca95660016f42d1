"""Request times as aware UTC datetimes (naive ones are in the policy's default time zone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.config import Settings
from service.runtime.errors import Rejected

__all__ = ["aware", "request_now"]


def aware(dt: datetime | None, settings: Settings, default: datetime | None = None) -> datetime:
    """A request time as aware UTC (naive = the configured default time zone); ``None`` is
    ``default``, or now."""
    if dt is None:
        return default if default is not None else datetime.now(UTC)
    return settings.to_utc(dt)


def request_now(
    dt: datetime | None, settings: Settings, data_end: datetime, default: datetime | None = None
) -> datetime:
    """A request's ``now`` as :func:`aware`, refused (:class:`Rejected`, 422) unless it lies
    within ``api.now_window_days`` of the server clock or of the data's end: a decision
    recorded at a time far from both would distort caps, reports and attribution."""
    at = aware(dt, settings, default)
    if dt is None:
        return at
    window = timedelta(days=settings.api.now_window_days)
    wall = datetime.now(UTC)
    if abs(at - wall) <= window or abs(at - data_end) <= window:
        return at
    raise Rejected(
        f"now: {at.isoformat()} is more than {window.days} days from both the server clock "
        f"({wall:%Y-%m-%d}) and the data's end ({data_end:%Y-%m-%d}) (api.now_window_days)"
    )
