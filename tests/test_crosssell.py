"""Tests for training.crosssell on small hand-made logs with known answers.

The toy log has two item clusters: {A, B, C, D} bought by ten "k" customers (A, B, C always,
D every other one) and {W, X, Y, Z} bought by six "m" customers (W, X, Y always, Z half of
them). Customer ``u`` bought A and B, ``v`` bought W and X, ``r`` bought A and B and returned
D (without a purchase of D in the log). Every backend runs the same contract tests.
"""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from training.crosssell import (
    ALSRecommender,
    CrossSellPyfunc,
    CrossSellResult,
    HybridRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    build_interactions,
    cross_sell_targets,
    customers_before,
    evaluate,
    fit_final,
    log_pyfunc,
    run_backtest,
    tune_als,
    tune_knn,
)

T0 = pd.Timestamp("2021-01-01")
CUTOFF = pd.Timestamp("2021-07-01")
CLUSTER_1 = {"A", "B", "C", "D"}
CLUSTER_2 = {"W", "X", "Y", "Z"}


def _rows(rows: list, customer: str, items: list[str], day: float, qty: float = 1.0) -> None:
    for item in items:
        rows.append((customer, f"{customer}-{day}", T0 + pd.Timedelta(days=day), item, qty, 2.0))


def _frame(rows: list) -> pd.DataFrame:
    cols = ["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    return pd.DataFrame(rows, columns=cols)


def toy_log() -> pd.DataFrame:
    rows: list = []
    for n in range(10):
        _rows(rows, f"k{n}", ["A", "B", "C"], 5 + 15 * n)
        if n % 2 == 0:
            _rows(rows, f"k{n}", ["D"], 8 + 15 * n)
    for n in range(6):
        _rows(rows, f"m{n}", ["W", "X", "Y"], 7 + 20 * n)
        if n < 3:
            _rows(rows, f"m{n}", ["Z"], 9 + 20 * n)
    _rows(rows, "u", ["A", "B"], 150)
    _rows(rows, "v", ["W", "X"], 150)
    _rows(rows, "r", ["A", "B"], 120)
    _rows(rows, "r", ["D"], 121, qty=-1.0)  # returned, never bought in the log
    return _frame(rows)


TOY = toy_log()


def seen_items(tx: pd.DataFrame, customer: str) -> set[str]:
    rows = tx[(tx["customer_id"] == customer) & (tx["ts"] < CUTOFF)]
    return set(rows["item_id"])


def popularity_oracle(tx: pd.DataFrame) -> list[str]:
    """Items by distinct buyers (all rows are inside a 365-day window), ties by item id."""
    buys = tx[(tx["quantity"] > 0) & (tx["ts"] < CUTOFF)]
    n = buys.groupby("item_id")["customer_id"].nunique()
    return sorted(n.index, key=lambda i: (-n[i], i))


BACKENDS = {
    "als": lambda: ALSRecommender(
        factors=4,
        regularization=0.01,
        iterations=20,
        half_life_days=None,
        popularity_days=365,
        random_state=0,
        num_threads=1,
    ),
    "als_log": lambda: ALSRecommender(
        factors=4,
        regularization=0.01,
        iterations=20,
        weighting="log",
        half_life_days=None,
        popularity_days=365,
        random_state=0,
        num_threads=1,
    ),
    "hybrid": lambda: HybridRecommender(
        factors=4,
        regularization=0.01,
        iterations=20,
        content_weight=0.25,
        half_life_days=None,
        popularity_days=365,
        random_state=0,
        num_threads=1,
    ),
    "knn": lambda: ItemKNNRecommender(K=5, popularity_days=365, num_threads=1),
    "popularity": lambda: PopularityRecommender(popularity_days=365),
}
PERSONALISED = {"als", "als_log", "hybrid", "knn"}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request) -> tuple[str, Recommender]:
    return request.param, BACKENDS[request.param]().fit(TOY, CUTOFF)


# ---------------------------------------------------------------------------------------------
# The shared contract, run against every backend
# ---------------------------------------------------------------------------------------------


