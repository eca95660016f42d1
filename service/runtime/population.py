"""The population engagement (every channel over all customers): cached, refreshed in the
background once a refresh is slow.

The aggregate is the prior of channel learning and reads every message event, so it is
cached for ``POPULATION_TTL_S`` or until events are recorded. A refresh that last took at
most ``POPULATION_INLINE_S`` runs inline (a small store sees new events at once,
deterministically); a slower one runs in a background thread while decisions keep the
previous value, so no decision (and on SQLite, no request on the event loop) waits for a
full scan of a large event log. Only the first value is always computed inline.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time

from core.store import ContactStore, Engagement

__all__ = ["POPULATION_INLINE_S", "POPULATION_TTL_S", "PopulationCache"]

log = logging.getLogger(__name__)

POPULATION_TTL_S = 30.0
POPULATION_INLINE_S = 0.02  # a population refresh that took longer runs in the background


class PopulationCache:
    """:meth:`ContactStore.population_engagement`, cached (see the module docstring)."""

    def __init__(self, store: ContactStore) -> None:
        self._store = store
        # (computed at, value, events generation it saw)
        self._cached: tuple[float, dict[str, Engagement] | None, int] = (-math.inf, None, 0)
        self._batches = itertools.count(1)  # numbers every batch of recorded events
        self._generation = 0  # the latest batch's number
        self._seconds = 0.0  # how long the last refresh took
        self._busy = threading.Lock()  # one refresh at a time

    def events_recorded(self) -> None:
        """Events were stored: the next :meth:`get` refreshes."""
        self._generation = next(self._batches)

    def warm(self) -> None:
        """The first value now rather than on a request; a store that cannot answer yet does
        not stop start-up (the first decision tries again)."""
        try:
            self.get()
        except Exception as exc:
            log.warning("could not read the population engagement at start-up: %s", exc)

    def get(self) -> dict[str, Engagement]:
        """Every channel's engagement over all customers, at most ``POPULATION_TTL_S`` old
        and counting every recorded batch (or the previous value while a slow refresh runs)."""
        stamp, value, gen = self._cached
        fresh = gen == self._generation and time.monotonic() - stamp <= POPULATION_TTL_S
        if value is not None and fresh:
            return value
        if value is None or self._seconds <= POPULATION_INLINE_S:
            with self._busy:
                return self._refresh()
        if self._busy.acquire(blocking=False):
            threading.Thread(
                target=self._refresh_in_background, name="population", daemon=True
            ).start()
        return value

    def _refresh(self) -> dict[str, Engagement]:
        """Recompute the value (the caller holds ``_busy``)."""
        gen, t0 = self._generation, time.perf_counter()
        value = self._store.population_engagement()
        self._seconds = time.perf_counter() - t0
        self._cached = (time.monotonic(), value, gen)
        return value

    def _refresh_in_background(self) -> None:
        """The background refresh: releases ``_busy`` when done; on failure logs it and keeps
        serving the previous value for another ``POPULATION_TTL_S``."""
        try:
            self._refresh()
        except Exception:
            log.warning("population engagement refresh failed", exc_info=True)
            _, value, _ = self._cached
            self._cached = (time.monotonic(), value, self._generation)
        finally:
            self._busy.release()
