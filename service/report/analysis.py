"""Campaign report figures: treated vs hold-out, overall and per segment, with 95% intervals.

:func:`campaign_report` reads a campaign's decisions and the purchases attributed to them
(:mod:`core.attribution`: the latest decision within ``attribution_window_days`` gets the
purchase, treated and hold-out alike) and compares the two arms of the *eligible* decisions
(``revive`` true): treated = not hold-out (contacted), hold-out = the control group drawn by
the deterministic hash. Per arm: conversion (share of decisions followed by an order),
wake-up rate (the same among ``sleeping``/``lost`` customers), revenue per customer, average
order value, incentive and contact cost (the decision's expected costs), and for the treated
open/click rates per channel (decisions with an ``opened``/``clicked`` event linked by
``decision_id``, over decisions contacting on that channel).

Lifts with 95% intervals: conversion and wake-up rate by Newcombe's hybrid score interval,
revenue per customer by a percentile bootstrap with a fixed seed (:mod:`service.stats`).
Incremental revenue = revenue-per-customer lift × treated customers; ROI = (incremental
revenue − cost) / cost. The cumulative-gain chart ranks the eligible decisions by priority and
plots the incremental conversions of targeting the top share (treated minus hold-out
conversion rate among them, times their number; the uplift curve of Rzepakowski & Jaroszewicz
2012). A customer decided for in several rounds counts once per decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from core.attribution import attribute, load_purchases
from core.multitouch import channel_attribution
from core.store import FRAME_MAX, FRAME_MIN, ContactStore
from service.config import Settings, load_settings
from service.engine import UnknownCampaign
from service.stats import Interval, bootstrap_mean_diff, newcombe

__all__ = [
    "WAKE_STAGES",
    "ArmStats",
    "BadReportRequest",
    "CampaignReport",
    "ChannelStats",
    "Comparison",
    "Estimate",
    "GainPoint",
    "campaign_report",
    "gain_curve",
]

WAKE_STAGES = ("sleeping", "lost")
_STAGE_ORDER = ("new", "active", "loyal", "at_risk", "sleeping", "lost")
_TIER_ORDER = ("high", "mid", "low")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GAIN_POINTS = 101


class BadReportRequest(ValueError):
    """The report's arguments are inconsistent (e.g. end before start)."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Out):
    """A lift (treated minus hold-out) with its confidence interval."""

    estimate: float
    low: float
    high: float
    method: str


class ChannelStats(_Out):
    channel: str
    contacted: int
    sent: int
    opened: int
    clicked: int
    open_rate: float | None
    click_rate: float | None


class ArmStats(_Out):
    customers: int
    converted: int
    conversion: float | None
    asleep: int
    woke: int
    wake_up_rate: float | None
    orders: int
    revenue: float
    revenue_per_customer: float | None
    average_order_value: float | None
    incentive_cost: float
    contact_cost: float
    channels: list[ChannelStats]


class Comparison(_Out):
    """Treated vs hold-out for all eligible decisions (stage and tier None) or one segment."""

    stage: str | None
    tier: str | None
    treated: ArmStats
    holdout: ArmStats
    conversion_lift: Estimate | None
    wake_up_lift: Estimate | None
    revenue_per_customer_lift: Estimate | None
    incremental_revenue: Estimate | None
    cost: float
    roi: float | None
    significant: bool
    statement: str
    revenue_statement: str


class GainPoint(_Out):
    share: float
    customers: int
    incremental_conversions: float


class ChannelContribution(_Out):
    """Conversions credited to one channel by each multi-touch rule (:mod:`core.multitouch`)."""

    channel: str
    touches: int
    last_touch: float
    first_touch: float
    linear: float
    time_decay: float
    markov: float
    removal_effect: float


class CampaignReport(_Out):
    campaign_id: str
    configured: bool
    start: datetime | None
    end: datetime | None
    window_days: float
    currency: str
    confidence: float
    bootstrap_resamples: int
    seed: int
    generated_at: datetime
    first_decision_at: datetime | None
    last_decision_at: datetime | None
    decisions: int
    eligible: int
    not_eligible: int
    attributed_orders: int
    attributed_revenue: float
    overall: Comparison
    segments: list[Comparison]
    gain: list[GainPoint]
    channel_attribution: list[ChannelContribution] = []
    notes: list[str]


