"""``python -m tools.simulate``: channel learning against simulated customers, over HTTP.

Simulated customers answer the live service. Each is a real customer of the snapshot (the
engine needs features) that the engine wants to revive, given consent and an identifier on
every channel in the request ``profile`` and a known *true* probability of engaging (opening
or clicking) per channel, with a different best channel per customer. Each round advances
``now`` by ``step_days``, asks ``/decide`` for every customer and posts through ``/events``
what happened: ``sent`` at the decision's ``send_at`` and, with the true probability of the
chosen channel, an engagement (``opened``, sometimes also ``clicked``, sometimes only
``clicked``: a click without a recorded open counts). Recorded per round: the channel chosen
and the regret (true rate of the best channel minus that of the chosen one); at the end the
accuracy: the channel the posterior-mean rule picks after learning (a dry run) against the
true best channel, among customers with at least ``min_history`` messages.

The CLI starts ``bentoml serve`` twice on localhost (the real log, the current champions, a
throw-away store each, hold-out off so every eligible customer is contacted), once with
``channel_selection=mean`` and once with ``thompson``, runs the same customers and true rates
on both, prints the tables and writes the cumulative-regret curve as a PNG. The test-suite
runs a smaller version through BentoML's ASGI app (``tests/test_channel_learning.py``).

Why ``step_days`` = 4: the policy caps SMS and WeChat at 2 a week and all channels at 4 a
week, counted in a window centred on the send, so with 1–2 day steps the caps (not the
learning) would pick the channel.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment, default_tracking_uri
from service.config import CHANNELS, Settings

__all__ = [
    "PROFILE",
    "Client",
    "SimCustomer",
    "SimResult",
    "checkpoints",
    "main",
    "make_customers",
    "pick_customers",
    "plot_regret",
    "report",
    "simulate",
    "snapshot_at",
    "start_after_blackouts",
]

ASLEEP = ["at_risk", "sleeping", "lost"]
# consent and an identifier on every channel, so every channel is a candidate
PROFILE: dict[str, Any] = {
    "identifiers": {
        "phone": "+447700900000",
        "email": "sim@example.com",
        "wechat_openid": "o-sim",
        "member_id": "m-sim",
    },
    "consents": {ch: True for ch in CHANNELS},
}
BEST_RATE = (0.45, 0.70)  # true engagement of a customer's best channel
OTHER_RATE = (0.02, 0.12)  # ... and of the others: the best leads by >= 0.33
MIN_GAP = BEST_RATE[0] - OTHER_RATE[1]


class Client(Protocol):
    """What the simulator needs of an HTTP client (httpx.Client, starlette's TestClient)."""

    def post(self, url: str, *, json: Any = None) -> Any: ...


@dataclass(frozen=True)
class SimCustomer:
    """A snapshot customer with known true engagement probabilities per channel."""

    customer_id: str
    rates: Mapping[str, float]

    @property
    def best(self) -> str:
        """The channel with the highest true engagement."""
        return max(self.rates, key=lambda ch: self.rates[ch])


@dataclass
class SimResult:
    """One run: per-round regret and choices, and the choice after learning."""

    rule: str
    rounds: int
    customers: int
    regret: list[float] = field(default_factory=list)  # mean regret per contacted customer
    contacted: list[int] = field(default_factory=list)  # customers contacted per round
    best_share: list[float] = field(default_factory=list)  # share choosing the true best
    messages: dict[str, int] = field(default_factory=dict)  # per customer
    final: dict[str, str | None] = field(default_factory=dict)  # posterior-mean choice at end
    seconds: float = 0.0

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative regret per customer after each round."""
        return np.cumsum(self.regret)

    def accuracy(self, customers: Sequence[SimCustomer], min_history: int) -> tuple[float, int]:
        """Share of customers with >= ``min_history`` messages whose choice after learning is
        the true best channel, and how many customers that is."""
        pool = [c for c in customers if self.messages.get(c.customer_id, 0) >= min_history]
        hits = sum(self.final.get(c.customer_id) == c.best for c in pool)
        return (hits / len(pool) if pool else float("nan")), len(pool)


def _ok(response: Any, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def make_customers(customer_ids: Sequence[str], seed: int = 0) -> list[SimCustomer]:
    """True rates: the best channel cycles through the channels (shuffled), so each is the
    best for about a quarter of the customers; best ~ U(0.35, 0.60), others ~ U(0.02, 0.15)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(customer_ids))
    out = []
    for k, cid in zip(order, customer_ids, strict=True):
        best = CHANNELS[int(k) % len(CHANNELS)]
        rates = {
            ch: float(rng.uniform(*(BEST_RATE if ch == best else OTHER_RATE))) for ch in CHANNELS
        }
        out.append(SimCustomer(cid, rates))
    return out


