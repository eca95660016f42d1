"""Journeys: triggered lifecycle campaigns the service runs on its own.

* :mod:`.config` — ``service/journeys.yaml``, validated as strictly as the policy;
* :mod:`.triggers` — who entered which journey in a window (events, customer facts, stages,
  holidays);
* :mod:`.steps` — exits, branch conditions and waits on one customer's facts;
* :mod:`.agent` — :class:`Agent`: intake and due steps on every tick, each step once;
* :mod:`.dry_run` — what a journey would send over a date range, before it is switched on;
* ``python -m service.journeys`` — the agent process ``make run`` starts beside the server.

The journey state lives in the store (:mod:`core.store.journeys`).
"""

from service.journeys.agent import Agent, TickReport
from service.journeys.config import (
    DEFAULT_JOURNEYS_PATH,
    JOURNEYS_ENV,
    Journey,
    Journeys,
    check_against_policy,
    load_journeys,
)
from service.journeys.desk import JourneyDesk

__all__ = [
    "Agent",
    "JourneyDesk",
    "TickReport",
    "DEFAULT_JOURNEYS_PATH",
    "JOURNEYS_ENV",
    "Journey",
    "Journeys",
    "check_against_policy",
    "load_journeys",
]
