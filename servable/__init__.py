"""What a registered model needs at load and predict time, and nothing else.

Every registered pyfunc (``churn``, ``next_purchase``, ``cross_sell``, ``offer_uplift``) is a
wrapper class from this package around a model class from this package; the package is
logged with each model as MLflow ``code_paths``, so a model loads with only its own pinned
requirements and no checkout of this repository. Modules:

* :mod:`.propensity` (+ :mod:`.bgnbd`) — LightGBM churn / next-purchase models and
  :class:`~servable.propensity.SnapshotPyfunc`;
* :mod:`.crosssell` — the recommenders (ALS, item-kNN, popularity) and
  :class:`~servable.crosssell.pyfunc.CrossSellPyfunc`;
* :mod:`.uplift` — the uplift learners, :class:`~servable.uplift.OfferUplift` and its pyfunc;
* :mod:`.checks` — input checks shared with training.

Rules: it imports nothing of ``core``, ``features``, ``training`` or ``service`` (training
imports it; the service never does: it sees models through :mod:`core.protocols`). Importing
the package imports nothing: each model's environment has only that model's requirements
(no lightgbm for ``cross_sell``, no implicit for the others), so import the module you need.
"""

__all__: list[str] = []
