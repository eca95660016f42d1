"""Checks the store's purchase events before retraining appends them to the log as orders.

Purchase events reach training (:func:`training.retrain.with_event_orders`), so a flood of
bad ones poisons every model: one incident stamped 511 purchases with the server clock, moved
the merged log's end years past its data and made every retrain fail. Retraining therefore
refuses (:class:`EventPurchasesRefused`, nothing trained or registered) when

(a) a purchase event is later than the wall clock (the run's ``until``) plus a tolerance: the
    feed's clock or time zone is wrong, and the merged log's end would move past now; or
(b) event-sourced orders after the log's end do not continue it: a week with such orders
    follows more than :data:`MAX_GAP_WEEKS` weeks without any order (log or events) — the
    incident's case, where a handful of server-clock stamps years after the log moved every
    training cutoff into the empty years between; or
(c) the event-sourced orders of a calendar week exceed ``max_ratio`` x that week's reference
    orders: the log's own orders in that week, or — for weeks after the log's end, where live
    events replace the log and a ratio near 1 is the normal case — the log's median weekly
    orders over its last 52 weeks. A reference is at least 1 order.

The message names the weeks, counts and references, the customers and order ids with most
events there, and the SQL filter that shows the events.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from core.store import as_utc

__all__ = [
    "MAX_GAP_WEEKS",
    "EventPurchasesRefused",
    "check_event_purchases",
    "weekly_event_orders",
]

MAX_GAP_WEEKS = 4  # empty weeks allowed between the log's end and event orders (and between those)
_TOP = 5


class EventPurchasesRefused(ValueError):
    """The store's purchase events look poisoned; retraining stops before any training."""


def _week(ts: pd.Series, timezone: str) -> pd.Series:
    """The Monday (log wall clock in ``timezone``, naive) starting each time's week."""
    local = pd.to_datetime(ts, utc=True).dt.tz_convert(timezone).dt.tz_localize(None)
    return local.dt.normalize() - pd.to_timedelta(local.dt.weekday, unit="D")


def _log_weeks(transactions: pd.DataFrame) -> pd.Series:
    """Orders (distinct ids with a positive line) per calendar week of the log, every week
    from its first to its last (empty weeks 0); naive log times are its wall clock."""
    lines = transactions.loc[transactions["quantity"] > 0, ["order_id", "ts"]]
    if lines.empty:
        return pd.Series(dtype="int64")
    ts = pd.to_datetime(lines["ts"])
    week = ts.dt.normalize() - pd.to_timedelta(ts.dt.weekday, unit="D")
    counts = lines.assign(week=week.to_numpy()).groupby("week")["order_id"].nunique()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq="7D")
    return counts.reindex(full, fill_value=0).astype("int64")


def weekly_event_orders(
    events: pd.DataFrame, transactions: pd.DataFrame, timezone: str
) -> pd.DataFrame:
    """Per calendar week with event-sourced orders: ``week``, ``events`` (orders),
    ``reference`` (see the module docstring) and ``basis`` ('log week' | 'log median')."""
    cols = ["week", "events", "reference", "basis"]
    if events.empty:
        return pd.DataFrame(columns=cols)
    log = _log_weeks(transactions)
    per_week = events.assign(week=_week(events["ts"], timezone)).groupby("week").size()
    last = log.index.max() if len(log) else None
    median = float(log.iloc[-52:].median()) if len(log) else 0.0
    rows = []
    for week, n in per_week.items():
        after = last is None or week > last
        ref = median if after else float(log.get(week, 0))
        rows.append((week, int(n), max(ref, 1.0), "log median" if after else "log week"))
    return pd.DataFrame(rows, columns=cols)


def _who(events: pd.DataFrame) -> str:
    top = events["customer_id"].astype(str).value_counts().head(_TOP)
    customers = ", ".join(f"{c} ({n})" for c, n in top.items())
    orders = events["order_id"].dropna().astype(str).head(_TOP).tolist()
    return f"customers {customers}; order ids {', '.join(orders) or '(none)'}"


