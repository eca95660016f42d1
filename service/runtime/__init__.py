"""The serving runtime: champions, the feature snapshot, item histories and the store.

:class:`Runtime` is what the BentoML service (and the benchmark, in-process) call; its parts
live in one module each: :mod:`.snapshot`, :mod:`.models`, :mod:`.state`, :mod:`.overlay`,
:mod:`.population`, :mod:`.history`, :mod:`.views`, :mod:`.decisions`, :mod:`.dispatch`,
:mod:`.batch`, :mod:`.recording`, :mod:`.lookups` and :mod:`.runtime`.
"""

from service.runtime.errors import (
    Conflict,
    DataUnavailable,
    ModelsUnavailable,
    Rejected,
    UnknownCustomer,
)
from service.runtime.models import Models, load_models, offer_scores, tracking_uri
from service.runtime.population import POPULATION_INLINE_S, POPULATION_TTL_S, PopulationCache
from service.runtime.runtime import Runtime
from service.runtime.snapshot import (
    FeatureRow,
    Snapshot,
    build_snapshot,
    load_snapshot,
    newest_snapshot_run,
    stored_snapshot,
)
from service.runtime.state import State, score_snapshot

__all__ = [
    "POPULATION_INLINE_S",
    "POPULATION_TTL_S",
    "Conflict",
    "FeatureRow",
    "Models",
    "DataUnavailable",
    "ModelsUnavailable",
    "PopulationCache",
    "Rejected",
    "Runtime",
    "Snapshot",
    "State",
    "UnknownCustomer",
    "build_snapshot",
    "load_models",
    "load_snapshot",
    "newest_snapshot_run",
    "offer_scores",
    "score_snapshot",
    "stored_snapshot",
    "tracking_uri",
]
