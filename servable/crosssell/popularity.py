"""Popularity baseline: the most-bought items (distinct customers) in a recent window."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from servable.crosssell.base import Interactions, Recommender

__all__ = ["PopularityRecommender"]


class PopularityRecommender(Recommender):
    """Most-bought items (distinct customers) in the ``popularity_days`` before the cutoff.

    ``similar_items`` returns the items most often bought by the same customers.
    """

    kind = "popularity"

    def __init__(
        self,
        *,
        popularity_days: int = 90,
        active_days: int | None = None,
    ):
        super().__init__(popularity_days=popularity_days, active_days=active_days)

    def _fit(self, data: Interactions) -> None:
        pass

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity[items], (len(rows), len(items)))

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        bought = (self.counts > 0).astype(np.float32).tocsc()
        co = np.asarray((bought[:, [item]].T @ bought[:, items]).todense()).ravel()
        return np.where(co > 0, co, -np.inf)

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        pass