class TestRecommenderContract:
    def test_cluster_neighbour_comes_first(self, backend):
        _, model = backend
        assert model.recommend(["u"], k=4)["u"][0] == "C"

    def test_second_cluster_when_personalised(self, backend):
        name, model = backend
        # popularity is the same for everybody: v gets the most popular item v has not seen
        unseen = [i for i in popularity_oracle(TOY) if i not in seen_items(TOY, "v")]
        expected = "Y" if name in PERSONALISED else unseen[0]
        assert model.recommend(["v"], k=4)["v"][0] == expected

    def test_never_recommends_seen_or_returned_items(self, backend):
        _, model = backend
        customers = sorted(TOY["customer_id"].unique())
        recs = model.recommend(customers, k=4)
        for c in customers:
            assert len(recs[c]) == len(set(recs[c])) == 4, c
            assert not set(recs[c]) & seen_items(TOY, c), c
        assert "D" not in recs["r"]  # returned only: seen, so never offered

    def test_exclude_seen_false_may_offer_bought_items(self, backend):
        _, model = backend
        recs = model.recommend(["k1"], k=8, exclude_seen=False)["k1"]
        assert set(recs) == CLUSTER_1 | CLUSTER_2

    def test_unknown_customer_gets_popular_items(self, backend):
        _, model = backend
        frame = model.recommend_frame(["nobody", "u"], k=4)
        cold = frame[frame["customer_id"] == "nobody"]
        assert cold["item_id"].tolist() == popularity_oracle(TOY)[:4]
        assert (cold["source"] == "popular").all()
        assert cold["score"].isna().all()
        assert cold["rank"].tolist() == [1, 2, 3, 4]

    def test_every_customer_gets_k_items_until_the_catalogue_runs_out(self, backend):
        _, model = backend
        recs = model.recommend(["u", "v", "r", "k0", "m0", "nobody"], k=4)
        assert all(len(items) == 4 for items in recs.values())
        recs = model.recommend(["k0", "u", "nobody"], k=7)  # k0 has seen 4 of the 8 items
        assert [len(recs[c]) for c in ("k0", "u", "nobody")] == [4, 6, 7]

    def test_similar_items_stay_in_cluster(self, backend):
        _, model = backend
        assert set(model.similar_items("A", 3)) == CLUSTER_1 - {"A"}
        assert set(model.similar_items("W", 3)) == CLUSTER_2 - {"W"}
        assert "A" not in model.similar_items("A", 7)

    def test_similar_items_of_unknown_item_are_popular(self, backend):
        _, model = backend
        assert model.similar_items("nope", 3) == popularity_oracle(TOY)[:3]

    def test_save_load_round_trip(self, backend, tmp_path):
        _, model = backend
        model.save(tmp_path / "m")
        loaded = Recommender.load(tmp_path / "m")
        assert type(loaded) is type(model)
        assert loaded.get_params() == model.get_params()
        assert loaded.cutoff == model.cutoff
        customers = ["u", "v", "r", "k3", "m4", "nobody"]
        pd.testing.assert_frame_equal(
            loaded.recommend_frame(customers, k=6), model.recommend_frame(customers, k=6)
        )
        pd.testing.assert_frame_equal(
            loaded.similar_items_frame(["A", "Z", "nope"], 3),
            model.similar_items_frame(["A", "Z", "nope"], 3),
        )

    def test_load_checks_the_class(self, backend, tmp_path):
        name, model = backend
        model.save(tmp_path / "m")
        other = PopularityRecommender if name != "popularity" else ALSRecommender
        with pytest.raises(TypeError, match="holds a"):
            other.load(tmp_path / "m")

    def test_ignores_rows_at_or_after_the_cutoff(self, backend):
        name, model = backend
        later = TOY.copy()
        extra = _frame([("u", "late", CUTOFF, "C", 1.0, 2.0), ("new", "n", CUTOFF, "A", 1.0, 2.0)])
        refit = BACKENDS[name]().fit(pd.concat([later, extra], ignore_index=True), CUTOFF)
        assert refit.recommend(["u", "new"], k=4) == model.recommend(["u", "new"], k=4)

    def test_rejects_bad_k_and_unfitted_use(self, backend):
        name, model = backend
        with pytest.raises(ValueError, match="k must be"):
            model.recommend(["u"], k=0)
        with pytest.raises(RuntimeError, match="not fitted"):
            BACKENDS[name]().recommend(["u"])


