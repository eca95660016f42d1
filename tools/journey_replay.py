"""Replay the last days of a transaction log as a live feed, with a simulated clock driving
the journey agent (issue #16's acceptance run).

The service's snapshot is the log *before* the replay starts (a copy of those rows in the
work folder, served with ``snapshot: data``); the orders after it are posted through the
runtime's own ``/events`` path as ``purchase`` events in time order. A seeded share of the
orders is preceded by a ``cart_abandoned`` event with the order's items (``--cart-share``,
0.5–3 h before), and seeded carts that never convert are added (``--lost-carts`` per day, a
known customer's own items). Every ``--tick`` the feed up to the clock is posted and the agent
ticks. The run resumes where it stopped: the agent's intake watermark is the clock, and
re-posted events are duplicates (their keys), so ``kill -9`` and a restart give the same
step runs as an uninterrupted run.

CLI (the champions of ``REVIVAL_MLFLOW_TRACKING_URI``, e.g. after ``make run``)::

    python -m tools.journey_replay --folder var/replay [--data LOG] [--days 90] [--seed 0]
        [--store URL] [--worker NAME] [--tick-hours 1]

prints a stage log and, at the end, the per-journey table (:func:`journey_table`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

__all__ = [
    "Feed",
    "build_feed",
    "channel_table",
    "check_replay",
    "journey_table",
    "markdown",
    "prepare",
    "replay",
]

log = logging.getLogger("journey_replay")


@dataclass
class Feed:
    """The replay's events (``EventIn`` dicts, time order) and its time range."""

    start: datetime
    end: datetime
    events: list[dict]
    orders: int
    carts_before_orders: int
    lost_carts: int

    def between(self, start: datetime, end: datetime) -> list[dict]:
        return [e for e in self.events if start <= e["_at"] < end]


def prepare(log_path: Path, folder: Path, days: float) -> tuple[Path, datetime]:
    """Write the log's rows before the replay start to ``folder/before.csv``; returns that
    file and the start (midnight, ``days`` before the last day of the log)."""
    raw = pd.read_csv(log_path, dtype=str)
    when = pd.to_datetime(raw["InvoiceDate"], format="mixed")
    start = (when.max() - pd.Timedelta(days=days)).normalize()
    folder.mkdir(parents=True, exist_ok=True)
    before = folder / "before.csv"
    if not before.exists():
        raw[when < start].to_csv(before, index=False)
    return before, start.to_pydatetime()


def build_feed(
    log_path: Path,
    start_local: datetime,
    zone: ZoneInfo,
    customers: Sequence[str],
    seed: int,
    cart_share: float,
    lost_carts_per_day: float,
) -> Feed:
    """The orders from ``start_local`` on (as ``purchase`` events), seeded carts before a
    share of them and seeded carts that never convert (see the module docstring)."""
    from features.loaders import load_transactions

    tx = load_transactions(log_path).transactions
    tx = tx[(tx["ts"] >= start_local) & (tx["quantity"] > 0)]
    tx = tx.assign(line=tx["quantity"] * tx["unit_price"])
    orders = (
        tx.groupby("order_id", sort=False)
        .agg(
            customer_id=("customer_id", "first"),
            ts=("ts", "min"),
            value=("line", "sum"),
            items=("item_id", lambda s: list(dict.fromkeys(s))[:20]),
        )
        .sort_values(["ts"], kind="stable")
    )
    rng = np.random.default_rng(seed)
    events: list[dict] = []
    carts = 0
    for order_id, o in orders.iterrows():
        at = pd.Timestamp(o.ts).tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
        at = at.tz_convert(UTC).to_pydatetime()
        value = round(float(o.value), 2)
        if rng.random() < cart_share:
            cart_at = at - timedelta(hours=float(rng.uniform(0.5, 3.0)))
            events.append(_cart(o.customer_id, cart_at, o["items"], value, f"cart-{order_id}"))
            carts += 1
        events.append(
            {
                "customer_id": o.customer_id,
                "event": "purchase",
                "order_id": str(order_id),
                "ts": at.isoformat(),
                "value": max(value, 0.0),
                "item_ids": o["items"],
                "_at": at,
            }
        )
    end = (events[-1]["_at"] if events else start_local) + timedelta(hours=1)
    start = pd.Timestamp(start_local).tz_localize(zone).tz_convert(UTC).to_pydatetime()
    lost = _lost_carts(tx, customers, start, end, rng, lost_carts_per_day)
    events = sorted(events + lost, key=lambda e: (e["_at"], e["event"], e["customer_id"]))
    return Feed(start, end, events, len(orders), carts, len(lost))


def _cart(customer_id: str, at: datetime, items: Sequence[str], value: float, key: str) -> dict:
    return {
        "customer_id": customer_id,
        "event": "cart_abandoned",
        "ts": at.isoformat(),
        "item_ids": list(items)[:20],
        "value": value,
        "channel": "wechat",
        "dedup_key": key,
        "_at": at,
    }