def start_after_blackouts(settings: Settings, earliest: datetime, span: timedelta) -> datetime:
    """The first time >= ``earliest`` from which ``span`` avoids every campaign that blacks
    out the lifecycle campaign (e.g. Double 11): those would suppress whole rounds."""
    lifecycle = next(c for c in settings.campaigns if c.id == "lifecycle")
    windows = sorted(
        (c.start or earliest, c.end)
        for c in settings.campaigns
        if c.blocks_lower_priority and c.priority > lifecycle.priority and c.end is not None
    )
    start = earliest
    for lo, hi in windows:
        if lo < start + span + timedelta(days=2) and hi > start:
            start = hi + timedelta(days=1, hours=10)
    return start


def snapshot_at(client: Client) -> datetime:
    """The service's snapshot time (read from the 360° view of its top-ranked customer)."""
    rows = _ok(client.post("/decide_batch", json={"limit": 1, "decisions": False}), "batch")
    cid = rows["rows"][0]["customer_id"]
    view = _ok(client.post("/customer", json={"customer_id": cid}), "customer")
    return datetime.fromisoformat(view["snapshot_at"])


def pick_customers(client: Client, n: int, now: datetime, costs: Mapping[str, float]) -> list[str]:
    """``n`` asleep customers the engine wants to revive, ranked by ``decide_batch``, whose
    value per unit of engagement makes the true rate gap (>= 0.20) outweigh any difference in
    channel cost twice over — so the true best channel is also the best net of cost."""
    rows = _ok(
        client.post(
            "/decide_batch",
            json={"stages": ASLEEP, "decisions": False, "limit": 1000, "now": now.isoformat()},
        ),
        "decide_batch",
    )["rows"]
    spread = max(costs.values()) - min(costs.values())
    chosen: list[str] = []
    for row in rows:
        if len(chosen) == n:
            break
        if row["holdout"]:
            continue
        d = _ok(
            client.post(
                "/decide",
                json={
                    "customer_id": row["customer_id"],
                    "now": now.isoformat(),
                    "profile": PROFILE,
                    "dry_run": True,
                    "explore": False,
                },
            ),
            "decide",
        )
        if not d["contact"] or d["channel"] is None:
            continue
        q = next(o["engagement"] for o in d["channel_options"] if o["channel"] == d["channel"])
        per_unit = d["economics"]["expected_incremental_value"] / max(q, 1e-9)
        if per_unit * MIN_GAP > 2 * spread:
            chosen.append(row["customer_id"])
    if len(chosen) < n:
        raise RuntimeError(f"only {len(chosen)} customers qualify for the simulation, not {n}")
    return chosen


