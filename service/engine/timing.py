"""When to send: a reminder before the expected next order or now, moved to the customer's
usual ordering hour, then out of the quiet hours in the customer's own time zone. See
docs/design.md, "Decision engine" (When)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.config import QuietHours, Settings
from service.engine.inputs import CustomerView, ModelScores, feature


def zone_of(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def _next_hour(at: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The start of the next ``hour``:00 in ``zone`` at or after ``at`` (``at`` if inside it)."""
    local = at.astimezone(zone)
    if local.hour == hour:
        return at
    start = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if start <= local:
        start += timedelta(days=1)
    return start.astimezone(UTC)


def _after_quiet(at: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    """``at`` if outside the quiet window in ``zone``, else the window's end."""
    local = at.astimezone(zone)
    if not quiet.contains(local.time()):
        return at
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.astimezone(UTC)


def plan_send_at(
    now: datetime,
    *,
    customer_zone: ZoneInfo,
    log_zone: ZoneInfo,
    quiet: QuietHours,
    usual_hour: float | None,
    reminder_at: datetime | None = None,
) -> tuple[datetime, list[str]]:
    """When to send: a reminder date or now, moved to the usual hour, then out of quiet hours.

    ``usual_hour`` is the customer's most frequent ordering hour in the transaction log's
    time zone (``log_zone``); quiet hours are read in the customer's own zone.
    """
    reasons: list[str] = []
    at = now
    if reminder_at is not None and reminder_at > now:
        at = reminder_at
        reasons.append(f"reminder_before_next_order:{reminder_at.date().isoformat()}")
    if usual_hour is not None and math.isfinite(usual_hour):
        hour = int(usual_hour) % 24
        moved = _next_hour(at, hour, log_zone)
        reasons.append(f"usual_hour:{hour:02d}:00 {log_zone.key}")
        at = moved
    else:
        reasons.append("usual_hour:unknown")
    moved = _after_quiet(at, quiet, customer_zone)
    if moved != at:
        reasons.append(
            f"quiet_hours:{quiet.start.strftime('%H:%M')}-{quiet.end.strftime('%H:%M')}"
            f"->{moved.astimezone(customer_zone).strftime('%Y-%m-%d %H:%M')} {customer_zone.key}"
        )
        at = moved
    if at == now:
        reasons.append("send_now")
    return at, reasons


def naive_local(dt: datetime, zone: ZoneInfo) -> datetime:
    return dt.astimezone(zone).replace(tzinfo=None)


def expected_next_order(view: CustomerView, scores: ModelScores) -> datetime | None:
    """When the customer's next order is expected: after a purchase reported since the
    snapshot, that purchase plus their usual gap (``gap_shrunk``); else the snapshot plus the
    next-purchase model's expected days."""
    if view.last_purchase_at is not None and view.last_purchase_at > view.snapshot_at:
        gap = feature(view.features, "gap_shrunk")
        return view.last_purchase_at + timedelta(days=gap) if math.isfinite(gap) else None
    if math.isfinite(scores.expected_days):
        return view.snapshot_at + timedelta(days=float(scores.expected_days))
    return None


def decision_send_at(
    view: CustomerView,
    stage: str,
    expected_next: datetime | None,
    settings: Settings,
    zone: ZoneInfo,
    now: datetime,
    prompt: bool = False,
) -> tuple[datetime, list[str]]:
    """:func:`plan_send_at` for one customer: a reminder ``reminder_days_before`` the expected
    next order for active and loyal customers, else now (the same for every channel).
    ``prompt`` (a journey step, whose own waits chose the moment): now, outside quiet hours,
    without moving to the customer's usual hour."""
    if prompt:
        at, reasons = plan_send_at(
            now,
            customer_zone=zone,
            log_zone=settings.zone,
            quiet=settings.quiet_hours,
            usual_hour=None,
        )
        return at, ["journey_step:now", *reasons[1:]]  # not "usual_hour:unknown"
    reminder_at = None
    if stage in ("active", "loyal") and expected_next is not None:
        reminder_at = expected_next - timedelta(days=settings.reminder_days_before)
    usual = feature(view.features, "usual_hour")
    return plan_send_at(
        now,
        customer_zone=zone,
        log_zone=settings.zone,
        quiet=settings.quiet_hours,
        usual_hour=usual if math.isfinite(usual) else None,
        reminder_at=reminder_at,
    )
