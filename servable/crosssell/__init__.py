"""The cross-sell recommenders as served: one interface (:mod:`.base`), four models (:mod:`.als`,
:mod:`.hybrid` — ALS next to the items' content, :mod:`.content` —, :mod:`.knn`,
:mod:`.popularity`) and the registered pyfunc (:mod:`.pyfunc`).

Fitting needs implicit (ALS, item-kNN); loading and scoring a fitted model need numpy, pandas
and scipy (threadpoolctl is imported with :mod:`.als`). Training's tuning, backtest and
evaluation stay in :mod:`training.crosssell`, which re-exports these classes.
"""

from servable.crosssell.als import ALSRecommender
from servable.crosssell.base import Interactions, Recommender, build_interactions
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.knn import ItemKNNRecommender
from servable.crosssell.popularity import PopularityRecommender

__all__ = [
    "ALSRecommender",
    "HybridRecommender",
    "Interactions",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "build_interactions",
]
