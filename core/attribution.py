"""Outcome attribution: which purchases count for which decision.

Purchases come from the store's ``purchase`` events (live, through ``/events``) and,
optionally, from a transaction log in the ``features`` transactions contract (e.g. a log
exported after the snapshot). :func:`load_purchases` turns both into one order per row and
drops a purchase reported by both sources.

Attribution rule (:func:`attribute`, last-touch within a window): a purchase at ``t`` is
credited to the customer's *latest* decision with ``decided_at <= t < decided_at + window``
(default 14 days, ``Settings.attribution_window_days``). A later decision for the same
customer, of any campaign, cuts the earlier one's window short. Treated and hold-out
decisions are attributed alike — that is what makes the hold-out comparison fair: the
control group's purchases are what the treated customers would have bought anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.store import ContactStore, as_utc

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "DEFAULT_FUTURE_TOLERANCE_SECONDS",
    "DEFAULT_MAX_EVENT_ORDER_RATIO",
    "DEFAULT_WINDOW",
    "MAX_PURCHASE_VALUE",
    "PURCHASE_COLUMNS",
    "attribute",
    "load_purchases",
    "log_orders",
]

DEFAULT_WINDOW = timedelta(days=14)
# Defaults shared by the service's ``events:`` settings and ``training.retrain``'s options.
MAX_PURCHASE_VALUE = 1_000_000.0  # a purchase event's largest credible value (currency)
DEFAULT_FUTURE_TOLERANCE_SECONDS = 300.0  # clock skew allowed for event times
DEFAULT_MAX_EVENT_ORDER_RATIO = 3.0  # event orders in a week vs the log's reference orders
PURCHASE_COLUMNS = ["customer_id", "ts", "value", "order_id", "source"]
ATTRIBUTION_COLUMNS = [
    "decision_id",
    "customer_id",
    "campaign_id",
    "decided_at",
    "holdout",
    "revive",
    "contact",
    "channel",
    "offer_type",
    "intent",
    "stage",
    "tier",
    "priority",
    "incentive_cost",
    "contact_cost",
    "orders",
    "revenue",
    "converted",
    "first_purchase_at",
]
_TS = "datetime64[ns, UTC]"


def _utc(ts: pd.Series, zone: str) -> pd.Series:
    """Timestamps as UTC: naive ones are wall-clock times in ``zone``."""
    ts = pd.to_datetime(ts)
    if ts.dt.tz is None:
        ts = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    return ts.dt.tz_convert("UTC").astype(_TS)


def _empty_purchases() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "ts": pd.Series(dtype=_TS),
            "value": pd.Series(dtype="float64"),
            "order_id": pd.Series(dtype=object),
            "source": pd.Series(dtype=object),
        }
    )


def log_orders(
    transactions: pd.DataFrame,
    start: datetime,
    end: datetime,
    log_timezone: str = "UTC",
) -> pd.DataFrame:
    """Orders of a transaction log with ``start <= ts < end`` (one row per customer × order).

    Lines with ``quantity <= 0`` (returns, cancellations) are not purchases; an order's value
    is the sum of its positive lines, its time its first line. Naive log times are wall-clock
    times in ``log_timezone``.
    """
    missing = [
        c
        for c in ("customer_id", "order_id", "ts", "quantity", "unit_price")
        if c not in transactions
    ]
    if missing:
        raise ValueError(f"transactions lack column(s) {missing} of the transactions contract")
    lines = transactions.loc[transactions["quantity"] > 0]
    if lines.empty:
        return _empty_purchases()
    lines = lines.assign(
        _value=lines["quantity"].astype(float) * lines["unit_price"].astype(float),
        _ts=_utc(lines["ts"], log_timezone),
    )
    orders = (
        lines.groupby(["customer_id", "order_id"], sort=False, observed=True)
        .agg(ts=("_ts", "min"), value=("_value", "sum"))
        .reset_index()
    )
    lo, hi = pd.Timestamp(as_utc(start)), pd.Timestamp(as_utc(end))
    orders = orders.loc[orders["ts"].notna() & (orders["ts"] >= lo) & (orders["ts"] < hi)]
    return pd.DataFrame(
        {
            "customer_id": orders["customer_id"].astype(str).astype(object),
            "ts": orders["ts"].astype(_TS),
            "value": orders["value"].astype("float64"),
            "order_id": orders["order_id"].astype(str).astype(object),
            "source": "log",
        }
    )


def load_purchases(
    store: ContactStore,
    start: datetime,
    end: datetime,
    transactions: pd.DataFrame | None = None,
    *,
    log_timezone: str = "UTC",
    max_value: float = MAX_PURCHASE_VALUE,
) -> pd.DataFrame:
    """Purchases with ``start <= ts < end``: the store's ``purchase`` events plus, if given,
    the orders of a transaction log (:func:`log_orders`).

    Columns ``customer_id, ts (UTC), value, order_id, source ('events'|'log')``. A purchase
    event's ``dedup_key`` is its order id (``/events`` stores the ``order_id`` there) and a
    missing ``value`` counts as 0; an event whose value is not in ``[0, max_value]`` (stored
    before ``/events`` bounded it) is left out, so one absurd row cannot make revenue
    infinite. A purchase in both sources — same customer and order id, or same customer,
    time and value (to the cent) — is kept once, as the log's row.
    """
    ev = store.events_between(start, end, event="purchase")
    ev = ev.loc[ev["value"].isna() | ev["value"].between(0.0, max_value)]
    events = pd.DataFrame(
        {
            "customer_id": ev["customer_id"].astype(str).astype(object),
            "ts": pd.to_datetime(ev["ts"], utc=True).astype(_TS),
            "value": ev["value"].astype("float64").fillna(0.0),
            "order_id": ev["dedup_key"].astype(object).where(ev["dedup_key"].notna(), None),
            "source": "events",
        }
    )
    if transactions is None:
        out = events
    else:
        log = log_orders(transactions, start, end, log_timezone)
        if len(log) and len(events):
            by_order = set(zip(log["customer_id"], log["order_id"], strict=True))
            by_time = set(zip(log["customer_id"], log["ts"], log["value"].round(2), strict=True))
            dup = np.fromiter(
                (
                    (c, o) in by_order or (c, t, v) in by_time
                    for c, o, t, v in zip(
                        events["customer_id"],
                        events["order_id"],
                        events["ts"],
                        events["value"].round(2),
                        strict=True,
                    )
                ),
                bool,
                len(events),
            )
            events = events.loc[~dup]
        out = pd.concat([x for x in (log, events) if len(x)], ignore_index=True)
        if out.empty:
            out = _empty_purchases()
    out = out.sort_values(["ts", "customer_id", "source"], kind="stable").reset_index(drop=True)
    return out[PURCHASE_COLUMNS]


def _payload_field(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, Mapping):
            return None
        payload = payload.get(key)
    return payload


def _decision_frame(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decision columns of the attribution, read from the store frame and its payload."""
    payload = (
        decisions["payload"]
        if "payload" in decisions
        else pd.Series([{}] * len(decisions), index=decisions.index)
    )
    holdout = decisions["holdout"].astype(bool)
    revive = decisions["revive"].astype(bool)
    channel = decisions["channel"].astype(object).where(decisions["channel"].notna(), None)
    stated = payload.map(lambda p: _payload_field(p, "contact"))
    contact = (revive & ~holdout & channel.notna()).where(stated.isna(), stated.astype(object))
    contact = contact.astype(bool)

    def cost(name: str) -> pd.Series:
        raw = payload.map(lambda p: _payload_field(p, "economics", name))
        return pd.to_numeric(raw, errors="coerce").fillna(0.0).where(contact, 0.0)

    return pd.DataFrame(
        {
            "decision_id": decisions["decision_id"].astype(str).astype(object),
            "customer_id": decisions["customer_id"].astype(str).astype(object),
            "campaign_id": decisions["campaign_id"].astype(str).astype(object),
            "decided_at": pd.to_datetime(decisions["ts"], utc=True).astype(_TS),
            "holdout": holdout,
            "revive": revive,
            "contact": contact,
            "channel": channel,
            "offer_type": decisions["offer_type"].astype(object),
            "intent": decisions["intent"].astype(object),
            "stage": payload.map(lambda p: _payload_field(p, "stage")).astype(object),
            "tier": payload.map(lambda p: _payload_field(p, "tier")).astype(object),
            "priority": decisions["priority"].astype("float64") if "priority" in decisions else 0.0,
            "incentive_cost": cost("incentive_cost").astype("float64"),
            "contact_cost": cost("contact_cost").astype("float64"),
            "_order": decisions["recorded_at"]
            if "recorded_at" in decisions
            else pd.Series(0, index=decisions.index),
        },
        index=decisions.index,
    )


