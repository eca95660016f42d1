"""Cross-sell: which items a customer has not bought yet is likely to buy, and "bought together".

Four recommenders share one interface (:class:`Recommender`, in the style of implicit's
``RecommenderBase`` but keyed by the contract's string ids); they live in
:mod:`servable.crosssell` (shipped with the registered model) and are re-exported here:

* :class:`ALSRecommender` — implicit's ALS (Hu, Koren & Volinsky 2008) on the
  customer × item matrix of purchase orders, with recency decay (half-life) and BM25 or log
  confidence weighting;
* :class:`HybridRecommender` — ALS next to each item's content (description words, family;
  TF-IDF) matched against the customer's purchases: a weighted hybrid that reaches items
  launched too recently for ALS to know (the served model; ALS alone is its ablation);
* :class:`ItemKNNRecommender` — implicit's item-item BM25 nearest neighbours
  (baseline);
* :class:`PopularityRecommender` — most-bought items by distinct
  customers in a recent window (baseline).

All of them see only rows strictly before the cutoff; purchases (quantity > 0) are the
positive signal, returned items count as "seen" (never recommended with ``exclude_seen``) but
not as positive signal. Every model obeys the same catalogue rule (``active_days``: only items
sold in that many days before the cutoff are recommended) and the same fallback (popular unseen
items fill the list, so every customer — known or not — gets ``k`` items).

Evaluation (:mod:`.evaluation`, :mod:`.backtest`) follows the project's backtest protocol:
targets are items bought in ``[cutoff, cutoff + H)`` that the customer never bought before the
cutoff; hyper-parameters are chosen on a validation split whose label window ends at the
backtest cutoff (:mod:`.tuning`), never on the backtest window.

:mod:`.model`: :func:`fit_final` (the hybrid refit that is served), :func:`no_items_reason`
(why a log cannot train it) and :func:`log_pyfunc`, which
registers it as :class:`CrossSellPyfunc` with the :mod:`servable` code and pinned
requirements.
"""

from servable.crosssell.als import ALSRecommender
from servable.crosssell.base import Interactions, Recommender, build_interactions
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.knn import ItemKNNRecommender
from servable.crosssell.popularity import PopularityRecommender
from training.crosssell.backtest import (
    POPULATIONS,
    CrossSellResult,
    TunedCrossSell,
    run_backtest,
)
from training.crosssell.evaluation import (
    cross_sell_targets,
    customers_before,
    evaluate,
    sample_customers,
)
from training.crosssell.model import CrossSellPyfunc, fit_final, log_pyfunc, no_items_reason
from training.crosssell.tuning import (
    DEFAULT_ALS_GRID,
    DEFAULT_GRIDS,
    DEFAULT_HYBRID_GRID,
    DEFAULT_KNN_GRID,
    DEFAULT_POPULARITY_GRID,
    SMALL_GRIDS,
    TUNING_CUSTOMERS,
    VALIDATION_USERS,
    tune,
    tune_als,
    tune_hybrid,
    tune_knn,
    tune_popularity,
)

__all__ = [
    "DEFAULT_ALS_GRID",
    "DEFAULT_GRIDS",
    "DEFAULT_HYBRID_GRID",
    "DEFAULT_KNN_GRID",
    "DEFAULT_POPULARITY_GRID",
    "POPULATIONS",
    "SMALL_GRIDS",
    "TUNING_CUSTOMERS",
    "VALIDATION_USERS",
    "ALSRecommender",
    "CrossSellPyfunc",
    "CrossSellResult",
    "TunedCrossSell",
    "HybridRecommender",
    "Interactions",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "build_interactions",
    "cross_sell_targets",
    "customers_before",
    "evaluate",
    "fit_final",
    "log_pyfunc",
    "no_items_reason",
    "run_backtest",
    "sample_customers",
    "tune",
    "tune_als",
    "tune_hybrid",
    "tune_knn",
    "tune_popularity",
]