def _filter(lo: datetime, hi: datetime | None) -> str:
    cond = f"ts >= '{lo:%Y-%m-%d %H:%M:%S}'" + (f" AND ts < '{hi:%Y-%m-%d %H:%M:%S}'" if hi else "")
    return f"SELECT * FROM events WHERE event = 'purchase' AND {cond} (UTC)"


def _check_continues_log(
    events: pd.DataFrame, weeks: pd.DataFrame, log: pd.Series, timezone: str
) -> None:
    """Refuse event weeks after the log's end that follow more than :data:`MAX_GAP_WEEKS`
    empty weeks (rule (b) of the module docstring)."""
    if log.empty:
        return
    previous = log.index.max()
    for week in sorted(w for w in weeks["week"] if w > log.index.max()):
        empty = (week - previous).days // 7 - 1
        if empty > MAX_GAP_WEEKS:
            n = int(weeks.loc[weeks["week"] == week, "events"].iloc[0])
            flagged = events.loc[_week(events["ts"], timezone) >= week]
            lo = pd.Timestamp(week).tz_localize(timezone).tz_convert("UTC").to_pydatetime()
            raise EventPurchasesRefused(
                f"purchase events do not continue the log: the week of {week:%Y-%m-%d} "
                f"({n} event orders, weeks in {timezone}) follows {empty} weeks without any "
                f"order after the week of {previous:%Y-%m-%d} (at most {MAX_GAP_WEEKS}; the "
                f"log ends in the week of {log.index.max():%Y-%m-%d}): server-clock stamps or "
                f"wrong dates? Look at {_who(flagged)}; inspect: {_filter(lo, None)}. "
                "Nothing was trained or registered."
            )
        previous = week


def check_event_purchases(
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    *,
    until: datetime,
    tolerance: timedelta,
    max_ratio: float,
    timezone: str,
) -> None:
    """Raise :class:`EventPurchasesRefused` if the purchase events would poison training.

    ``events``: event-sourced purchases (``customer_id``, ``ts`` UTC, ``order_id``; those
    later than ``until`` included: the caller reads them too), already without the ones the
    log also has; ``transactions``: the log (naive wall-clock times in ``timezone``).
    """
    latest = as_utc(until) + tolerance
    future = events.loc[pd.to_datetime(events["ts"], utc=True) > pd.Timestamp(latest)]
    if len(future):
        raise EventPurchasesRefused(
            f"{len(future)} purchase event(s) are later than the wall clock {until:%Y-%m-%d %H:%M} "
            f"UTC + {tolerance.total_seconds():g} s (up to "
            f"{pd.to_datetime(future['ts'], utc=True).max():%Y-%m-%d %H:%M} UTC): the merged log's "
            f"end would move past now. Look at {_who(future)}; inspect: {_filter(latest, None)}. "
            "Nothing was trained or registered."
        )
    weeks = weekly_event_orders(events, transactions, timezone)
    _check_continues_log(events, weeks, _log_weeks(transactions), timezone)
    bad = weeks.loc[weeks["events"] > max_ratio * weeks["reference"]]
    if bad.empty:
        return
    parts = [
        f"week of {r.week:%Y-%m-%d}: {r.events} event orders vs reference {r.reference:g} "
        f"({r.basis})"
        for r in bad.itertuples()
    ]
    week = _week(events["ts"], timezone)
    flagged = events.loc[week.isin(set(bad["week"]))]
    lo = pd.Timestamp(bad["week"].min()).tz_localize(timezone).tz_convert("UTC")
    hi = (pd.Timestamp(bad["week"].max()) + pd.Timedelta(days=7)).tz_localize(timezone)
    raise EventPurchasesRefused(
        f"purchase events exceed {max_ratio:g} x the reference orders in {len(bad)} week(s) "
        f"(weeks in {timezone}): {'; '.join(parts[:10])}"
        f"{'; ...' if len(parts) > 10 else ''}. Look at {_who(flagged)}; inspect: "
        f"{_filter(lo.to_pydatetime(), hi.tz_convert('UTC').to_pydatetime())}. "
        "Nothing was trained or registered (raise --max-event-order-ratio only if the "
        "events are real)."
    )