# ---------------------------------------------------------------------------------------------
# Backend specifics
# ---------------------------------------------------------------------------------------------


def test_als_is_deterministic():
    a = BACKENDS["als"]().fit(TOY, CUTOFF)
    b = BACKENDS["als"]().fit(TOY, CUTOFF)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)


@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")
def test_knn_ranks_like_implicit():
    from implicit.nearest_neighbours import BM25Recommender

    model = BACKENDS["knn"]().fit(TOY, CUTOFF)
    ref = BM25Recommender(K=5, num_threads=1)
    ref.fit(model.counts, show_progress=False)
    for customer in ("u", "v", "k2"):
        row = model._customer_pos[customer]
        ids, scores = ref.recommend(row, model.counts[row], N=8, filter_already_liked_items=True)
        expected = [model.item_ids[i] for i, s in zip(ids, scores, strict=True) if s > 0]
        got = model.recommend_frame([customer], k=8)
        assert got.loc[got["source"] == "model", "item_id"].tolist() == expected


def test_popularity_counts_distinct_customers_in_the_window():
    rows: list = []
    _rows(rows, "a", ["OLD"], 10)
    _rows(rows, "b", ["OLD"], 11)
    _rows(rows, "c", ["OLD"], 12)
    _rows(rows, "a", ["NEW"], 170)
    _rows(rows, "a", ["NEW"], 171)  # same customer again: still one buyer
    _rows(rows, "b", ["NEW"], 172)
    _rows(rows, "c", ["MID"], 175)
    tx = _frame(rows)
    recent = PopularityRecommender(popularity_days=30).fit(tx, CUTOFF)
    assert recent.recommend(["x"], k=3)["x"] == ["NEW", "MID", "OLD"]
    whole = PopularityRecommender(popularity_days=365).fit(tx, CUTOFF)
    assert whole.recommend(["x"], k=3)["x"] == ["OLD", "NEW", "MID"]


def test_dead_catalogue_items_are_never_offered():
    rows: list = []
    for n in range(5):
        _rows(rows, f"old{n}", ["DEAD"], 5)  # the most bought item, but not sold for ~6 months
    _rows(rows, "a", ["LIVE1", "LIVE2"], 170)
    _rows(rows, "b", ["LIVE1"], 171)
    tx = _frame(rows)
    for model in (
        PopularityRecommender(popularity_days=365, active_days=60),
        ItemKNNRecommender(K=5, popularity_days=365, active_days=60),
        ALSRecommender(factors=2, iterations=5, popularity_days=365, active_days=60),
    ):
        model.fit(tx, CUTOFF)
        recs = model.recommend(["b", "old0", "nobody"], k=3)
        assert all("DEAD" not in items for items in recs.values()), type(model).__name__
        assert recs["nobody"] == ["LIVE1", "LIVE2"]  # only two live items exist
    assert PopularityRecommender(popularity_days=365).fit(tx, CUTOFF).recommend(["x"], 1) == {
        "x": ["DEAD"]
    }


def test_recency_decay_halves_the_weight_every_half_life():
    rows: list = []
    cutoff_minus = lambda days: (CUTOFF - T0).days - days  # noqa: E731
    _rows(rows, "a", ["P"], cutoff_minus(100))
    _rows(rows, "a", ["P"], cutoff_minus(200))
    _rows(rows, "a", ["Q"], cutoff_minus(50))
    _rows(rows, "a", ["R"], cutoff_minus(10), qty=-1.0)  # a return: seen, no weight
    data = build_interactions(_frame(rows), CUTOFF, half_life_days=100)
    counts = dict(zip(data.item_ids, data.counts.toarray()[0], strict=True))
    assert counts["P"] == pytest.approx(0.5 + 0.25)
    assert counts["Q"] == pytest.approx(2**-0.5)
    assert counts["R"] == 0
    assert data.seen.toarray()[0].tolist() == [1, 1, 1]
    flat = build_interactions(_frame(rows), CUTOFF, half_life_days=None)
    assert dict(zip(flat.item_ids, flat.counts.toarray()[0], strict=True))["P"] == 2


