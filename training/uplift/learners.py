"""The uplift learners by name, for the experiment table and the served fit.

The learner classes themselves (T-learner, X-learner, response and random baselines, their
feature encoder and persistence) live in :mod:`servable.uplift`, which ships with every
registered ``offer_uplift`` model; this module re-exports them so training code imports one
place, and adds what only training needs: the table of learners and :func:`make_learner`.
"""

from __future__ import annotations

from servable.uplift import (
    FeatureEncoder,
    RandomTargeting,
    ResponseModel,
    TwoModelUplift,
    UpliftModel,
    UpliftParams,
    XLearnerUplift,
    load_uplift,
)
from training.uplift.design import HILLSTROM_PROPENSITY

__all__ = [
    "LEARNERS",
    "FeatureEncoder",
    "RandomTargeting",
    "ResponseModel",
    "TwoModelUplift",
    "UpliftModel",
    "UpliftParams",
    "XLearnerUplift",
    "load_uplift",
    "make_learner",
]

LEARNERS: dict[str, type[UpliftModel]] = {
    "x_learner": XLearnerUplift,
    "two_model": TwoModelUplift,
    "response": ResponseModel,
    "random": RandomTargeting,
}


def make_learner(name: str, params: UpliftParams, seed: int = 0) -> UpliftModel:
    """A fresh learner by table name (the X-learner with the Hillstrom design propensity)."""
    if name == "x_learner":
        return XLearnerUplift(params, propensity=HILLSTROM_PROPENSITY)
    if name == "random":
        return RandomTargeting(params, seed=seed)
    if name in LEARNERS:
        return LEARNERS[name](params)
    raise ValueError(f"unknown learner {name!r} (expected one of {list(LEARNERS)})")
