"""Replicas serve what the shared store says: a thread that follows the served-versions log.

``/reload`` on one replica publishes a new generation of :mod:`core.store.serving`; every
replica's :class:`ServedSync` checks the newest generation every ``replica_sync_seconds``
(one indexed ``max()`` read) and, when it moved, calls ``follow`` to load exactly the
published versions and snapshot. So within ``replica_sync_seconds`` plus a model load, all
replicas behind a load balancer serve the same champions. A store that cannot answer is
logged and retried on the next tick; serving goes on with what is loaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.store import Served, ServingLog

__all__ = ["ServedSync"]

log = logging.getLogger(__name__)


class ServedSync:
    """Polls ``serving`` and hands every newer generation to ``follow`` (one thread)."""

    def __init__(
        self,
        serving: ServingLog,
        interval: float,
        generation: Callable[[], int],
        follow: Callable[[Served], None],
    ) -> None:
        self._serving = serving
        self._interval = interval
        self._generation = generation
        self._follow = follow
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="served-sync", daemon=True)

    def start(self) -> ServedSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def check(self) -> bool:
        """Follow the store if it publishes a newer generation; whether it did."""
        if self._serving.generation() <= self._generation():
            return False
        served = self._serving.current()
        if served is None or served.generation <= self._generation():
            return False
        self._follow(served)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception as exc:  # keep serving what is loaded; try again next tick
                log.warning("could not follow the served versions in the store: %s", exc)
