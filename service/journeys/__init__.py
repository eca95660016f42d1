"""Journeys: triggered lifecycle campaigns as configuration (issue #16, in progress).

Built so far: the configuration (:mod:`.config`, ``service/journeys.yaml``), validated as
strictly as the policy. Not yet built: the trigger intake, the journey state in the store,
the scheduler that runs the steps, the endpoints and the journey report.
"""

from service.journeys.config import (
    DEFAULT_JOURNEYS_PATH,
    JOURNEYS_ENV,
    Journey,
    Journeys,
    check_against_policy,
    load_journeys,
)

__all__ = [
    "DEFAULT_JOURNEYS_PATH",
    "JOURNEYS_ENV",
    "Journey",
    "Journeys",
    "check_against_policy",
    "load_journeys",
]
