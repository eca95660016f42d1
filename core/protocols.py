"""What the service needs of each served model, as typed protocols.

Training registers concrete classes (``servable.propensity.ChurnModel``, the cross-sell
recommenders, ``servable.uplift.OfferUplift``); the service loads the champions and
sees only these protocols, so it never imports ``training`` and a model from elsewhere that
has the same methods serves as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = [
    "CROSS_SELL_SKIPPED",
    "ChurnScorer",
    "CrossSellRecommender",
    "NextPurchaseScorer",
    "OfferUpliftScorer",
]

# The tag training sets on the churn and next-purchase versions it registered without a
# cross-sell model (a log without item ids; its value says why): the service then serves
# without item recommendations instead of refusing to start, and `--if-missing` does not
# count the absent cross-sell champion as missing.
CROSS_SELL_SKIPPED = "cross_sell.skipped"


@runtime_checkable
class ChurnScorer(Protocol):
    """P(no order within the churn horizon) per row of a point-in-time feature frame."""

    def predict(self, features: pd.DataFrame) -> np.ndarray: ...


@runtime_checkable
class NextPurchaseScorer(Protocol):
    """``p_buy_30d`` and ``expected_days`` per row of a feature frame (same index)."""

    def predict(self, features: pd.DataFrame) -> pd.DataFrame: ...


@runtime_checkable
class CrossSellRecommender(Protocol):
    """Top-``k`` item ids per customer, never an item the customer already has if asked."""

    def recommend(
        self, customer_ids: Iterable[str], k: int = 10, exclude_seen: bool = True
    ) -> dict[str, list[str]]: ...


@runtime_checkable
class OfferUpliftScorer(Protocol):
    """Predicted uplift per offer arm: one ``uplift_<arm>`` column per arm, same index."""

    @property
    def arms(self) -> list[str]: ...

    @property
    def input_columns(self) -> list[str]: ...

    def predict(self, features: pd.DataFrame) -> pd.DataFrame: ...