def simulate(
    client: Client,
    customers: Sequence[SimCustomer],
    rounds: int,
    start: datetime,
    *,
    step_days: float = 4.0,
    explore: bool | None = None,
    seed: int = 0,
    rule: str | None = None,
) -> SimResult:
    """Run ``rounds`` rounds against the service behind ``client`` (see the module doc).

    ``explore`` is sent with every ``/decide`` (None: the service's ``channel_selection``).
    """
    rng = np.random.default_rng(seed)
    label = rule or ("thompson" if explore else "mean" if explore is False else "setting")
    out = SimResult(rule=label, rounds=rounds, customers=len(customers))
    t0 = time.perf_counter()
    for r in range(rounds):
        now = start + timedelta(days=step_days * r)
        events: list[dict[str, Any]] = []
        regrets: list[float] = []
        best = 0
        for c in customers:
            body: dict[str, Any] = {
                "customer_id": c.customer_id,
                "now": now.isoformat(),
                "profile": PROFILE,
            }
            if explore is not None:
                body["explore"] = explore
            d = _ok(client.post("/decide", json=body), "decide")
            ch = d["channel"]
            if not d["contact"] or ch is None:
                continue
            out.messages[c.customer_id] = out.messages.get(c.customer_id, 0) + 1
            regrets.append(c.rates[c.best] - c.rates[ch])
            best += ch == c.best
            sent = datetime.fromisoformat(d["send_at"])
            link = {"customer_id": c.customer_id, "channel": ch, "decision_id": d["decision_id"]}
            events.append({**link, "event": "sent", "ts": sent.isoformat()})
            if rng.random() < c.rates[ch]:
                opened = rng.random() < 0.85  # opens go unrecorded (images blocked) at times
                clicked = rng.random() < 0.35 or not opened
                if opened:
                    ts = sent + timedelta(hours=1)
                    events.append({**link, "event": "opened", "ts": ts.isoformat()})
                if clicked:
                    ts = sent + timedelta(hours=1, minutes=5)
                    events.append({**link, "event": "clicked", "ts": ts.isoformat()})
        for i in range(0, len(events), 10_000):
            _ok(client.post("/events", json={"events": events[i : i + 10_000]}), "events")
        out.contacted.append(len(regrets))
        out.regret.append(float(np.mean(regrets)) if regrets else 0.0)
        out.best_share.append(best / len(regrets) if regrets else 0.0)
    end = start + timedelta(days=step_days * rounds)
    for c in customers:
        body = {
            "customer_id": c.customer_id,
            "now": end.isoformat(),
            "profile": PROFILE,
            "dry_run": True,
            "explore": False,
        }
        out.final[c.customer_id] = _ok(client.post("/decide", json=body), "decide")["channel"]
    out.seconds = time.perf_counter() - t0
    return out


def checkpoints(rounds: int) -> list[int]:
    """Rounds reported in the table: 1, 5, 10, 25, 50, 100, ... up to ``rounds``."""
    marks = [m for m in (1, 5, 10, 25, 50, 100, 200, 500) if m < rounds]
    return [*marks, rounds]