def test_an_order_counts_once_per_item_and_per_customer():
    """Two lines of one item in an order are one order of it, at the order's latest line;
    an order id two customers share is an order of each; popularity counts buyers."""
    day = (CUTOFF - T0).days
    rows = [
        ("a", "o1", T0 + pd.Timedelta(days=day - 10), "P", 1.0, 2.0),
        ("a", "o1", T0 + pd.Timedelta(days=day - 5), "P", 2.0, 2.0),
        ("b", "o1", T0 + pd.Timedelta(days=day - 200), "P", 1.0, 2.0),
        ("b", "o2", T0 + pd.Timedelta(days=day - 200), "Q", 1.0, 2.0),
    ]
    data = build_interactions(_frame(rows), CUTOFF, half_life_days=5, popularity_days=30)
    assert data.counts.toarray().ravel().tolist() == pytest.approx([0.5, 0, 2**-40, 2**-40])
    assert data.popularity.tolist() == [1.0, 0.0]  # only a bought P in the last 30 days
    assert data.pop_order.tolist() == [0, 1]


def test_recency_decay_follows_the_customers_recent_taste():
    """``s`` bought cluster 1 long ago and cluster 2 recently: decay puts cluster 2 first."""
    rows: list = []
    for n in range(6):
        _rows(rows, f"k{n}", ["A", "B", "C"], 5 + 10 * n)
        _rows(rows, f"m{n}", ["W", "X", "Y"], 6 + 10 * n)
    _rows(rows, "s", ["A", "B"], -300)
    _rows(rows, "s", ["W"], 175)
    tx = _frame(rows)
    for klass, kwargs in (
        (ItemKNNRecommender, {"K": 5}),
        (ALSRecommender, {"factors": 4, "iterations": 20, "weighting": "log", "random_state": 0}),
    ):
        decayed = klass(half_life_days=30, popularity_days=365, **kwargs).fit(tx, CUTOFF)
        flat = klass(half_life_days=None, popularity_days=365, **kwargs).fit(tx, CUTOFF)
        top_decayed = decayed.recommend(["s"], k=1)["s"][0]
        top_flat = flat.recommend(["s"], k=1)["s"][0]
        assert top_decayed in {"X", "Y"}, klass.__name__
        assert top_flat == "C", klass.__name__


def test_popularity_blend_is_a_scoring_parameter():
    model = BACKENDS["als"]().fit(TOY, CUTOFF)
    pure = model.recommend_frame(["u"], k=4)
    model.set_scoring_params(popularity_blend=100.0)  # popularity dominates
    top = model.recommend(["u"], k=3)["u"]
    assert top[0] == "C" and set(top[1:]) == {"W", "X"}  # next most bought (7 buyers each)
    model.set_scoring_params(popularity_blend=0.0)
    pd.testing.assert_frame_equal(model.recommend_frame(["u"], k=4), pure)
    with pytest.raises(ValueError, match="not scoring parameters"):
        model.set_scoring_params(factors=3)


def test_als_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        ALSRecommender(weighting="tfidf")


# ---------------------------------------------------------------------------------------------
# Targets and evaluation
# ---------------------------------------------------------------------------------------------


def _target_log() -> pd.DataFrame:
    rows: list = []
    _rows(rows, "a", ["X", "Y"], 100)  # before the cutoff
    _rows(rows, "a", ["X", "Z"], 185)  # X repeats (not a target), Z is new
    _rows(rows, "a", ["W"], (CUTOFF - T0).days + 30)  # exactly at cutoff + 30: outside H=30
    _rows(rows, "b", ["Y"], 100)
    _rows(rows, "b", ["Q"], 183, qty=-1.0)  # a return in the window is not a purchase
    _rows(rows, "c", ["Y", "V"], 190)  # c is new: targets, but not seen before the cutoff
    _rows(rows, "d", ["Y"], 10)  # d is seen long before, inactive in the last 100 days
    _rows(rows, "d", ["U"], 200)
    return _frame(rows)


def test_cross_sell_targets_known_answer():
    tx = _target_log()
    assert cross_sell_targets(tx, CUTOFF, 30) == {
        "a": {"Z"},
        "c": {"V", "Y"},
        "d": {"U"},
    }
    seen = customers_before(tx, CUTOFF)
    assert seen == ["a", "b", "d"]
    assert customers_before(tx, CUTOFF, active_days=100) == ["a", "b"]
    assert cross_sell_targets(tx, CUTOFF, 30, customers=seen) == {"a": {"Z"}, "d": {"U"}}
    assert cross_sell_targets(tx, CUTOFF, 31, customers=["a"]) == {"a": {"Z", "W"}}