def _lost_carts(
    tx: pd.DataFrame,
    customers: Sequence[str],
    start: datetime,
    end: datetime,
    rng: np.random.Generator,
    per_day: float,
) -> list[dict]:
    """Carts of known customers that never become orders, at uniform random times."""
    n = int(per_day * (end - start).total_seconds() / 86400.0)
    items = tx["item_id"].drop_duplicates().to_numpy()
    who = rng.choice(np.asarray(customers), size=n)
    seconds = np.sort(rng.uniform(0, (end - start).total_seconds(), size=n))
    out = []
    for i, (cid, s) in enumerate(zip(who, seconds, strict=True)):
        picked = list(rng.choice(items, size=int(rng.integers(1, 4)), replace=False))
        value = round(float(rng.uniform(10, 200)), 2)
        out.append(_cart(str(cid), start + timedelta(seconds=float(s)), picked, value, f"lost-{i}"))
    return out


def _ticks(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    t = start + step
    while t <= end + step:
        yield t
        t += step


def replay(runtime, agent, feed: Feed, tick: timedelta, progress: bool = True) -> dict:
    """Drive ``agent`` over ``feed`` from the stored watermark (or the start) to the end;
    returns totals. Each tick posts the feed before the clock, then ticks."""
    from service.schemas import EventIn

    at = runtime.store.journeys.intake_at()
    first = max(at, feed.start) if at is not None else feed.start
    if at is None:
        runtime.store.journeys.enrol(None, feed.start, [], agent.worker)
    totals = {"ticks": 0, "messages": 0, "steps": 0, "exited": 0, "deferred": 0, "enrolled": 0}
    t0, last_log = time.perf_counter(), 0.0
    now = first
    # resume: re-run the tick the watermark names (its intake is done; its steps may not be)
    ticks = (
        [first, *_ticks(first, feed.end, tick)]
        if at is not None
        else list(_ticks(first, feed.end, tick))
    )
    for now in ticks:
        batch = [
            EventIn.model_validate({k: v for k, v in e.items() if k != "_at"})
            for e in feed.between(now - tick, now)
        ]
        for i in range(0, len(batch), 500):
            runtime.record(batch[i : i + 500], [])
        report = agent.tick(now)
        totals["ticks"] += 1
        for key in ("messages", "steps", "exited", "deferred", "enrolled"):
            totals[key] += getattr(report, key)
        if progress and time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log.info("clock %s: %s (%.0f s)", now.isoformat(), totals, last_log - t0)
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    return totals


def channel_table(store, settings, feed: Feed) -> pd.DataFrame:
    """The campaign report's multi-touch channel attribution over the replay's journey
    messages (campaign ``lifecycle``) and purchases."""
    from service.report import campaign_report

    report = campaign_report(store, "lifecycle", feed.start, feed.end, settings=settings)
    return pd.DataFrame([c.model_dump() for c in report.channel_attribution])


def markdown(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table (what docs/results.md quotes)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def journey_table(store) -> pd.DataFrame:
    """Per journey: enrolments (treated, hold-out), messages sent, no-contact (caps, quiet
    hours, consent), skipped by priority, exits on purchase, conversions."""
    counts = store.journeys.counts()
    rows = []
    for jid, c in sorted(counts.items()):
        outcomes: dict[str, int] = {}
        for per in c["steps"].values():
            for k, v in per.items():
                outcomes[k] = outcomes.get(k, 0) + v
        rows.append(
            {
                "journey": jid,
                "enrolled": c["enrolled"],
                "holdout": c["holdout"],
                "messages": outcomes.get("sent", 0),
                "no_contact": outcomes.get("no_contact", 0),
                "skipped": outcomes.get("skipped", 0),
                "exited": c["exited"],
                "completed": c["completed"],
                "active": c["active"],
                "converted": c["converted"],
            }
        )
    return pd.DataFrame(rows)


def _cap_violations(store, settings, start: datetime, end: datetime) -> list[str]:
    """Every 24 h and 7-day window holding more contacts than a cap allows (per customer and
    channel, and all channels per week), read from the stored decisions."""
    d = store.decisions_between(start - timedelta(days=8), end + timedelta(days=8))
    d = d[d["revive"] & ~d["holdout"] & d["channel"].notna() & d["send_at"].notna()]
    out: list[str] = []
    day, week = np.timedelta64(1, "D"), np.timedelta64(7, "D")

    def crowded(times: np.ndarray, span: np.timedelta64, cap: int) -> bool:
        times = np.sort(times)
        return bool(
            (np.searchsorted(times, times + span, side="left") - np.arange(len(times)) > cap).any()
        )

    for (cid, channel), g in d.groupby(["customer_id", "channel"]):
        policy = settings.channel(channel)
        t = g["send_at"].to_numpy("datetime64[ns]")
        if crowded(t, day, policy.per_day_cap) or crowded(t, week, policy.per_week_cap):
            out.append(f"{cid}/{channel}")
    for cid, g in d.groupby("customer_id"):
        if crowded(g["send_at"].to_numpy("datetime64[ns]"), week, settings.global_weekly_cap):
            out.append(f"{cid}/all channels")
    return out


def check_replay(store, settings, journeys, start: datetime, end: datetime) -> dict[str, list[str]]:
    """The acceptance checks of a replay; every list should be empty.

    ``caps``: windows over a cap. ``after_purchase``: a message run after a purchase that
    should have ended its journey (``exit_on: purchase``). ``twice``: a decision dispatched
    more than once, or a sent step without exactly one stored decision. ``cart_late``: a
    first cart-recovery message sent on a later local day without quiet hours being the
    reason, or a reminder step that neither sent nor recorded why not.
    """
    by_id = {j.id: j for j in journeys.journeys}
    runs = store.journeys.step_runs()
    purchases = store.events_between(
        start - timedelta(days=1), end + timedelta(days=30), event="purchase"
    )
    bought: dict[str, list[datetime]] = {}
    for r in purchases.itertuples(index=False):
        bought.setdefault(r.customer_id, []).append(r.ts.to_pydatetime())
    entered = {}
    for cid in {r.customer_id for r in runs}:
        for e in store.journeys.enrolments(cid):
            entered[e.enrolment_id] = e
    after, twice, late = [], [], []
    sent = [r for r in runs if r.outcome == "sent"]
    decisions = store.get_decisions([r.decision_id for r in sent if r.decision_id])
    for r in sent:
        e = entered[r.enrolment_id]
        if "purchase" in by_id[r.journey_id].exit_on and any(
            e.entered_at < ts < r.ran_at for ts in bought.get(r.customer_id, [])
        ):
            after.append(f"{r.journey_id}/{r.step_id}/{r.customer_id}")
        attempts = store.dispatch_attempts(r.decision_id) if r.decision_id else []
        if r.decision_id not in decisions or sum(a.status == "sent" for a in attempts) != 1:
            twice.append(r.decision_id or "?")
    zone = settings.zone
    for r in runs:
        if r.journey_id != "cart_recovery" or r.step_id != "reminder":
            continue
        e = entered[r.enrolment_id]
        if r.outcome == "sent":
            same_day = r.send_at.astimezone(zone).date() == e.entered_at.astimezone(zone).date()
            when = decisions[r.decision_id].payload.get("reasons", {}).get("when", [])
            if not same_day and not any(w.startswith("quiet_hours") for w in when):
                late.append(f"{r.customer_id}: sent {r.send_at} for a cart at {e.entered_at}")
        elif r.outcome in ("no_contact", "skipped") and not r.detail:
            late.append(f"{r.customer_id}: {r.outcome} without a reason")
    return {
        "caps": _cap_violations(store, settings, start, end),
        "after_purchase": after,
        "twice": twice,
        "cart_late": late,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from core.env import DEFAULT_DATA, configure_environment

    p = argparse.ArgumentParser(prog="python -m tools.journey_replay", description=__doc__)
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--days", type=float, default=90.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cart-share", type=float, default=0.3)
    p.add_argument("--lost-carts", type=float, default=20.0, help="per day")
    p.add_argument("--tick-hours", type=float, default=1.0)
    p.add_argument("--store", default=None, help="default: a SQLite file in --folder")
    p.add_argument("--worker", default="replay")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("service.channels").setLevel(logging.WARNING)  # a line per message
    before, start_local = prepare(args.data, args.folder, args.days)
    os.environ["REVIVAL_DATA_PATH"] = str(before)
    os.environ["REVIVAL_SNAPSHOT"] = "data"
    # always this run's store: never one inherited from the caller's environment
    os.environ["REVIVAL_STORE_URL"] = args.store or f"sqlite:///{args.folder / 'store.db'}"
    configure_environment()
    from service.config import load_settings
    from service.journeys import Agent, load_journeys
    from service.runtime import Runtime

    settings = load_settings()
    runtime = Runtime(settings)
    try:
        agent = Agent(runtime, load_journeys(settings=settings), worker=args.worker)
        customers = list(runtime.state.snapshot.positions)
        feed = build_feed(
            args.data,
            start_local,
            settings.zone,
            customers,
            args.seed,
            args.cart_share,
            args.lost_carts,
        )
        log.info(
            "feed: %d orders, %d carts before orders, %d lost carts, %s .. %s",
            feed.orders,
            feed.carts_before_orders,
            feed.lost_carts,
            feed.start,
            feed.end,
        )
        totals = replay(runtime, agent, feed, timedelta(hours=args.tick_hours))
        print(f"replay: {totals}")
        print(markdown(journey_table(runtime.store)))
        checks = check_replay(runtime.store, settings, agent.journeys, feed.start, feed.end)
        print("checks: " + ", ".join(f"{k} {len(v)}" for k, v in checks.items()))
        print(markdown(channel_table(runtime.store, settings, feed)))
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