def report(results: Sequence[SimResult], customers: Sequence[SimCustomer], min_history: int) -> str:
    """The simulator's tables (markdown): accuracy, then regret at the checkpoints."""
    best = {ch: sum(c.best == ch for c in customers) for ch in CHANNELS}
    lines = [
        f"{len(customers)} customers (true best channel: "
        + ", ".join(f"{ch} {n}" for ch, n in best.items())
        + f"); accuracy among customers with >= {min_history} messages",
        "",
        "| rule | accuracy after learning | customers | last round: chose the best | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for res in results:
        acc, n = res.accuracy(customers, min_history)
        lines.append(
            f"| {res.rule} | {acc:.1%} | {n} | {res.best_share[-1]:.1%} | {res.seconds:.1f} |"
        )
    lines += ["", "| accuracy by true best channel | " + " | ".join(CHANNELS) + " |"]
    lines.append("|---|" + "---:|" * len(CHANNELS))
    for res in results:
        cells = []
        for ch in CHANNELS:
            acc, _ = res.accuracy([c for c in customers if c.best == ch], min_history)
            cells.append(f"{acc:.0%}")
        lines.append(f"| {res.rule} | " + " | ".join(cells) + " |")
    marks = checkpoints(results[0].rounds)
    lines += [
        "",
        "| after round | " + " | ".join(str(m) for m in marks) + " |",
        "|---|" + "---:|" * len(marks),
    ]
    for res in results:
        cum = res.cumulative
        lines.append(
            f"| {res.rule}: cumulative regret | "
            + " | ".join(f"{cum[m - 1]:.2f}" for m in marks)
            + " |"
        )
    for res in results:
        lines.append(
            f"| {res.rule}: regret in the round | "
            + " | ".join(f"{res.regret[m - 1]:.3f}" for m in marks)
            + " |"
        )
    return "\n".join(lines)


def plot_regret(results: Sequence[SimResult], path: Path) -> Path:
    """Cumulative regret per customer by round, one line per rule (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for res in results:
        ax.plot(np.arange(1, res.rounds + 1), res.cumulative, label=res.rule)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative regret per customer (engagement rate)")
    ax.set_title("Channel learning: simulated customers on the live service")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.simulate", description=__doc__)
    p.add_argument("--data", default=os.environ.get("REVIVAL_DATA_PATH", str(DEFAULT_DATA)))
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("REVIVAL_MLFLOW_TRACKING_URI", default_tracking_uri()),
    )
    p.add_argument("--customers", type=int, default=200)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--step-days", type=float, default=4.0)
    p.add_argument("--min-history", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PROJECT_ROOT / "var" / "simulate"))
    args = p.parse_args(argv)

    import httpx

    from service.config import load_settings
    from tools.serve import Server
    from training.pipeline import champions_or_explain

    if not champions_or_explain(args.tracking_uri):
        return 2
    settings = load_settings()
    costs = {ch: settings.channel(ch).cost for ch in CHANNELS}
    results: list[SimResult] = []
    customers: list[SimCustomer] = []
    start = datetime.min
    with tempfile.TemporaryDirectory() as tmp:
        for rule in ("mean", "thompson"):
            env = {
                "REVIVAL_DATA_PATH": args.data,
                "REVIVAL_MLFLOW_TRACKING_URI": args.tracking_uri,
                "REVIVAL_STORE_URL": f"sqlite:///{Path(tmp) / f'{rule}.db'}",
                "REVIVAL_HOLDOUT_SHARE": "0",
                "REVIVAL_CHANNEL_SELECTION": rule,
                "BENTOML_DO_NOT_TRACK": "true",
                "REVIVAL_API__RATE_LIMITS__DECIDE__PER_SECOND": "1000000",
                "REVIVAL_API__RATE_LIMITS__DECIDE__BURST": "1000000",
            }
            server = Server(env, Path(tmp) / f"{rule}.log").start()
            url = server.url
            try:
                with httpx.Client(base_url=url, headers=server.auth, timeout=120) as client:
                    if not customers:
                        span = timedelta(days=args.step_days * (args.rounds + 1))
                        earliest = snapshot_at(client) + timedelta(days=5)
                        start = start_after_blackouts(settings, earliest, span)
                        ids = pick_customers(client, args.customers, start, costs)
                        customers = make_customers(ids, args.seed)
                    res = simulate(
                        client,
                        customers,
                        args.rounds,
                        start,
                        step_days=args.step_days,
                        seed=args.seed,
                        rule=rule,
                    )
                    results.append(res)
                    print(f"{rule}: {res.seconds:.1f} s", file=sys.stderr)
            finally:
                server.stop()
    print(
        f"\nchannel learning: start {start.isoformat()}, {args.rounds} rounds of "
        f"{args.step_days:g} days (python -m tools.simulate)"
    )
    print(report(results, customers, args.min_history))
    png = plot_regret(results, Path(args.out) / "channel_learning_regret.png")
    print(f"\nregret curve: {png}")
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