class _Fixed:
    def __init__(self, recs: dict[str, list[str]]):
        self.recs = recs

    def recommend(self, customers, k=10, exclude_seen=True):
        return {c: self.recs[c][:k] for c in customers}


def test_evaluate_known_answer():
    targets = {"a": {"x", "y"}, "b": {"z"}, "c": set()}
    model = _Fixed({"a": ["q", "x"], "b": ["q", "r"], "c": ["x", "y"]})
    out = evaluate(model, targets, k=2)
    assert out["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert out["ndcg@2"] == pytest.approx(ndcg_a / 2)
    assert out["hit_rate@2"] == pytest.approx(0.5)
    assert out["n_customers"] == 2
    only_a = evaluate(model, targets, k=2, customers=["a", "zz"])
    assert only_a["recall@2"] == pytest.approx(0.5)
    assert only_a["n_customers"] == 1
    with pytest.raises(ValueError, match="no customer"):
        evaluate(model, targets, customers=["c"])


# ---------------------------------------------------------------------------------------------
# Tuning, backtest, final fit
# ---------------------------------------------------------------------------------------------

SMALL_ALS = {
    "factors": (2, 4),
    "iterations": (5,),
    "weighting": ("log",),
    "half_life_days": (None,),
    "popularity_blend": (0.0, 1.0),
}


def test_tune_als_searches_the_grid_and_cannot_see_past_the_label_window(synthetic_tx):
    val = pd.Timestamp("2021-03-01")
    best, table = tune_als(synthetic_tx, val, 60, SMALL_ALS, base={"num_threads": 1})
    assert len(table) == 4
    assert (table["model"] == "als").all()
    assert table["recall@10"].is_monotonic_decreasing
    assert best["factors"] == table.loc[0, "factors"]
    assert best["popularity_blend"] == table.loc[0, "popularity_blend"]
    assert best["num_threads"] == 1
    # rows at or after val + H cannot change anything
    cut = synthetic_tx[synthetic_tx["ts"] < val + pd.Timedelta(days=60)]
    _, again = tune_als(cut, val, 60, SMALL_ALS, base={"num_threads": 1})
    cols = ["factors", "popularity_blend", "recall@10", "ndcg@10", "hit_rate@10"]
    pd.testing.assert_frame_equal(table[cols], again[cols])


def test_tune_knn_accepts_a_list_of_points(synthetic_tx):
    best, table = tune_knn(synthetic_tx, pd.Timestamp("2021-03-01"), 60, [{"K": 3}, {"K": 10}])
    assert sorted(table["K"]) == [3, 10]
    assert best["K"] == table.loc[0, "K"]


def test_sample_customers_is_a_stable_subset_of_the_asked_size():
    from training.crosssell.evaluation import sample_customers

    targets = {f"c{i}": {f"i{i % 7}"} for i in range(50)}
    some = sample_customers(targets, 10)
    assert len(some) == 10 and all(targets[c] == v for c, v in some.items())
    # the same customers whatever the order of the dict or the other customers in it
    shuffled = dict(reversed(list(targets.items())))
    assert sample_customers(shuffled, 10) == some
    assert set(sample_customers(targets, 20)) >= set(some)
    assert sample_customers(targets, None) == targets == sample_customers(targets, 50)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="validation_users"):
            sample_customers(targets, bad)


def test_sample_rows_keeps_whole_customers_stably(synthetic_tx):
    from training.crosssell.evaluation import sample_rows

    ids = synthetic_tx["customer_id"].unique()
    some = sample_rows(synthetic_tx, 5)
    assert some["customer_id"].nunique() == 5
    # every row of each sampled customer, and nothing else
    kept = synthetic_tx[synthetic_tx["customer_id"].isin(some["customer_id"].unique())]
    pd.testing.assert_frame_equal(some, kept)
    # the same customers whatever the row order
    shuffled = sample_rows(synthetic_tx.iloc[::-1], 5)
    assert set(shuffled["customer_id"]) == set(some["customer_id"])
    assert sample_rows(synthetic_tx, None) is synthetic_tx
    assert sample_rows(synthetic_tx, len(ids)) is synthetic_tx
    with pytest.raises(ValueError, match="tuning_customers"):
        sample_rows(synthetic_tx, 0)


