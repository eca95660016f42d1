"""``python -m benchmarks.journeys``: the journey agent's tick at scale, and the 90-day replay.

*tick*: the shared log tiled ``--tiles`` times (disjoint customers, :func:`tile_log`) served
as a data snapshot; ``--enrolled`` of its customers are enrolled in the first-order
follow-up journey (one ``decide`` step, due now), then the agent ticks once with nothing
due (an idle tick: the intake's trigger scan over every customer and an empty claim) and
once with everything due (every step decided, recorded under the caps, dispatched to the
log provider, its run written). Rows: wall time, steps/s and the process's peak RSS.

*replay*: ``python -m tools.journey_replay`` on the shared log's last 90 days (``--replay``),
its wall time from its own report.

Champions: ``--tracking-uri`` (default the project's ``mlflow/``, e.g. after ``make run``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.startup import tile_log
from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment

__all__ = ["main"]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(name: str, seconds: float, steps: int | None = None) -> str:
    rate = f"{steps / seconds:,.0f}" if steps else ""
    count = f"{steps:,}" if steps is not None else ""
    return f"| {name} | {seconds:,.1f} | {count} | {rate} | {_rss_mib():,.0f} |"


def tick_bench(tiles: int, enrolled: int, folder: Path) -> Iterator[str]:
    """The idle and the full tick over ``enrolled`` customers of a ``tiles``-times log
    (rows as they are measured)."""
    data = folder / f"tiled-{tiles}.csv.gz"
    t0 = time.perf_counter()
    if not data.exists():
        tile_log(DEFAULT_DATA, data, tiles)
    yield _row(f"tile the log ×{tiles}", time.perf_counter() - t0)
    store = folder / f"store-{datetime.now(UTC):%Y%m%d%H%M%S}.db"
    os.environ.update(
        REVIVAL_DATA_PATH=str(data), REVIVAL_SNAPSHOT="data", REVIVAL_STORE_URL=f"sqlite:///{store}"
    )
    from core.store import Enrolment
    from service.config import load_settings
    from service.journeys import Agent, load_journeys
    from service.runtime import Runtime

    settings = load_settings()
    t0 = time.perf_counter()
    runtime = Runtime(settings)
    customers = list(runtime.state.snapshot.positions)
    yield _row(f"start-up: {len(customers):,} customers", time.perf_counter() - t0)
    journeys = load_journeys(settings=settings)
    agent = Agent(runtime, journeys, worker="bench", batch=500)
    # 09:00 local the day after the snapshot (its midnight): the steps run at 11:00, outside
    # quiet hours, so every decision is sent at once rather than scheduled
    now = runtime.state.snapshot.at + timedelta(days=1, hours=9)
    entries = [
        Enrolment(
            "first_order_followup", cid, "bench", now, False, {}, due_at=now + timedelta(hours=1)
        )
        for cid in customers[:enrolled]
    ]
    t0 = time.perf_counter()
    runtime.store.journeys.enrol(None, now, entries, "bench")
    yield _row("enrol", time.perf_counter() - t0, len(entries))
    t0 = time.perf_counter()
    idle = agent.tick(now + timedelta(minutes=1))
    yield _row("idle tick (intake scan, nothing due)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    full = agent.tick(now + timedelta(hours=2))
    yield _row("tick with every step due", time.perf_counter() - t0, full.steps)
    yield f"<!-- idle: {idle}; full: {full} -->"
    runtime.close()


def replay_bench(folder: Path) -> list[str]:
    """The whole 90-day replay of the shared log, in a process of its own."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "tools.journey_replay", "--folder", str(folder / "replay")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    wall = time.perf_counter() - t0
    line = next(x for x in out.stdout.splitlines() if x.startswith("replay:"))
    checks = next(x for x in out.stdout.splitlines() if x.startswith("checks:"))
    return [
        f"| 90-day replay of the shared log (process) | {wall:,.1f} | | | |",
        f"<!-- {line}; {checks} -->",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.journeys", description=__doc__)
    p.add_argument("--tiles", type=int, default=20)
    p.add_argument("--enrolled", type=int, default=100_000)
    p.add_argument("--replay", action="store_true", help="also time the 90-day replay")
    p.add_argument("--folder", type=Path, default=None, help="work folder (default: a temp dir)")
    args = p.parse_args(argv)
    configure_environment()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="journeys-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print("| journeys | wall s | steps | steps/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for row in tick_bench(args.tiles, args.enrolled, folder):
        print(row, flush=True)
    if args.replay:
        for row in replay_bench(folder):
            print(row, flush=True)
    print(f"(at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, work folder {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
