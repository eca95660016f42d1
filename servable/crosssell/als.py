"""ALS: implicit's alternating least squares (Hu, Koren & Volinsky 2008) on purchase
confidences with recency decay and BM25 or log weighting, optionally blended with popularity."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from servable.crosssell.base import Interactions, Recommender

__all__ = ["ALSRecommender"]


def _bm25(x: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25 weight of a customer × item matrix (idf per item, length norm per customer).

    implicit's ``bm25_weight`` with the idf floored at a small positive value, so an item
    nearly everybody bought keeps a (tiny) positive confidence instead of a negative one.
    """
    from implicit.nearest_neighbours import bm25_weight

    w = bm25_weight(x, K1=k1, B=b).tocsr()
    w.data = np.maximum(w.data, 1e-3).astype(np.float32)
    return w


class ALSRecommender(Recommender):
    """implicit ALS on customer × item confidences.

    Confidence: the number of orders buying the item, each weighted by ``0.5 ** (age /
    half_life_days)``, then ``weighting`` — ``"bm25"`` (BM25 with ``bm25_k1``/``bm25_b``:
    damps repeat counts and down-weights items everybody buys) or ``"log"`` (``log1p``) — and
    scaled by ``alpha``. ``popularity_blend`` adds ``blend × log1p(recent buyers) /
    log1p(max)`` to the scores (0 = pure ALS).
    """

    kind = "als"
    scoring_params = ("popularity_blend",)

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 10,
        alpha: float = 1.0,
        weighting: str = "bm25",
        *,
        half_life_days: float | None = 90.0,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        popularity_blend: float = 0.0,
        popularity_days: int = 90,
        active_days: int | None = None,
        random_state: int = 42,
        num_threads: int = 0,
    ):
        if weighting not in ("bm25", "log"):
            raise ValueError(f"weighting must be 'bm25' or 'log', got {weighting!r}")
        super().__init__(
            half_life_days=half_life_days, popularity_days=popularity_days, active_days=active_days
        )
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.popularity_blend = popularity_blend
        self.random_state = random_state
        self.num_threads = num_threads

    def confidence(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """The confidence matrix handed to ALS (before implicit multiplies it by ``alpha``)."""
        if self.weighting == "bm25":
            c = _bm25(counts, self.bm25_k1, self.bm25_b)
        else:
            c = counts.copy().astype(np.float32)
            c.data = np.log1p(c.data)
        return c

    def _fit(self, data: Interactions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(self.confidence(data.counts), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _prepare_scoring(self) -> None:
        top = np.log1p(self.popularity.max()) if len(self.popularity) else 0.0
        self._blend = (
            self.popularity_blend * np.log1p(self.popularity) / top
            if self.popularity_blend and top > 0
            else None
        )

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        s = (self.user_factors[rows] @ self.item_factors[items].T).astype(np.float64)
        if self._blend is not None:
            s += self._blend[items]
        return s

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(self.item_factors, axis=1)
        norms[norms == 0] = 1.0
        unit = self.item_factors / norms[:, None]
        return unit[items] @ unit[item]

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]