# --------------------------------------------------------------------------- statistics


def _rate(x: int, n: int) -> float | None:
    return x / n if n else None


def _estimate(iv: Interval, method: str) -> Estimate:
    return Estimate(estimate=iv.estimate, low=iv.low, high=iv.high, method=method)


def _channels(arm: pd.DataFrame, events: pd.DataFrame) -> list[ChannelStats]:
    contacted = arm.loc[arm["contact"] & arm["channel"].notna()]
    out = []
    for ch, group in contacted.groupby("channel", sort=True):
        ids = set(group["decision_id"])
        mine = events.loc[events["decision_id"].isin(ids)]
        seen = {
            k: mine.loc[mine["event"] == k, "decision_id"].nunique()
            for k in ("sent", "opened", "clicked")
        }
        n = len(group)
        out.append(
            ChannelStats(
                channel=str(ch),
                contacted=n,
                sent=seen["sent"],
                opened=seen["opened"],
                clicked=seen["clicked"],
                open_rate=_rate(seen["opened"], n),
                click_rate=_rate(seen["clicked"], n),
            )
        )
    return out


def _arm(arm: pd.DataFrame, events: pd.DataFrame, treated: bool) -> ArmStats:
    n = len(arm)
    converted = int(arm["converted"].sum())
    asleep = arm.loc[arm["stage"].isin(WAKE_STAGES)]
    woke = int(asleep["converted"].sum())
    orders = int(arm["orders"].sum())
    revenue = float(arm["revenue"].sum())
    return ArmStats(
        customers=n,
        converted=converted,
        conversion=_rate(converted, n),
        asleep=len(asleep),
        woke=woke,
        wake_up_rate=_rate(woke, len(asleep)),
        orders=orders,
        revenue=round(revenue, 2),
        revenue_per_customer=revenue / n if n else None,
        average_order_value=revenue / orders if orders else None,
        incentive_cost=round(float(arm["incentive_cost"].sum()), 4),
        contact_cost=round(float(arm["contact_cost"].sum()), 4),
        channels=_channels(arm, events) if treated else [],
    )


def _verdict(iv: Interval | None, confidence: float, scale: float, unit: str, what: str) -> str:
    if iv is None:
        return f"{what}: not enough data (an arm is empty)"
    pct = f"{confidence:.0%}"
    verdict = f"significant at {pct}" if iv.significant else f"not significant at {pct}"
    fmt = ".1f" if unit == "pp" else ".2f"
    return (
        f"{what} {iv.estimate * scale:+{fmt}} {unit} "
        f"[{iv.low * scale:{fmt}}, {iv.high * scale:{fmt}}] — {verdict}"
    )


def _compare(
    rows: pd.DataFrame,
    events: pd.DataFrame,
    stage: str | None,
    tier: str | None,
    currency: str,
    confidence: float,
    resamples: int,
    seed: int,
) -> Comparison:
    t = rows.loc[~rows["holdout"]]
    h = rows.loc[rows["holdout"]]
    treated, holdout = _arm(t, events, True), _arm(h, events, False)
    conv = wake = rpc = None
    if len(t) and len(h):
        conv = newcombe(treated.converted, len(t), holdout.converted, len(h), confidence)
        rpc = bootstrap_mean_diff(
            t["revenue"].to_numpy(float),
            h["revenue"].to_numpy(float),
            confidence,
            resamples,
            seed,
        )
        if treated.asleep and holdout.asleep:
            wake = newcombe(treated.woke, treated.asleep, holdout.woke, holdout.asleep, confidence)
    cost = treated.incentive_cost + treated.contact_cost
    incremental = None
    roi = None
    if rpc is not None:
        n = len(t)
        incremental = Interval(rpc.estimate * n, rpc.low * n, rpc.high * n)
        roi = (incremental.estimate - cost) / cost if cost > 0 else None
    return Comparison(
        stage=stage,
        tier=tier,
        treated=treated,
        holdout=holdout,
        conversion_lift=_estimate(conv, "newcombe_hybrid_score") if conv else None,
        wake_up_lift=_estimate(wake, "newcombe_hybrid_score") if wake else None,
        revenue_per_customer_lift=_estimate(rpc, f"percentile_bootstrap_{resamples}_seed{seed}")
        if rpc
        else None,
        incremental_revenue=_estimate(incremental, "rpc_lift_x_treated") if incremental else None,
        cost=round(cost, 4),
        roi=roi,
        significant=bool(conv is not None and conv.significant),
        statement=_verdict(conv, confidence, 100.0, "pp", "conversion lift"),
        revenue_statement=_verdict(rpc, confidence, 1.0, currency, "revenue per customer lift"),
    )


