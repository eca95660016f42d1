"""The served-model check: a champion that does not fit its protocol stops start-up by name."""

from __future__ import annotations

import pytest

from core.protocols import CrossSellRecommender, OfferUpliftScorer
from service.runtime import ModelsUnavailable
from service.runtime.models import _served_model


class _Wrapper:  # what training's pyfunc wrappers look like: the model in ``.model``
    def __init__(self, model: object) -> None:
        self.model = model


class _Loaded:  # a loaded pyfunc
    def __init__(self, model: object) -> None:
        self._model = model

    def unwrap_python_model(self) -> _Wrapper:
        return _Wrapper(self._model)


class _PredictOnly:
    def predict(self, features):
        return features


class _Recommender:
    def recommend(self, customer_ids, k=10, exclude_seen=True):
        return {c: [] for c in customer_ids}


def test_a_model_that_fits_is_returned_unwrapped_with_its_python_model():
    rec = _Recommender()
    model, inner = _served_model(_Loaded(rec), "models:/cross_sell/1", CrossSellRecommender)
    assert model is rec and inner.model is rec


@pytest.mark.parametrize(
    ("protocol", "missing"),
    [(CrossSellRecommender, "recommend"), (OfferUpliftScorer, "arms, input_columns")],
)
def test_a_model_that_does_not_fit_names_the_model_and_what_it_lacks(protocol, missing):
    with pytest.raises(ModelsUnavailable, match=rf"models:/m/3 .*{protocol.__name__}.*{missing}"):
        _served_model(_Loaded(_PredictOnly()), "models:/m/3", protocol)
