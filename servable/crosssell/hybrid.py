"""ALS next to what is known of every item: the hybrid cross-sell model.

A weighted hybrid (Burke 2002) of two scores per customer ``c`` and candidate item ``i``::

    score(c, i) = z_c(ALS(c, i)) + content_weight · z_c(cos(profile_c, v_i))

``v_i`` is the item's content vector (:mod:`servable.crosssell.content`: its description
words and family, TF-IDF); ``profile_c = Σ_j counts(c, j) · v_j`` sums the vectors of what
the customer bought, weighted by their recency-decayed order counts; ``z_c`` standardises
each score over the candidates of that customer, so the two scales meet. ALS cannot rank an
item launched last week (it has next to no buyers yet); the content term can, from the
words it shares with what the customer already buys. ``content_weight = 0`` is plain ALS;
it is a scoring parameter, so tuning varies it without refitting.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from servable.crosssell.als import ALSRecommender
from servable.crosssell.base import Interactions, csr_arrays, csr_from
from servable.crosssell.content import item_content

__all__ = ["HybridRecommender"]


def _standardise(s: np.ndarray) -> np.ndarray:
    """Each row to mean 0 and standard deviation 1 (both scores are finite by construction:
    seen items are masked by the base class after scoring)."""
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    std[~(std > 0)] = 1.0
    return (s - mean) / std


def _profiles(counts: sp.csr_matrix, content: sp.csr_matrix) -> sp.csr_matrix:
    """Each customer's profile: the content vectors of what they bought, weighted by their
    order counts, L2-normalised (fit-time state: scoring parameters do not change it)."""
    profile = (counts @ content).tocsr()
    norms = np.sqrt(np.asarray(profile.multiply(profile).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ profile).astype(np.float32).tocsr()


class HybridRecommender(ALSRecommender):
    """ALS plus the customer's content profile (see module docstring)."""

    kind = "hybrid"
    scoring_params = ("popularity_blend", "content_weight")

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 10,
        alpha: float = 1.0,
        weighting: str = "bm25",
        *,
        content_weight: float = 0.25,
        half_life_days: float | None = 90.0,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        popularity_blend: float = 0.0,
        popularity_days: int = 90,
        active_days: int | None = None,
        random_state: int = 42,
        num_threads: int = 0,
    ):
        super().__init__(
            factors,
            regularization,
            iterations,
            alpha,
            weighting,
            half_life_days=half_life_days,
            bm25_k1=bm25_k1,
            bm25_b=bm25_b,
            popularity_blend=popularity_blend,
            popularity_days=popularity_days,
            active_days=active_days,
            random_state=random_state,
            num_threads=num_threads,
        )
        if content_weight < 0:
            raise ValueError(f"content_weight must be >= 0, got {content_weight!r}")
        self.content_weight = content_weight

    def als_alone(self) -> HybridRecommender:
        """The same fit with the content term off: plain ALS on the same factors (a shallow
        copy; the ablation the backtest reports next to the hybrid)."""
        return copy.copy(self).set_scoring_params(content_weight=0.0)  # type: ignore[return-value]

    def _fit(self, data: Interactions) -> None:
        super()._fit(data)
        self.content = item_content(data.item_ids, data.item_text, data.families)
        self._profile = _profiles(self.counts, self.content)

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), **csr_arrays("content", self.content)}

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._restore(arrays)
        self.content = csr_from("content", arrays)
        self._profile = _profiles(self.counts, self.content)

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        als = super()._score(rows, items)
        if not self.content_weight:
            return als
        content = (self._profile[rows] @ self.content[items].T).toarray().astype(np.float64)
        return _standardise(als) + self.content_weight * _standardise(content)
