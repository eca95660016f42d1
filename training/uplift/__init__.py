"""Offer uplift: which e-mail (or none) moves a customer, learned from a randomised campaign.

* :mod:`.learners` — the T-learner, the X-learner (Künzel et al. 2019) and the response /
  random baselines on LightGBM, behind one ``fit`` / ``predict_uplift`` / ``save`` interface;
* :mod:`.metrics` — Qini and uplift curves, Qini coefficient, AUUC, uplift@k (scikit-uplift's
  definitions);
* :mod:`.experiment` — the Hillstrom experiment (learner x arm x outcome on repeated
  stratified splits) and its summary table; :mod:`.plots` — its Qini figure;
* :mod:`.model` — :class:`OfferUplift`, one model per e-mail arm, and its MLflow pyfunc;
* :mod:`.train` / :mod:`.cli` — ``python -m training.uplift``: experiment, MLflow run,
  registration of ``offer_uplift`` behind the champion gate;
* :mod:`.design` — the campaign's arms, outcomes, features and gate metric.
"""

from training.uplift.cli import main
from training.uplift.design import (
    ARMS,
    CONTROL,
    GATE_METRIC,
    HILLSTROM_FEATURES,
    MODEL_NAME,
    OUTCOMES,
)
from training.uplift.experiment import (
    UpliftExperiment,
    run_experiment,
    stratified_halves,
    summary_markdown,
)
from training.uplift.learners import (
    LEARNERS,
    FeatureEncoder,
    RandomTargeting,
    ResponseModel,
    TwoModelUplift,
    UpliftModel,
    UpliftParams,
    XLearnerUplift,
    load_uplift,
    make_learner,
)
from training.uplift.metrics import (
    auuc,
    decile_uplift,
    perfect_qini_curve,
    perfect_uplift_curve,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_curve,
    uplift_report,
)
from training.uplift.model import OfferUplift, OfferUpliftPyfunc, fit_offer_uplift, log_offer_uplift
from training.uplift.plots import qini_plot
from training.uplift.train import UpliftRunResult, train_and_register

__all__ = [
    "ARMS",
    "CONTROL",
    "GATE_METRIC",
    "HILLSTROM_FEATURES",
    "LEARNERS",
    "MODEL_NAME",
    "OUTCOMES",
    "FeatureEncoder",
    "OfferUplift",
    "OfferUpliftPyfunc",
    "RandomTargeting",
    "ResponseModel",
    "TwoModelUplift",
    "UpliftExperiment",
    "UpliftModel",
    "UpliftParams",
    "UpliftRunResult",
    "XLearnerUplift",
    "auuc",
    "decile_uplift",
    "fit_offer_uplift",
    "load_uplift",
    "log_offer_uplift",
    "main",
    "make_learner",
    "perfect_qini_curve",
    "perfect_uplift_curve",
    "qini_coefficient",
    "qini_curve",
    "qini_plot",
    "run_experiment",
    "stratified_halves",
    "summary_markdown",
    "train_and_register",
    "uplift_at_k",
    "uplift_curve",
    "uplift_report",
]
