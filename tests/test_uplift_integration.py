"""Offer uplift on the real Hillstrom e-mail experiment (MineThatData, 2008; 64,000 rows).

Issue #5 acceptance: the uplift model (the X-learner that ``python -m training.uplift``
registers) beats random targeting on the Qini coefficient for the men's e-mail arm on
visits, as a mean over the repeated stratified 50/50 splits; the loader's arm summary
matches the rates in ../shared/data/README.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.env import HILLSTROM_DATA
from features.loaders import hillstrom_arm_summary, load_hillstrom
from training.uplift import HILLSTROM_FEATURES, run_experiment, stratified_halves

pytestmark = pytest.mark.integration

# ../shared/data/README.md: visit, conversion, mean spend per arm (4 decimals)
README_RATES = {
    "mens_email": (0.1828, 0.0125, 1.4226),
    "womens_email": (0.1514, 0.0088, 1.0772),
    "control": (0.1062, 0.0057, 0.6528),
}


@pytest.fixture(scope="module")
def hillstrom() -> pd.DataFrame:
    return load_hillstrom(HILLSTROM_DATA)


@pytest.fixture(scope="module")
def mens_visit(hillstrom):
    exp = run_experiment(hillstrom, arms=("mens_email",), outcomes=("visit",), n_splits=5)
    print(f"\n{exp.summary.round(4).to_string()}\n({exp.seconds:.1f} s)")
    return exp


def test_arm_summary_matches_readme(hillstrom):
    summary = hillstrom_arm_summary(hillstrom)
    assert int(summary["n"].sum()) == 64_000
    assert set(summary.index) == set(README_RATES)
    for arm, (visit, conversion, spend) in README_RATES.items():
        row = summary.loc[arm]
        assert row["visit"] == pytest.approx(visit, abs=5e-5)
        assert row["conversion"] == pytest.approx(conversion, abs=5e-5)
        assert row["spend"] == pytest.approx(spend, abs=5e-5)
    # three equal randomised arms: the X-learner's design propensity of 1/2 per e-mail arm
    assert summary["n"].min() / summary["n"].max() > 0.99


def test_features_are_pre_treatment_and_complete(hillstrom):
    x = hillstrom[HILLSTROM_FEATURES]
    assert not x.isna().any().any()
    assert not {"visit", "conversion", "spend", "treatment"} & set(HILLSTROM_FEATURES)


def test_splits_are_stratified_halves(hillstrom):
    train = stratified_halves(hillstrom, 0)
    assert int(train.sum()) == 32_000
    strata = hillstrom["treatment"] + hillstrom["visit"].astype(int).astype(str)
    share = pd.Series(train).groupby(strata.to_numpy()).mean()
    assert np.allclose(share, 0.5, atol=0.001)


def test_uplift_model_beats_random_on_mens_email_visits(mens_visit):
    q = {m: mens_visit.mean("mens_email", "visit", m) for m in ("x_learner", "random")}
    assert q["x_learner"] > q["random"]
    assert q["x_learner"] > 0.0  # and the random baseline's expectation
    assert len(mens_visit.seeds) == 5