def attribute(
    decisions: pd.DataFrame,
    purchases: pd.DataFrame,
    window: timedelta = DEFAULT_WINDOW,
) -> pd.DataFrame:
    """One row per decision with the purchases credited to it (see the module docstring).

    ``decisions``: the store's :meth:`~core.store.ContactStore.decisions_between` frame
    (pass every campaign's decisions: a later decision of another campaign ends a window);
    ``purchases``: :func:`load_purchases`. Columns :data:`ATTRIBUTION_COLUMNS`;
    ``incentive_cost``/``contact_cost`` are the decision's expected costs
    (``payload.economics``) for decisions that contact the customer, 0 otherwise (hold-out).
    Vectorised with :func:`pandas.merge_asof` (backward, by customer).
    """
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise ValueError(f"attribution window must be a positive timedelta, got {window!r}")
    d = _decision_frame(decisions)
    d = d.sort_values(["decided_at", "_order", "decision_id"], kind="stable").reset_index(drop=True)
    d = d.drop(columns="_order")
    orders = np.zeros(len(d), np.int64)
    revenue = np.zeros(len(d))
    first = pd.Series(pd.NaT, index=d.index, dtype=_TS)
    if len(d) and len(purchases):
        p = pd.DataFrame(
            {
                "customer_id": purchases["customer_id"].astype(str).astype(object),
                "ts": pd.to_datetime(purchases["ts"], utc=True).astype(_TS),
                "value": purchases["value"].astype("float64").fillna(0.0),
            }
        ).sort_values("ts", kind="stable")
        right = pd.DataFrame(
            {
                "customer_id": d["customer_id"],
                "ts": d["decided_at"],
                "_row": np.arange(len(d)),
            }
        )
        hit = pd.merge_asof(p, right, on="ts", by="customer_id", direction="backward")
        hit = hit.loc[hit["_row"].notna()]
        rows = hit["_row"].to_numpy(np.int64)
        start_ns = d["decided_at"].array.asi8[rows]
        inside = hit["ts"].array.asi8 - start_ns < window // timedelta(microseconds=1) * 1000
        hit = hit.loc[inside].assign(_row=rows[inside])
        if len(hit):
            agg = hit.groupby("_row").agg(
                orders=("value", "size"), revenue=("value", "sum"), first=("ts", "min")
            )
            idx = agg.index.to_numpy(np.int64)
            orders[idx] = agg["orders"].to_numpy()
            revenue[idx] = agg["revenue"].to_numpy()
            first.iloc[idx] = agg["first"].to_numpy()
    out = d.assign(
        orders=orders,
        revenue=revenue,
        converted=orders > 0,
        first_purchase_at=first,
    )
    return out[ATTRIBUTION_COLUMNS]
