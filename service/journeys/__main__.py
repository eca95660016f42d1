"""The journey agent process: ``python -m service.journeys`` (``make run`` starts it beside
the server).

A process of its own rather than a BentoML background task: it can be killed and restarted
alone (the crash test does), runs on its own CPU instead of in an API worker's GIL, and
scales independently of the API replicas — any number of agents may tick over one store
(:mod:`core.store.journeys` keeps every step to one run). It loads the champions and the
snapshot like a replica (and follows ``/reload`` the same way), then ticks every
``journeys_tick_seconds`` on the wall clock until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

log = logging.getLogger("service.journeys")


def main(argv: Sequence[str] | None = None) -> int:
    from core.env import configure_environment

    p = argparse.ArgumentParser(prog="python -m service.journeys", description=__doc__)
    p.add_argument("--once", action="store_true", help="one tick, then exit")
    p.add_argument("--worker", default=None, help="this agent's name (default host:pid)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure_environment()
    from service.config import ConfigError, load_settings
    from service.journeys import Agent, load_journeys
    from service.runtime import ModelsUnavailable, Runtime

    try:
        settings = load_settings()
        journeys = load_journeys(settings=settings)
        runtime = Runtime(settings)
    except (ConfigError, ModelsUnavailable) as exc:
        print(f"journey agent: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = Agent(runtime, journeys, worker=args.worker)
    log.info(
        "journey agent %s: %d journeys, a tick every %g s",
        agent.worker,
        len(journeys.journeys),
        settings.journeys_tick_seconds,
    )
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = agent.tick(datetime.now(UTC))
            except Exception:  # a store outage, a bad row: log it, try again next tick
                log.exception("tick failed; retrying in %g s", settings.journeys_tick_seconds)
                stop.wait(settings.journeys_tick_seconds)
                continue
            if r.enrolled or r.steps or r.exited:
                log.info(
                    "tick: %d enrolled, %d steps, %d messages, %d exited, %d waiting (%.2f s)",
                    r.enrolled, r.steps, r.messages, r.exited, r.deferred, time.monotonic() - t0,
                )  # fmt: skip
            if args.once:
                break
            stop.wait(max(0.0, settings.journeys_tick_seconds - (time.monotonic() - t0)))
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