def test_tuning_fits_on_at_most_the_customers_asked_for(synthetic_tx):
    val = pd.Timestamp("2021-03-01")
    _, everyone = tune_knn(synthetic_tx, val, 60, [{"K": 3}])
    _, few = tune_knn(synthetic_tx, val, 60, [{"K": 3}], tuning_customers=40)
    # only the sampled customers' targets are scored: fewer than the whole log has
    assert 0 < few.loc[0, "n_customers"] < everyone.loc[0, "n_customers"]


def test_tuning_scores_at_most_the_validation_users_asked_for(synthetic_tx):
    val = pd.Timestamp("2021-03-01")
    _, everyone = tune_knn(synthetic_tx, val, 60, [{"K": 3}])
    _, sampled = tune_knn(synthetic_tx, val, 60, [{"K": 3}], validation_users=2)
    assert everyone.loc[0, "n_customers"] > 2 and sampled.loc[0, "n_customers"] == 2


def test_run_backtest_small_grid(synthetic_tx):
    result = run_backtest(synthetic_tx, pd.Timestamp("2021-04-01"), 60, grid="small")
    assert isinstance(result, CrossSellResult)
    assert result.val_cutoff == pd.Timestamp("2021-01-31")
    bt = result.backtest
    assert set(zip(bt["model"], bt["population"], strict=True)) == {
        (m, p) for m in ("hybrid", "als", "knn", "popularity") for p in ("all", "active_365d")
    }
    assert {"recall@10", "ndcg@10", "hit_rate@10", "n_customers"} <= set(bt.columns)
    assert np.allclose(bt.loc[bt["model"] == "knn", "recall_vs_knn"], 1.0)
    long = result.table
    assert list(long.columns) == ["task", "model", "population", "metric", "value"]
    assert (long["task"] == "cross_sell").all()
    assert (
        result.params["popularity_days"] == result.baseline_params["popularity"]["popularity_days"]
    )
    assert result.hybrid.cutoff == pd.Timestamp("2021-04-01")
    assert set(result.tuning["model"]) == {"hybrid", "knn", "popularity"}
    assert isinstance(result.meets_target(), bool)
    final = fit_final(synthetic_tx, None, result.params)
    assert final.cutoff == synthetic_tx["ts"].max().normalize() + pd.Timedelta(days=1)
    assert final.get_params() == result.hybrid.get_params()


# ---------------------------------------------------------------------------------------------
# The hybrid: a new arrival reached through its description
# ---------------------------------------------------------------------------------------------


def _new_arrival_log() -> tuple[pd.DataFrame, dict[str, str]]:
    """Forty customers buy mugs (M1–M3) or bags (B1–B3); ``q`` bought two rose mugs. A rose
    mug ``NEW`` arrived a week before the cutoff and has one buyer; two unrelated items have
    been bought by many. Only the description ties ``NEW`` to what ``q`` buys."""
    rows: list = []
    for n in range(20):
        _rows(rows, f"a{n}", ["M1", "M2", "M3", "P1"], 5 + 5 * n)
        _rows(rows, f"b{n}", ["B1", "B2", "B3", "P2"], 6 + 5 * n)
    _rows(rows, "q", ["M1", "M2"], 150)
    _rows(rows, "z", ["NEW"], 175)
    text = {
        "M1": "RED ROSE MUG",
        "M2": "WHITE ROSE MUG",
        "M3": "BLUE ROSE MUG",
        "NEW": "PINK ROSE MUG",
        "B1": "JUMBO BAG RED",
        "B2": "JUMBO BAG WHITE",
        "B3": "JUMBO BAG BLUE",
        "P1": "PAPER NAPKINS",
        "P2": "GARDEN TWINE",
    }
    return _frame(rows), text


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_hybrid_reaches_a_new_arrival_through_its_words_only_with_content(weight):
    tx, text = _new_arrival_log()
    model = BACKENDS["hybrid"]().set_scoring_params(content_weight=weight)
    model.fit(tx, CUTOFF, text)
    ranked = model.recommend(["q"], k=5)["q"]
    # ALS alone ranks the well-bought items above an item with one unrelated buyer; with the
    # content term the new rose mug follows the other rose mug q has not bought
    assert ranked[:2] == ["M3", "NEW"] if weight else "NEW" not in ranked
    assert model.als_alone().content_weight == 0.0 and model.content_weight == weight


