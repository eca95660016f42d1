"""Simulate a campaign against a running service, with a known injected lift.

Through the HTTP API only (any ``httpx.Client`` pointed at the service — a served Bento or
``TestClient(RevivalService.to_asgi())``): for each round ``now``, ``/decide_batch`` records a
decision for every eligible customer (the service draws the hold-out); then, with a fixed
seed, every eligible decision's customer orders within the attribution window with
probability ``p0`` — ``p0 + lift`` when the decision contacts them — at a gamma-distributed
order value of mean ``mean_value``; contacted customers also get ``sent``, ``opened``
(``open_rate``) and ``clicked`` (``click_rate`` of opens) events. Everything is posted to
``/events`` (purchases without a decision id, as a shop would send them; dedup keys make a
re-run harmless). The true lifts are then ``lift`` on conversion and ``lift × mean_value`` on
revenue per customer, which :mod:`service.report` must recover.

All rounds are decided before any outcome is posted, so a simulated purchase never changes a
later round's decision.

CLI: ``python -m tools.campaign_sim --url http://localhost:3000 --rounds 2011-09-06T10:00
[--campaign lifecycle] [--p0 0.2] [--lift 0.1] [--mean-value 300] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np

from core.env import configure_environment

__all__ = ["Simulation", "decide_rounds", "post_outcomes", "simulate_campaign"]

_EVENTS_PER_REQUEST = 2000  # ~0.5 MB per request, under the default 1 MB body limit


@dataclass(frozen=True)
class Simulation:
    """What was simulated (the truth the report must recover)."""

    decisions: int
    treated: int
    holdout: int
    purchases: int
    events: int
    lift: float
    rpc_lift: float


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def decide_rounds(
    client: httpx.Client, campaign_id: str, rounds: Sequence[datetime]
) -> list[dict[str, Any]]:
    """Record a decision for every eligible customer at each ``now``; the decisions."""
    out: list[dict[str, Any]] = []
    for now in rounds:
        offset: int | None = 0
        while offset is not None:
            page = _post(
                client,
                "/decide_batch",
                {
                    "campaign_id": campaign_id,
                    "now": now.isoformat(),
                    "record": True,
                    "limit": 1000,
                    "offset": offset,
                },
            )
            out += [row["decision"] for row in page["rows"] if row["decision"] is not None]
            offset = page["next_offset"]
    return out


def post_outcomes(
    client: httpx.Client,
    decisions: Sequence[dict[str, Any]],
    *,
    p0: float,
    lift: float,
    mean_value: float,
    window_days: float,
    seed: int,
    open_rate: float = 0.3,
    click_rate: float = 0.3,
) -> tuple[int, int]:
    """Draw and post the outcomes of ``decisions``; ``(purchases, events)`` posted."""
    if not (0 <= p0 <= 1 and 0 <= p0 + lift <= 1):
        raise ValueError(f"p0 {p0} and p0 + lift {p0 + lift} must be probabilities")
    rng = np.random.default_rng(seed)
    window = timedelta(days=window_days)
    events: list[dict[str, Any]] = []
    purchases = 0
    for d in decisions:
        if not d["revive"]:
            continue
        did, cid = d["decision_id"], d["customer_id"]
        decided = datetime.fromisoformat(d["decided_at"])
        if d["contact"]:
            sent = datetime.fromisoformat(d["send_at"]) if d["send_at"] else decided
            common = {"customer_id": cid, "channel": d["channel"], "decision_id": did}
            events.append({**common, "event": "sent", "ts": sent.isoformat()})
            if rng.random() < open_rate:
                opened = sent + timedelta(hours=float(rng.uniform(0.1, 48)))
                events.append({**common, "event": "opened", "ts": opened.isoformat()})
                if rng.random() < click_rate:
                    clicked = opened + timedelta(minutes=float(rng.uniform(1, 60)))
                    events.append({**common, "event": "clicked", "ts": clicked.isoformat()})
        p = p0 + (lift if d["contact"] else 0.0)
        if rng.random() < p:
            at = decided + window * float(rng.uniform(0.02, 0.98))
            value = float(rng.gamma(2.0, mean_value / 2.0))
            events.append(
                {
                    "customer_id": cid,
                    "event": "purchase",
                    "ts": at.isoformat(),
                    "value": round(value, 2),
                    "order_id": f"sim-order:{did}",
                }
            )
            purchases += 1
    for i in range(0, len(events), _EVENTS_PER_REQUEST):
        _post(client, "/events", {"events": events[i : i + _EVENTS_PER_REQUEST]})
    return purchases, len(events)


def simulate_campaign(
    client: httpx.Client,
    campaign_id: str,
    rounds: Sequence[datetime],
    *,
    p0: float = 0.2,
    lift: float = 0.1,
    mean_value: float = 300.0,
    window_days: float = 14.0,
    seed: int = 0,
) -> Simulation:
    """Decide every round, then draw and post the outcomes (see the module docstring)."""
    decisions = decide_rounds(client, campaign_id, rounds)
    purchases, n_events = post_outcomes(
        client,
        decisions,
        p0=p0,
        lift=lift,
        mean_value=mean_value,
        window_days=window_days,
        seed=seed,
    )
    eligible = [d for d in decisions if d["revive"]]
    holdout = sum(d["holdout"] for d in eligible)
    return Simulation(
        decisions=len(decisions),
        treated=len(eligible) - holdout,
        holdout=holdout,
        purchases=purchases,
        events=n_events,
        lift=lift,
        rpc_lift=lift * mean_value,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.campaign_sim``: simulate a campaign against a served service."""
    parser = argparse.ArgumentParser(prog="python -m tools.campaign_sim")
    parser.add_argument("--url", default="http://localhost:3000")
    parser.add_argument(
        "--key",
        default=os.environ.get("REVIVAL_KEY"),
        help="API key with the decide, read and events scopes (default: $REVIVAL_KEY)",
    )
    parser.add_argument("--campaign", default="lifecycle")
    parser.add_argument(
        "--rounds", required=True, help="comma-separated ISO times, >= the window apart"
    )
    parser.add_argument("--p0", type=float, default=0.2)
    parser.add_argument("--lift", type=float, default=0.1)
    parser.add_argument("--mean-value", type=float, default=300.0)
    parser.add_argument("--window-days", type=float, default=14.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        rounds = [datetime.fromisoformat(r) for r in args.rounds.split(",")]
    except ValueError as exc:
        parser.error(f"--rounds: {exc}")
    if not args.key:
        parser.error("--key (or REVIVAL_KEY) is required: the API needs a key")
    auth = {"Authorization": f"Bearer {args.key}"}
    with httpx.Client(base_url=args.url, headers=auth, timeout=600) as client:
        sim = simulate_campaign(
            client,
            args.campaign,
            rounds,
            p0=args.p0,
            lift=args.lift,
            mean_value=args.mean_value,
            window_days=args.window_days,
            seed=args.seed,
        )
    print(sim)
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