def gain_curve(rows: pd.DataFrame, points: int = _GAIN_POINTS) -> list[GainPoint]:
    """Incremental conversions of targeting the top share of decisions by priority.

    At each cut ``k``: (treated conversion rate − hold-out conversion rate) among the top
    ``k`` × ``k`` (0 while an arm is still empty there).
    """
    n = len(rows)
    if n == 0:
        return [GainPoint(share=0.0, customers=0, incremental_conversions=0.0)]
    order = rows.sort_values(["priority", "decision_id"], ascending=[False, True], kind="stable")
    hold = order["holdout"].to_numpy(bool)
    conv = order["converted"].to_numpy(bool)
    nt = np.cumsum(~hold)
    nc = np.cumsum(hold)
    ct = np.cumsum(conv & ~hold)
    cc = np.cumsum(conv & hold)
    k = np.arange(1, n + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inc = np.where((nt > 0) & (nc > 0), (ct / nt - cc / np.maximum(nc, 1)) * k, 0.0)
    out = [GainPoint(share=0.0, customers=0, incremental_conversions=0.0)]
    for share in np.linspace(0, 1, points)[1:]:
        j = max(int(round(share * n)), 1)
        out.append(
            GainPoint(
                share=round(float(share), 4),
                customers=j,
                incremental_conversions=round(float(inc[j - 1]), 3),
            )
        )
    return out


# --------------------------------------------------------------------------- the report


def _channel_touches(
    att: pd.DataFrame, purchases: pd.DataFrame, customers: set[str], window: timedelta
) -> list[ChannelContribution]:
    """Multi-touch attribution over the campaign's customers: every contact any campaign
    made them is a touch (at its decision time), every purchase a conversion credited over
    the touches in the attribution window before it."""
    contacts = att.loc[att["contact"] & att["customer_id"].isin(customers)]
    touches = contacts.rename(columns={"decided_at": "ts"})[["customer_id", "ts", "channel"]]
    bought = purchases.loc[purchases["customer_id"].astype(str).isin(customers)]
    if touches.empty or bought.empty:
        return []
    table = channel_attribution(touches, bought[["customer_id", "ts"]], window)
    return [
        ChannelContribution(
            channel=str(ch),
            **{k: round(float(v), 4) for k, v in row.items() if k != "touches"},
            touches=int(row["touches"]),
        )
        for ch, row in table.iterrows()
    ]


def _segment_key(stage: object, tier: object) -> tuple[int, int, str, str]:
    s, t = str(stage), str(tier)
    si = _STAGE_ORDER.index(s) if s in _STAGE_ORDER else len(_STAGE_ORDER)
    ti = _TIER_ORDER.index(t) if t in _TIER_ORDER else len(_TIER_ORDER)
    return si, ti, s, t


def _check_stored(store: ContactStore, campaign_id: str, settings: Settings) -> None:
    """Raise :class:`UnknownCampaign` unless some decision of ``campaign_id`` is stored."""
    if store.decisions_between(FRAME_MIN, FRAME_MAX, campaign_id).empty:
        known = ", ".join(c.id for c in settings.campaigns)
        raise UnknownCampaign(
            f"unknown campaign {campaign_id!r}: not configured and no decisions stored "
            f"for it; configured campaigns: {known}"
        )


def _period_bound(settings: Settings, t: datetime | None) -> datetime | None:
    """A period bound as aware UTC; one too far out to convert is a :class:`BadReportRequest`."""
    if t is None:
        return None
    try:
        return settings.to_utc(t)
    except (OverflowError, ValueError) as exc:
        raise BadReportRequest(f"{t.isoformat()} cannot be converted to UTC: {exc}") from None


def _method_notes(
    days: float, confidence: float, resamples: int, seed: int, max_value: float
) -> list[str]:
    """The report's method section: attribution, arms, intervals and cost, in words."""
    return [
        f"attribution: a purchase counts for the customer's latest decision (any campaign) "
        f"made at most {days:g} days before it, treated and hold-out alike",
        "arms: eligible decisions (revive) split by the hold-out hash; "
        "a customer decided for in several rounds counts once per decision",
        "wake-up rate: conversion among customers in stage " + " or ".join(WAKE_STAGES),
        f"intervals: {confidence:.0%}; conversion and wake-up lifts by Newcombe's hybrid "
        f"score method, revenue per customer by a percentile bootstrap "
        f"({resamples} resamples, seed {seed})",
        "cost: expected incentive + contact cost of the treated decisions; "
        "ROI = (incremental revenue - cost) / cost",
        "channel attribution: over the campaign's customers, every contact of any campaign "
        "is a touch and every purchase a conversion, spread over the touches in the "
        f"{days:g}-day window before it by last touch, first touch, linear, time decay "
        "(half-life 7 days) and the Markov-chain removal effect (core.multitouch)",
        f"left out: decisions and events dated outside {FRAME_MIN:%Y}..{FRAME_MAX:%Y} and "
        f"purchase events valued outside [0, {max_value:g}] (not credible)",
    ]


def campaign_report(
    store: ContactStore,
    campaign_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    settings: Settings | None = None,
    transactions: pd.DataFrame | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> CampaignReport:
    """The report of ``campaign_id`` for decisions made in ``[start, end)``.

    Purchases: the store's ``purchase`` events plus, if given, the orders of
    ``transactions`` (naive times in ``default_timezone``). Raises
    :class:`~service.engine.UnknownCampaign` for a campaign that is neither configured
    nor has stored decisions, :class:`BadReportRequest` when ``end <= start``.
    """
    settings = settings if settings is not None else load_settings()
    start, end = (_period_bound(settings, t) for t in (start, end))
    if start is not None and end is not None and end <= start:
        raise BadReportRequest(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    configured = any(c.id == campaign_id for c in settings.campaigns)
    window = timedelta(days=settings.attribution_window_days)
    # the period within what the store's frames hold (rows dated outside are left out)
    lo = max(start or _EPOCH, FRAME_MIN)
    hi = min(end or FRAME_MAX, FRAME_MAX - window)
    decisions = store.decisions_between(lo, hi + window)
    if not configured and not (decisions["campaign_id"] == campaign_id).any():
        _check_stored(store, campaign_id, settings)
    purchases = load_purchases(
        store,
        lo,
        hi + window,
        transactions,
        log_timezone=settings.default_timezone,
        max_value=settings.events.max_purchase_value,
    )
    att = attribute(decisions, purchases, window)
    mine = att.loc[(att["campaign_id"] == campaign_id) & (att["decided_at"] < pd.Timestamp(hi))]
    eligible = mine.loc[mine["revive"]]
    events = store.events_between(lo, FRAME_MAX)
    events = events.loc[events["decision_id"].isin(set(eligible["decision_id"]))]
    args = (settings.currency, confidence, resamples, seed)
    overall = _compare(eligible, events, None, None, *args)
    segments = [
        _compare(group, events, str(stage), str(tier), *args)
        for (stage, tier), group in sorted(
            eligible.groupby(["stage", "tier"], dropna=False, sort=False),
            key=lambda kv: _segment_key(*kv[0]),
        )
    ]
    days = settings.attribution_window_days
    contributions = _channel_touches(att, purchases, set(mine["customer_id"]), window)
    return CampaignReport(
        campaign_id=campaign_id,
        configured=configured,
        start=start,
        end=end,
        window_days=days,
        currency=settings.currency,
        confidence=confidence,
        bootstrap_resamples=resamples,
        seed=seed,
        generated_at=datetime.now(UTC),
        first_decision_at=mine["decided_at"].min().to_pydatetime() if len(mine) else None,
        last_decision_at=mine["decided_at"].max().to_pydatetime() if len(mine) else None,
        decisions=len(mine),
        eligible=len(eligible),
        not_eligible=len(mine) - len(eligible),
        attributed_orders=int(mine["orders"].sum()),
        attributed_revenue=round(float(mine["revenue"].sum()), 2),
        overall=overall,
        segments=segments,
        gain=gain_curve(eligible),
        channel_attribution=contributions,
        notes=_method_notes(days, confidence, resamples, seed, settings.events.max_purchase_value),
    )
