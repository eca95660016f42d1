"""What retraining makes of the service's outcomes: the attribution summary and the log
with the store's purchase events appended as orders (its fingerprint says what was trained on).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pandas as pd

from features.contracts import validate_transactions
from features.loaders import Loaded

__all__ = ["attribution_summary", "with_event_orders"]


def attribution_summary(attributed: pd.DataFrame, purchases: pd.DataFrame) -> dict[str, Any]:
    """Counts and conversion rates of treated (contacted) vs hold-out decisions."""
    a = attributed
    holdout = a["holdout"].astype(bool)
    treated = a["contact"].astype(bool) & ~holdout
    conv = a["converted"].astype(bool)

    def rate(mask: pd.Series) -> float | None:
        return round(float(conv[mask].mean()), 6) if mask.any() else None

    out: dict[str, Any] = {
        "decisions": len(a),
        "eligible": int(a["revive"].astype(bool).sum()),
        "treated": int(treated.sum()),
        "holdout": int(holdout.sum()),
        "treated_conversions": int(conv[treated].sum()),
        "holdout_conversions": int(conv[holdout].sum()),
        "treated_conversion_rate": rate(treated),
        "holdout_conversion_rate": rate(holdout),
        "treated_revenue": round(float(a.loc[treated, "revenue"].sum()), 2),
        "holdout_revenue": round(float(a.loc[holdout, "revenue"].sum()), 2),
        "purchases_from_events": int((purchases["source"] == "events").sum()),
        "purchases_from_log": int((purchases["source"] == "log").sum()),
    }
    if out["treated_conversion_rate"] is not None and out["holdout_conversion_rate"] is not None:
        out["observed_uplift"] = round(
            out["treated_conversion_rate"] - out["holdout_conversion_rate"], 6
        )
    return out


def with_event_orders(loaded: Loaded, purchases: pd.DataFrame, timezone: str) -> Loaded:
    """The log plus the store's purchase events as orders (one line each: quantity 1 at the
    event's value, no item), marked ``source = events`` and order id ``event:<id>``.

    Times become the log's wall clock in ``timezone``. The data fingerprint (sha256) covers
    the appended rows, so the run's fingerprint says what was really trained on.
    """
    ev = purchases.loc[purchases["source"] == "events"]
    tx = loaded.transactions.assign(source="log")
    if ev.empty:
        return replace(loaded, transactions=tx)
    ts = pd.to_datetime(ev["ts"], utc=True).dt.tz_convert(timezone).dt.tz_localize(None)
    fallback = ev["customer_id"].astype(str) + "@" + ts.dt.strftime("%Y-%m-%dT%H:%M:%S")
    order = ev["order_id"].astype(object).where(ev["order_id"].notna(), fallback)
    rows = validate_transactions(
        pd.DataFrame(
            {
                "customer_id": ev["customer_id"].astype(str).to_numpy(),
                "order_id": ("event:" + order.astype(str)).to_numpy(),
                "ts": ts.to_numpy(),
                "quantity": 1.0,
                "unit_price": ev["value"].astype(float).clip(lower=0.0).to_numpy(),
            }
        ),
        "store purchase events",
    ).assign(source="events")
    out = pd.concat([tx, rows], ignore_index=True).sort_values("ts", kind="stable")
    out = out.reset_index(drop=True)
    digest = hashlib.sha256((loaded.report.sha256 or "").encode())
    digest.update(rows.to_csv(index=False).encode())
    report = replace(
        loaded.report,
        source=f"{loaded.report.source} + {len(rows):,} store purchase events",
        rows_kept=len(out),
        customers=int(out["customer_id"].nunique()),
        orders=int(out.loc[out["quantity"] > 0, "order_id"].nunique()),
        last_ts=str(out["ts"].max()),
        sha256=digest.hexdigest(),
    )
    return Loaded(out, report, loaded.items)
