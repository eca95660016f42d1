"""Tests for training.uplift: metric known answers (worked out by hand below), learners on a
synthetic randomised campaign with a planted heterogeneous effect, persistence, the pyfunc
in a real SQLite MLflow store and the CLI end to end on a small Hillstrom-format file."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training.registry import CHAMPION, champion_gate, champion_version, use_store
from training.uplift import (
    MODEL_NAME,
    FeatureEncoder,
    OfferUplift,
    RandomTargeting,
    ResponseModel,
    TwoModelUplift,
    UpliftParams,
    XLearnerUplift,
    auuc,
    decile_uplift,
    fit_offer_uplift,
    load_uplift,
    log_offer_uplift,
    main,
    perfect_qini_curve,
    perfect_uplift_curve,
    qini_coefficient,
    qini_curve,
    run_experiment,
    stratified_halves,
    summary_markdown,
    uplift_at_k,
    uplift_curve,
)

# ---------------------------------------------------------------------------------------------
# Metrics: one hand-made example. Rows already sorted by the score:
#   row   0  1  2  3  4  5
#   t     1  0  1  0  1  0
#   y     1  0  0  0  1  1
# top k:  N_t  Y_t  N_c  Y_c   Qini = Y_t - Y_c N_t/N_c   uplift = (Y_t/N_t - Y_c/N_c) k
#   1      1    1    0    0     1                         (1 - 0) 1 = 1
#   2      1    1    1    0     1                         (1 - 0) 2 = 2
#   3      2    1    1    0     1                         (1/2) 3 = 1.5
#   4      2    1    2    0     1                         (1/2) 4 = 2
#   5      3    2    2    0     2                         (2/3) 5 = 10/3
#   6      3    2    3    1     2 - 1 = 1                 (2/3 - 1/3) 6 = 2
# ---------------------------------------------------------------------------------------------

T = np.array([1, 0, 1, 0, 1, 0])
Y = np.array([1, 0, 0, 0, 1, 1])
U = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_qini_curve_known_answer():
    x, q = qini_curve(Y, U, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(q, [0, 1, 1, 1, 1, 2, 1])


def test_perfect_qini_curve_known_answer():
    # perfect score y t - y (1 - t) = [1, 0, 0, 0, 1, -1]: rows {0, 4}, then the tie
    # {1, 2, 3}, then row 5 -> vertices at k = 2 (Q 2), 5 (Q 2), 6 (Q 2 - 1 = 1)
    x, q = perfect_qini_curve(Y, T)
    np.testing.assert_array_equal(x, [0, 2, 5, 6])
    np.testing.assert_allclose(q, [0, 2, 2, 1])


def test_qini_coefficient_known_answer():
    # area under the curve: .5 + 1 + 1 + 1 + 1.5 + 1.5 = 6.5; random line to (6, 1): 3
    # perfect: 2 + 6 + 1.5 = 9.5 -> (6.5 - 3) / (9.5 - 3) = 7/13
    assert qini_coefficient(Y, U, T) == pytest.approx(7 / 13)


def test_qini_coefficient_zero_downlift_known_answer():
    # q0 optimum: R = Y_t - N_t Y_c / N_c = 2 - 3 * 1/3 = 1 -> (0,0), (1,1), (6,1): area 5.5
    # (6.5 - 3) / (5.5 - 3) = 1.4 (above 1: the model beats an optimum without downlift)
    assert qini_coefficient(Y, U, T, negative_effect=False) == pytest.approx(1.4)


def test_uplift_curve_and_auuc_known_answer():
    x, u = uplift_curve(Y, U, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(u, [0, 1, 2, 1.5, 2, 10 / 3, 2])
    # perfect: 1 control responder, 1 treated non-responder -> s = t, score 2[y == t] + t:
    # rows {0, 4} = 3, {1, 3} = 2, row 2 = 1, row 5 = 0 -> vertices k = 2, 4, 5, 6
    xp, up = perfect_uplift_curve(Y, T)
    np.testing.assert_array_equal(xp, [0, 2, 4, 5, 6])
    np.testing.assert_allclose(up, [0, 2, 4, 10 / 3, 2])
    # areas: model 65/6, perfect 43/3, random line to (6, 2): 6 -> (65/6 - 6)/(43/3 - 6)
    assert auuc(Y, U, T) == pytest.approx(29 / 50)


def test_uplift_at_k_overall_and_by_group():
    # overall, k = .5: top int(3) rows 0, 1, 2 -> treated {1, 0} = 1/2, control {0} = 0
    assert uplift_at_k(Y, U, T, 0.5, "overall") == pytest.approx(0.5)
    # by group, k = .5: top int(1.5) = 1 of each: treated row 0 (1), control row 1 (0)
    assert uplift_at_k(Y, U, T, 0.5, "by_group") == pytest.approx(1.0)
    # counts: overall top 2 = rows 0, 1 -> 1 - 0; by group 2 each: {1, 0} vs {0, 0}
    assert uplift_at_k(Y, U, T, 2, "overall") == pytest.approx(1.0)
    assert uplift_at_k(Y, U, T, 2, "by_group") == pytest.approx(0.5)
    # default: k = 0.3 overall
    y, t = np.tile(Y, 2), np.tile(T, 2)
    u = np.r_[U + 1, U]  # top int(3.6) = 3 rows: t 1, 0, 1; y 1, 0, 0
    assert uplift_at_k(y, u, t) == pytest.approx(0.5)


def test_random_is_zero_and_perfect_is_one():
    constant = np.zeros(6)  # one tie block: the curve is the random line itself
    assert qini_coefficient(Y, constant, T) == pytest.approx(0.0)
    assert auuc(Y, constant, T) == pytest.approx(0.0)
    perfect = Y * T - Y * (1 - T)
    assert qini_coefficient(Y, perfect, T) == pytest.approx(1.0)
    assert auuc(Y, 2.0 * (Y == T) + T, T) == pytest.approx(1.0)


def test_reversed_ordering_is_negative():
    assert qini_coefficient(Y, -U, T) < 0
    assert auuc(Y, -U, T) < 0


def test_metrics_do_not_depend_on_row_order_within_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    t = rng.integers(0, 2, 200)
    u = rng.integers(0, 5, 200).astype(float)  # many ties
    perm = rng.permutation(200)
    assert qini_coefficient(y, u, t) == pytest.approx(qini_coefficient(y[perm], u[perm], t[perm]))
    assert auuc(y, u, t) == pytest.approx(auuc(y[perm], u[perm], t[perm]))


def test_continuous_outcome_known_answers():
    # spend: t = 1 0 1 0, y = 5 0 0 2 (rows in score order for s_fwd)
    t = np.array([1, 0, 1, 0])
    y = np.array([5.0, 0.0, 0.0, 2.0])
    fwd, rev = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    # forward: Qini 5, 5, 5, 5 - 2 * 2/2 = 3 -> the perfect ordering itself -> 1
    np.testing.assert_allclose(qini_curve(y, fwd, t)[1], [0, 5, 5, 5, 3])
    assert qini_coefficient(y, fwd, t) == pytest.approx(1.0)
    np.testing.assert_allclose(uplift_curve(y, fwd, t)[1], [0, 5, 10, 7.5, 6])
    assert auuc(y, fwd, t) == pytest.approx(1.0)
    # reversed (rows 3, 2, 1, 0): Qini 0 - 2*0/1 = 0, 0 - 2*1/1 = -2, -2*1/2 = -1, 5 - 2 = 3
    # area -1.5, random line to (4, 3): 6, perfect area 16.5 -> (-1.5 - 6) / (16.5 - 6)
    np.testing.assert_allclose(qini_curve(y, rev, t)[1], [0, 0, -2, -1, 3])
    assert qini_coefficient(y, rev, t) == pytest.approx(-5 / 7)
    # uplift curve -2, -4, -3, 6: area -6; random line to (4, 6): 12; perfect 25.5
    np.testing.assert_allclose(uplift_curve(y, rev, t)[1], [0, -2, -4, -3, 6])
    assert auuc(y, rev, t) == pytest.approx((-6 - 12) / (25.5 - 12))
    # uplift@50% overall, forward: rows 0 (t, 5) and 1 (c, 0) -> 5
    assert uplift_at_k(y, fwd, t, 0.5) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: qini_coefficient([1, 0], [0.1, 0.2, 0.3], [1, 0]), "length mismatch"),
        (lambda: qini_coefficient([1, 0, 1], [0.1, 0.2, 0.3], [1, 1, 1]), "both treated"),
        (lambda: qini_coefficient([1, 0], [0.1, 0.2], [1, 2]), "0/1"),
        (lambda: auuc([1, 0], [np.nan, 0.2], [1, 0]), "NaN"),
        (lambda: auuc([0, 0], [0.1, 0.2], [1, 0]), "no area"),
        (lambda: qini_coefficient([0.5, 1], [0.1, 0.2], [1, 0], False), "binary"),
        (lambda: qini_coefficient([0, 1], [0.1, 0.2], [1, 0], False), "positive total"),
        (lambda: uplift_at_k(Y, U, T, 1.5), r"\(0, 1\)"),
        (lambda: uplift_at_k(Y, U, T, 6), "count"),
        (lambda: uplift_at_k(Y, U, T, 0.5, "best"), "strategy"),
        (lambda: uplift_at_k(Y, U, T, 1, "overall"), "no control"),
    ],
)
def test_metric_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_decile_uplift_on_hand_example():
    y, t = np.repeat(Y, 10), np.repeat(T, 10)
    u = np.repeat(U, 10)
    out = decile_uplift(y, u, t)
    assert out.shape == (10,)
    assert np.isnan(out[0])  # the first 6 rows are all row 0 (treated): no control


# ---------------------------------------------------------------------------------------------
# Learners on a synthetic campaign: treatment randomised (P = .5); the baseline rate jumps
# from .10 to .55 at x2 = 0 (what a response model mostly sees); the effect of the treatment
# is +0.25 for x1 > 0 and -0.05 otherwise.
# ---------------------------------------------------------------------------------------------

SMALL = UpliftParams(num_rounds=60, learning_rate=0.1, num_leaves=4, min_data_in_leaf=100)


def campaign(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "x1": rng.uniform(-1, 1, n),
            "x2": rng.uniform(-1, 1, n),
            "region": pd.Categorical(rng.choice(["north", "south", "west"], n)),
        }
    )
    t = (rng.random(n) < 0.5).astype(float)
    base = 0.1 + 0.45 * (x["x2"].to_numpy() > 0)
    effect = np.where(x["x1"].to_numpy() > 0, 0.25, -0.05)
    y = (rng.random(n) < base + t * effect).astype(float)
    return x, t, y


@pytest.fixture(scope="module")
def synthetic():
    train, test = campaign(6000, 1), campaign(6000, 2)
    models = {
        "x_learner": XLearnerUplift(SMALL, propensity=0.5),
        "two_model": TwoModelUplift(SMALL),
        "response": ResponseModel(SMALL),
        "random": RandomTargeting(SMALL, seed=4),
    }
    for m in models.values():
        m.fit(*train)
    return models, train, test


@pytest.mark.parametrize("name", ["x_learner", "two_model"])
def test_learners_recover_planted_uplift(synthetic, name):
    models, _, (x, t, y) = synthetic
    u = models[name].predict_uplift(x)
    positive = x["x1"].to_numpy() > 0
    # the true uplift is .25 vs -.05: estimates land near, the groups far apart
    assert u[positive].mean() == pytest.approx(0.25, abs=0.06)
    assert u[~positive].mean() == pytest.approx(-0.05, abs=0.06)
    top_half = np.argsort(-u)[: len(u) // 2]
    assert positive[top_half].mean() > 0.9
    # Qini is normalised by the perfect ordering of the *realised* outcomes, which no model of
    # P(y) reaches: the true uplift itself scores about 0.13 here
    true_uplift = np.where(positive, 0.25, -0.05) + 1e-9 * x["x1"].to_numpy()
    q, q_true = qini_coefficient(y, u, t), qini_coefficient(y, true_uplift, t)
    assert q > 0.1 and q > 0.9 * q_true
    assert q > qini_coefficient(y, models["response"].predict_uplift(x), t) + 0.03
    assert q > qini_coefficient(y, models["random"].predict_uplift(x), t) + 0.1
    assert auuc(y, u, t) > 0.9 * auuc(y, true_uplift, t)


def test_response_model_ranks_by_response(synthetic):
    models, _, (x, _, _) = synthetic
    score = models["response"].predict_uplift(x)
    # a probability, increasing with the baseline driver x2 (and with x1 through the effect)
    assert score.min() >= 0 and score.max() <= 1
    assert np.corrcoef(score, x["x2"])[0, 1] > 0.5


def test_random_targeting_is_seeded_and_uninformative(synthetic):
    models, _, (x, t, y) = synthetic
    a = models["random"].predict_uplift(x)
    np.testing.assert_array_equal(
        a, RandomTargeting(seed=4).fit(*campaign(50, 0)).predict_uplift(x)
    )
    assert abs(qini_coefficient(y, a, t)) < 0.15


def test_x_learner_propensity():
    x, t, y = campaign(1500, 5)
    m = XLearnerUplift(SMALL).fit(x, t, y)
    assert m.propensity == pytest.approx(t.mean())
    with pytest.raises(ValueError, match="propensity"):
        XLearnerUplift(SMALL, propensity=1.0)


def test_spend_outcome_uses_regression(synthetic):
    _, (x, t, y), _ = synthetic
    spend = y * 40.0
    m = TwoModelUplift(SMALL).fit(x, t, spend)
    assert m.objective == "regression"
    assert m.predict_uplift(x).max() > 1.0  # in money units, not a probability
    assert XLearnerUplift(SMALL).fit(x, t, y).objective == "binary"


@pytest.mark.parametrize("name", ["x_learner", "two_model", "response", "random"])
def test_save_load_round_trip(synthetic, tmp_path, name):
    models, _, (x, _, _) = synthetic
    model = models[name]
    path = model.save(tmp_path / name)
    loaded = load_uplift(path)
    assert type(loaded) is type(model) and loaded.kind == name
    np.testing.assert_array_equal(loaded.predict_uplift(x), model.predict_uplift(x))
    assert loaded.input_columns == ["x1", "x2", "region"]
    assert type(model).load(path).params == model.params


def test_encoder_accepts_strings_extra_columns_and_unknown_levels(synthetic):
    models, _, (x, _, _) = synthetic
    m = models["x_learner"]
    as_text = x.assign(region=x["region"].astype(str), extra=1.0)[["extra", "region", "x2", "x1"]]
    np.testing.assert_array_equal(m.predict_uplift(as_text), m.predict_uplift(x))
    unseen = x.head(3).assign(region=["east", None, "north"])
    assert np.all(np.isfinite(m.predict_uplift(unseen)))
    enc = FeatureEncoder.fit(x)
    assert enc.categories == {"region": ["north", "south", "west"]}
    assert np.isnan(enc.transform(unseen)[:2, 2]).all()
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['x2'\]"):
        m.predict_uplift(x.drop(columns="x2"))
    with pytest.raises(ValueError, match="not numeric"):
        m.predict_uplift(x.assign(x1="high"))


def test_fit_input_errors():
    x, t, y = campaign(100, 0)
    with pytest.raises(ValueError, match="both treated and control"):
        TwoModelUplift(SMALL).fit(x, np.ones(100), y)
    with pytest.raises(ValueError, match="length mismatch"):
        TwoModelUplift(SMALL).fit(x, t[:50], y[:50])
    with pytest.raises(TypeError, match="DataFrame"):
        TwoModelUplift(SMALL).fit(x.to_numpy(), t, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        TwoModelUplift(SMALL).predict_uplift(x)


# ---------------------------------------------------------------------------------------------
# Hillstrom-format data: the offer model, the pyfunc in MLflow, the CLI
# ---------------------------------------------------------------------------------------------

SEGMENTS = {"mens_email": "Mens E-Mail", "womens_email": "Womens E-Mail", "control": "No E-Mail"}


def hillstrom_like(n: int = 9000, seed: int = 0) -> pd.DataFrame:
    """A file in Hillstrom's format: the baseline visit rate jumps from .05 to .55 with
    ``history`` (what a response model ranks by); the men's e-mail works (+.3) only on men's
    buyers, the women's e-mail only on women's buyers (-.03 on the others)."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(list(SEGMENTS), n)
    mens, womens = rng.integers(0, 2, n), rng.integers(0, 2, n)
    history = rng.gamma(2.0, 120.0, n).round(2)
    base = 0.05 + 0.5 * (history > np.median(history))
    effect = np.select(
        [arm == "mens_email", arm == "womens_email"],
        [np.where(mens == 1, 0.3, -0.03), np.where(womens == 1, 0.3, -0.03)],
        0.0,
    )
    visit = rng.random(n) < base + effect
    conversion = visit & (rng.random(n) < 0.3)
    return pd.DataFrame(
        {
            "recency": rng.integers(1, 13, n),
            "history_segment": "1) $0 - $100",
            "history": history,
            "mens": mens,
            "womens": womens,
            "zip_code": rng.choice(["Urban", "Surburban", "Rural"], n),
            "newbie": rng.integers(0, 2, n),
            "channel": rng.choice(["Phone", "Web", "Multichannel"], n),
            "segment": [SEGMENTS[a] for a in arm],
            "visit": visit.astype(int),
            "conversion": conversion.astype(int),
            "spend": np.where(conversion, rng.gamma(2.0, 50.0, n), 0.0).round(2),
        }
    )


