"""Item-kNN baseline: implicit's item-item BM25 nearest neighbours."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from servable.crosssell.base import Interactions, Recommender, csr_arrays, csr_from

__all__ = ["ItemKNNRecommender"]


class ItemKNNRecommender(Recommender):
    """implicit's item-item BM25 nearest neighbours (``K`` neighbours per item).

    Scores a customer as implicit's ``ItemItemRecommender.recommend`` does: the customer's
    (recency-weighted) order counts times the item-item similarity. Items with no similarity
    to anything the customer bought have no evidence and are filled by popularity.
    """

    kind = "knn"

    def __init__(
        self,
        K: int = 20,
        K1: float = 1.2,
        B: float = 0.75,
        *,
        half_life_days: float | None = None,
        popularity_days: int = 90,
        active_days: int | None = None,
        num_threads: int = 0,
    ):
        super().__init__(
            half_life_days=half_life_days, popularity_days=popularity_days, active_days=active_days
        )
        self.K = K
        self.K1 = K1
        self.B = B
        self.num_threads = num_threads

    def _fit(self, data: Interactions) -> None:
        from implicit.nearest_neighbours import BM25Recommender

        model = BM25Recommender(K=self.K, K1=self.K1, B=self.B, num_threads=self.num_threads)
        with warnings.catch_warnings():  # implicit converts its own BM25 coo matrix to csr
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(data.counts, show_progress=False)
        self.similarity = model.similarity.tocsr().astype(np.float64)

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        cols = self.similarity.tocsc()[:, items].tocsr()
        s = np.asarray((self.counts[rows] @ cols).todense())
        s[s <= 0] = -np.inf
        return s

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        s = np.asarray(self.similarity[item].todense()).ravel()[items]
        s[s <= 0] = -np.inf
        return s

    def _state(self) -> dict[str, np.ndarray]:
        return csr_arrays("similarity", self.similarity)

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.similarity = csr_from("similarity", arrays)