def test_hybrid_content_survives_save_and_load(tmp_path):
    tx, text = _new_arrival_log()
    model = BACKENDS["hybrid"]().fit(tx, CUTOFF, text)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, HybridRecommender)
    assert (loaded.content != model.content).nnz == 0
    assert loaded.recommend(["q", "a1"], k=4) == model.recommend(["q", "a1"], k=4)


# ---------------------------------------------------------------------------------------------
# MLflow pyfunc
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds)."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("xsell", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_pyfunc_round_trip_through_the_registry(mlflow_store):
    model = BACKENDS["als"]().fit(TOY, CUTOFF)
    names = pd.DataFrame({"item_id": ["A", "C", "Y"], "name": ["Apple", "Cherry", "Yam"]})
    with mlflow.start_run():
        info = log_pyfunc(model, item_names=names, registered_model_name="cross_sell")
    assert info.registered_model_version == 1
    assert {p.name for p in info.signature.params.params} == {"mode", "k", "exclude_seen"}
    loaded = mlflow.pyfunc.load_model("models:/cross_sell/1")

    customers = ["u", "v", "r", "k1", "m2", "nobody"]
    out = loaded.predict(pd.DataFrame({"customer_id": customers}), params={"k": 4})
    assert list(out.columns) == ["customer_id", "rank", "item_id", "item_name", "score", "source"]
    for c in customers:
        items = out.loc[out["customer_id"] == c, "item_id"].tolist()
        assert len(items) == 4, c
        assert not set(items) & seen_items(TOY, c), c
    assert out.loc[out["customer_id"] == "u", "item_id"].iloc[0] == "C"
    assert out.loc[out["item_id"] == "C", "item_name"].eq("Cherry").all()
    pd.testing.assert_frame_equal(
        out.drop(columns="item_name"), model.recommend_frame(customers, k=4)
    )

    per_row = loaded.predict(pd.DataFrame({"customer_id": ["u", "v"], "k": [1, 3]}))
    assert per_row.groupby("customer_id").size().to_dict() == {"u": 1, "v": 3}

    similar = loaded.predict(pd.DataFrame({"item_id": ["A"]}), params={"mode": "similar", "k": 3})
    assert list(similar.columns)[0] == "query_item_id"
    assert set(similar["item_id"]) == CLUSTER_1 - {"A"}

    with pytest.raises(Exception, match="customer_id"):
        loaded.predict(pd.DataFrame({"item_id": ["A"]}))


def test_log_pyfunc_opens_a_run_when_none_is_active(mlflow_store):
    model = BACKENDS["popularity"]().fit(TOY, CUTOFF)
    assert mlflow.active_run() is None
    info = log_pyfunc(model, name="pop")
    assert mlflow.active_run() is None
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.predict(pd.DataFrame({"customer_id": ["nobody"]}))
    assert out["item_id"].tolist() == popularity_oracle(TOY)[:8]
    assert out["item_name"].isna().all()


def test_pyfunc_class_works_without_mlflow_loading(tmp_path):
    model = BACKENDS["knn"]().fit(TOY, CUTOFF)
    model.save(tmp_path / "rec")
    (tmp_path / "index.json").write_text('{"item_id": [], "name": null}')

    class Ctx:
        artifacts = {
            "recommender": str(tmp_path / "rec"),
            "item_index": str(tmp_path / "index.json"),
        }

    py = CrossSellPyfunc()
    py.load_context(Ctx())
    out = py.predict(Ctx(), pd.DataFrame({"customer_id": ["u"]}), params={"k": 2})
    assert out["item_id"].tolist() == model.recommend(["u"], k=2)["u"]
    with pytest.raises(ValueError, match="mode"):
        py.predict(Ctx(), pd.DataFrame({"customer_id": ["u"]}), params={"mode": "nope"})