@pytest.fixture(scope="module")
def campaign_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hillstrom") / "hillstrom_like.csv"
    hillstrom_like().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def campaign_table(campaign_file):
    from features.loaders import load_hillstrom

    return load_hillstrom(campaign_file)


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_store(uri, "t")
    yield uri, MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def test_stratified_halves(campaign_table):
    df = campaign_table
    a, b = stratified_halves(df, 0), stratified_halves(df, 1)
    assert abs(int(a.sum()) - len(df) // 2) <= 1
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, stratified_halves(df, 0))
    strata = df["treatment"] + df["visit"].astype(str) + df["conversion"].astype(str)
    share = pd.Series(a).groupby(strata.to_numpy()).mean()
    assert share.between(0.49, 0.51).all()


def test_experiment_table_and_offer_model(campaign_table, tmp_path):
    exp = run_experiment(campaign_table, n_splits=2, params=SMALL, outcomes=("visit", "spend"))
    assert exp.seeds == [0, 1] and len(exp.scores) == 2 * 2 * 2 * 4 * 3
    q = exp.mean("mens_email", "visit", "x_learner")
    assert q > 0.12 and q > exp.mean("mens_email", "visit", "response") + 0.05
    table = summary_markdown(exp.summary)
    assert table.count("\n") == 1 + 2 * 2 * 4
    assert "| mens_email | visit | x_learner | " in table and " ± " in table
    assert set(exp.curves["mens_email"]) == {
        "x_learner",
        "two_model",
        "response",
        "random",
        "perfect",
    }

    offer = fit_offer_uplift(campaign_table, "x_learner", params=SMALL)
    out = offer.predict(campaign_table)
    assert list(out.columns) == ["uplift_mens_email", "uplift_womens_email"]
    mens = campaign_table["mens"].to_numpy() == 1
    assert out["uplift_mens_email"][mens].mean() > out["uplift_mens_email"][~mens].mean() + 0.2
    loaded = OfferUplift.load(offer.save(tmp_path / "offer"))
    pd.testing.assert_frame_equal(loaded.predict(campaign_table), out)
    assert loaded.outcome == "visit" and loaded.arms == ["mens_email", "womens_email"]


def test_pyfunc_registered_and_loaded_as_champion(store, campaign_table):
    _, client = store
    offer = fit_offer_uplift(campaign_table, "two_model", params=SMALL)
    with mlflow.start_run():
        info = log_offer_uplift(offer, campaign_table)
    version = str(info.registered_model_version)
    decision = champion_gate(
        client, MODEL_NAME, version, "qini.mens_email.visit", 0.4, {"random": 0.0}
    )
    assert decision.promoted
    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    features = campaign_table.head(200)
    # what a caller sends: ints and plain strings are accepted as well as the loader's dtypes
    sent = features[offer.input_columns].astype({"recency": int, "zip_code": str})
    got = served.predict(sent)
    np.testing.assert_allclose(got.to_numpy(), offer.predict(features).to_numpy())
    assert list(got.columns) == ["uplift_mens_email", "uplift_womens_email"]
    assert served.metadata.metadata["arms"] == "mens_email,womens_email"


def test_cli_runs_logs_registers_and_gates(store, campaign_file, capsys):
    uri, client = store
    args = ["--data", str(campaign_file), "--tracking-uri", uri, "--experiment", "t"]
    args += ["--splits", "2", "--rounds", "40", "--min-leaf", "100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| mens_email | visit | x_learner |" in out and "PROMOTED" in out
    v1 = champion_version(client, MODEL_NAME)
    assert v1 is not None and v1.tags["learner"] == "x_learner"
    assert float(v1.tags["backtest.qini.mens_email.visit"]) > 0.12

    run = client.get_run(v1.run_id)
    assert run.data.metrics["uplift.mens_email.visit.x_learner.qini.mean"] > 0.12
    assert "uplift.womens_email.spend.random.uplift_at_30.std" in run.data.metrics
    assert run.data.params["uplift_at_k.strategy"] == "overall"
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"uplift_table.csv", "uplift_table.md", "uplift_scores.csv", "plots"} <= files
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/qini_mens_email_visit.png", "plots/qini_womens_email_visit.png"}

    # the same run again ties the champion: the gate keeps it, --force moves the alias
    assert main(args) == 0
    assert "does not beat champion" in capsys.readouterr().out
    assert champion_version(client, MODEL_NAME).version == v1.version
    assert main([*args, "--force"]) == 0
    assert "forced" in capsys.readouterr().out
    assert int(champion_version(client, MODEL_NAME).version) == int(v1.version) + 2

    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    assert served.predict(hillstrom_like(5, 9)).shape == (5, 2)


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.csv")]) == 2
    assert main(["--splits", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_summary_markdown_formats_mean_and_std():
    summary = pd.DataFrame(
        {
            "arm": ["a"] * 3,
            "outcome": ["visit"] * 3,
            "model": ["m"] * 3,
            "metric": ["qini", "auuc", "uplift_at_30"],
            "mean": [0.1, 0.2, math.pi],
            "std": [0.01, 0.02, 0.5],
        }
    )
    lines = summary_markdown(summary).splitlines()
    assert lines[0] == "| arm | outcome | model | Qini | AUUC | uplift@30% |"
    assert lines[2] == "| a | visit | m | 0.1000 ± 0.0100 | 0.2000 ± 0.0200 | 3.1416 ± 0.5000 |"
