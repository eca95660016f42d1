"""Cross-sell: which items a customer has not bought yet is likely to buy, and "bought together".

Three recommenders share one interface (:class:`Recommender`, in the style of implicit's
``RecommenderBase`` but keyed by the contract's string ids):

* :class:`ALSRecommender` — implicit's ALS (Hu, Koren & Volinsky 2008) on the customer × item
  matrix of purchase orders, with recency decay (half-life) and BM25 or log confidence
  weighting;
* :class:`ItemKNNRecommender` — implicit's item-item BM25 nearest neighbours (baseline);
* :class:`PopularityRecommender` — most-bought items by distinct customers in a recent window
  (baseline).

All of them see only rows strictly before the cutoff; purchases (quantity > 0) are the
positive signal, returned items count as "seen" (never recommended with ``exclude_seen``) but
not as positive signal. Every model obeys the same catalogue rule (``active_days``: only items
sold in that many days before the cutoff are recommended) and the same fallback (popular unseen
items fill the list, so every customer — known or not — gets ``k`` items).

Evaluation (:func:`cross_sell_targets`, :func:`evaluate`, :func:`backtest_table`) follows the
project's backtest protocol: targets are items bought in ``[cutoff, cutoff + H)`` that the
customer never bought before the cutoff; hyper-parameters are chosen on a validation split
whose label window ends at the backtest cutoff (:func:`tune_als`, :func:`tune_knn`,
:func:`tune_popularity`), never on the backtest window.

:class:`CrossSellPyfunc` / :func:`log_pyfunc` wrap a fitted recommender as an MLflow pyfunc.
Loading it needs numpy, pandas, scipy and this package, not implicit.
"""

from __future__ import annotations

import inspect
import itertools
import json
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from threadpoolctl import threadpool_limits

import mlflow
from training.metrics import hit_rate_at_k, ndcg_at_k, recall_at_k

__all__ = [
    "DEFAULT_ALS_GRID",
    "DEFAULT_KNN_GRID",
    "DEFAULT_POPULARITY_GRID",
    "ALSRecommender",
    "CrossSellPyfunc",
    "CrossSellResult",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "backtest_table",
    "cross_sell_targets",
    "customers_before",
    "evaluate",
    "fit_final",
    "log_pyfunc",
    "run_backtest",
    "tune_als",
    "tune_knn",
    "tune_popularity",
]

_DAY = pd.Timedelta(days=1)
_FORMAT_VERSION = 1
_CHUNK = 1024  # customers scored per dense block (1024 × 4k items × 8 B = 32 MB)


# ---------------------------------------------------------------------------------------------
# Interactions before a cutoff
# ---------------------------------------------------------------------------------------------


@dataclass
class _Interactions:
    """Everything a recommender learns from: the log strictly before ``cutoff``."""

    cutoff: pd.Timestamp
    customer_ids: np.ndarray  # sorted unique customer ids ('<U')
    item_ids: np.ndarray  # sorted unique item ids ('<U')
    counts: sp.csr_matrix  # customer × item: (recency-weighted) number of orders buying it
    seen: sp.csr_matrix  # customer × item: 1 if bought or returned
    popularity: np.ndarray  # distinct customers buying the item in the popularity window
    pop_order: np.ndarray  # item positions, most popular first (recent, then all-time, then id)
    active: np.ndarray  # bool per item: sold in the catalogue window (dead items are False)


def _ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(list(uniques), dtype=str)


def _interactions(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    half_life_days: float | None = None,
    popularity_days: int = 90,
    active_days: int | None = None,
) -> _Interactions:
    t = pd.Timestamp(cutoff)
    ts = transactions["ts"]
    keep = (ts < t) & transactions["item_id"].notna()
    tx = transactions.loc[keep, ["customer_id", "order_id", "ts", "item_id", "quantity"]]
    if tx.empty:
        raise ValueError(f"no transactions with an item before the cutoff {t}")
    c, customer_ids = _ids(tx["customer_id"])
    i, item_ids = _ids(tx["item_id"])
    shape = (len(customer_ids), len(item_ids))
    seen = sp.csr_matrix((np.ones(len(c), np.float32), (c, i)), shape=shape)
    seen.sum_duplicates()
    seen.data[:] = 1.0

    buy = tx["quantity"].to_numpy() > 0
    orders = pd.DataFrame(
        {
            "c": c[buy],
            "i": i[buy],
            "o": tx["order_id"].to_numpy()[buy],
            "ts": tx["ts"].to_numpy()[buy],
        }
    )
    orders = orders.groupby(["c", "i", "o"], sort=False, as_index=False)["ts"].max()
    age = ((t - orders["ts"]) / _DAY).to_numpy()
    w = np.power(0.5, age / float(half_life_days)) if half_life_days else np.ones(len(orders))
    counts = sp.csr_matrix(
        (w.astype(np.float32), (orders["c"].to_numpy(), orders["i"].to_numpy())), shape=shape
    )
    counts.sum_duplicates()

    pairs = orders.groupby(["c", "i"], sort=False, as_index=False)["ts"].max()
    pair_age = ((t - pairs["ts"]) / _DAY).to_numpy()
    n_items = len(item_ids)
    pi = pairs["i"].to_numpy()
    ever = np.bincount(pi, minlength=n_items)
    popularity = np.bincount(pi[pair_age <= popularity_days], minlength=n_items).astype(float)
    pop_order = np.lexsort((np.arange(n_items), -ever, -popularity))
    if active_days is None:
        active = ever > 0
    else:
        active = np.bincount(pi[pair_age <= active_days], minlength=n_items) > 0
    return _Interactions(t, customer_ids, item_ids, counts, seen, popularity, pop_order, active)


# ---------------------------------------------------------------------------------------------
# Recommenders
# ---------------------------------------------------------------------------------------------


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape),
    }


def _csr_from(prefix: str, arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=tuple(int(x) for x in arrays[f"{prefix}_shape"]),
    )


class Recommender(ABC):
    """Common interface of the cross-sell models (string customer and item ids).

    Subclasses implement ``_fit`` (learn from :class:`_Interactions`), ``_score`` (dense
    scores of some customers × the candidate items; ``-inf``/NaN = no evidence) and
    ``_similar`` (scores of the candidates against one item), plus ``_state``/``_restore`` for
    persistence.
    The base class owns the id maps, seen-item filtering, the catalogue rule, deterministic
    tie-breaking (more popular first) and the popularity fallback.
    """

    kind: ClassVar[str] = "base"
    #: parameters that only change scoring, not fitting (tuning varies them without refitting)
    scoring_params: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Recommender]]] = {}

    def __init__(
        self,
        *,
        half_life_days: float | None = None,
        popularity_days: int = 90,
        active_days: int | None = None,
    ):
        self.half_life_days = half_life_days
        self.popularity_days = popularity_days
        self.active_days = active_days
        self.cutoff: pd.Timestamp | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Recommender._registry[cls.__name__] = cls

    # -- parameters --------------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable), as scikit-learn's ``get_params``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self",)]
        return {n: getattr(self, n) for n in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, transactions: pd.DataFrame, cutoff: pd.Timestamp | str) -> Recommender:
        """Learn from the rows of ``transactions`` strictly before ``cutoff``."""
        data = _interactions(
            transactions, cutoff, self.half_life_days, self.popularity_days, self.active_days
        )
        return self._fit_interactions(data)

    def _fit_interactions(self, data: _Interactions) -> Recommender:
        self.cutoff = data.cutoff
        self.customer_ids = data.customer_ids
        self.item_ids = data.item_ids
        self.counts = data.counts
        self.seen = data.seen
        self.popularity = data.popularity
        self.pop_order = data.pop_order
        self.active = data.active
        self._index()
        self._fit(data)
        self._prepare_scoring()
        return self

    def _index(self) -> None:
        self._customer_pos = {c: n for n, c in enumerate(self.customer_ids.tolist())}
        self._item_pos = {c: n for n, c in enumerate(self.item_ids.tolist())}
        # candidates: the items the catalogue rule allows, most popular first
        self._cand = self.pop_order[self.active[self.pop_order]]
        self._cand_pos = np.full(len(self.item_ids), -1, dtype=np.int64)
        self._cand_pos[self._cand] = np.arange(len(self._cand))

    def set_scoring_params(self, **params: Any) -> Recommender:
        """Change parameters listed in ``scoring_params`` of a fitted model (no refit needed)."""
        unknown = set(params) - set(self.scoring_params)
        if unknown:
            raise ValueError(
                f"{sorted(unknown)} are not scoring parameters of {type(self).__name__}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        if self.cutoff is not None:
            self._prepare_scoring()
        return self

    def _prepare_scoring(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Recompute whatever scoring caches depend on ``scoring_params`` (after fit/load)."""

    def _check_fitted(self) -> None:
        if self.cutoff is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    @abstractmethod
    def _fit(self, data: _Interactions) -> None: ...

    @abstractmethod
    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of customers ``rows`` × ``items`` (positions); -inf or NaN = no evidence."""

    @abstractmethod
    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        """Similarity of ``item`` to each of ``items`` (positions); -inf or NaN = none."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    # -- ranking -----------------------------------------------------------------------------

    def _top(self, scores: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row of ``scores`` (candidates × columns in popularity order, already masked):
        item positions and scores of the top-k finite entries, ties broken by popularity."""
        n_rows, n_cols = scores.shape
        if n_cols == 0:
            return [(np.zeros(0, np.int64), np.zeros(0))] * n_rows
        s = np.where(np.isfinite(scores), scores, -np.inf)
        kk = min(k, n_cols)
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(s, part, axis=1).min(axis=1)
        out = []
        for r in range(n_rows):
            row = s[r]
            if np.isfinite(kth[r]):
                cand = np.flatnonzero(row >= kth[r])
            else:
                cand = np.flatnonzero(np.isfinite(row))
            best = cand[np.argsort(-row[cand], kind="stable")][:k]
            out.append((self._cand[best], row[best]))
        return out

    def _fill(self, chosen: np.ndarray, k: int, excluded: set[int]) -> list[int]:
        """Most popular candidate items not in ``chosen`` or ``excluded``, up to ``k`` in all."""
        need = k - len(chosen)
        if need <= 0:
            return []
        skip = excluded | set(chosen.tolist())
        extra: list[int] = []
        for item in self._cand.tolist():
            if item not in skip:
                extra.append(item)
                if len(extra) == need:
                    break
        return extra

    def _recommend_positions(
        self, customer_ids: Sequence[str], k: int, exclude_seen: bool
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per customer: item positions, scores (NaN for fallback) and how many are the model's."""
        self._check_fitted()
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        rows = np.array([self._customer_pos.get(str(c), -1) for c in customer_ids], np.int64)
        result: list[tuple[np.ndarray, np.ndarray, int] | None] = [None] * len(rows)
        known = np.flatnonzero(rows >= 0)
        for start in range(0, len(known), _CHUNK):
            block = known[start : start + _CHUNK]
            r = rows[block]
            scores = np.array(self._score(r, self._cand), dtype=np.float64)
            seen_rows = self.seen[r]
            if exclude_seen:
                coo = seen_rows.tocoo()
                cols = self._cand_pos[coo.col]
                keep = cols >= 0
                scores[coo.row[keep], cols[keep]] = -np.inf
            for j, (items, vals) in enumerate(self._top(scores, k)):
                excluded = (
                    set(seen_rows.indices[seen_rows.indptr[j] : seen_rows.indptr[j + 1]].tolist())
                    if exclude_seen
                    else set()
                )
                extra = self._fill(items, k, excluded)
                result[block[j]] = (
                    np.concatenate([items, np.asarray(extra, np.int64)]),
                    np.concatenate([vals, np.full(len(extra), np.nan)]),
                    len(items),
                )
        if len(known) < len(rows):
            top = self._cand[:k]
            cold = (top, np.full(len(top), np.nan), 0)
            for n in np.flatnonzero(rows < 0):
                result[n] = cold
        return result  # type: ignore[return-value]

    def recommend(
        self, customer_ids: Iterable[str], k: int = 10, exclude_seen: bool = True
    ) -> dict[str, list[str]]:
        """Top-``k`` item ids per customer; unknown customers get the most popular items.

        With ``exclude_seen`` no customer is offered an item they bought or returned before
        the cutoff. Only items sold within ``active_days`` of the cutoff are offered.
        """
        ids = [str(c) for c in customer_ids]
        positions = self._recommend_positions(ids, k, exclude_seen)
        return {c: self.item_ids[p].tolist() for c, (p, _, _) in zip(ids, positions, strict=True)}

    def recommend_frame(
        self, customer_ids: Iterable[str], k: int = 10, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """:meth:`recommend` as a frame: customer_id, rank (1..k), item_id, score, source.

        ``source`` is ``"model"`` for the model's own picks and ``"popular"`` for the
        popularity fallback (whose ``score`` is NaN).
        """
        ids = [str(c) for c in customer_ids]
        positions = self._recommend_positions(ids, k, exclude_seen)
        return _frame("customer_id", ids, positions, self.item_ids)

    def similar_items(self, item_id: str, k: int = 10) -> list[str]:
        """Items "bought together" with ``item_id`` (most similar first, itself excluded)."""
        return self.similar_items_frame([item_id], k)["item_id"].tolist()

    def similar_items_frame(self, item_ids: Iterable[str], k: int = 10) -> pd.DataFrame:
        """:meth:`similar_items` for many items: query_item_id, rank, item_id, score, source.

        An unknown item gets the most popular items (``source="popular"``, score NaN).
        """
        ids = [str(i) for i in item_ids]
        return _frame("query_item_id", ids, self._similar_positions(ids, k), self.item_ids)

    def _similar_positions(
        self, ids: Sequence[str], k: int
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        self._check_fitted()
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        positions = []
        for item_id in ids:
            pos = self._item_pos.get(item_id)
            if pos is None:
                top = self._cand[:k]
                positions.append((top, np.full(len(top), np.nan), 0))
                continue
            scores = np.array(self._similar(pos, self._cand), dtype=np.float64)
            if self._cand_pos[pos] >= 0:
                scores[self._cand_pos[pos]] = -np.inf
            items, vals = self._top(scores[None, :], k)[0]
            extra = self._fill(items, k, {pos})
            positions.append(
                (
                    np.concatenate([items, np.asarray(extra, np.int64)]),
                    np.concatenate([vals, np.full(len(extra), np.nan)]),
                    len(items),
                )
            )
        return positions

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` (JSON metadata + npz arrays, no pickle)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self.get_params(),
            "cutoff": self.cutoff.isoformat(),
            "n_customers": len(self.customer_ids),
            "n_items": len(self.item_ids),
        }
        (path / "recommender.json").write_text(json.dumps(meta, indent=2))
        np.savez(
            path / "index.npz",
            customer_ids=self.customer_ids,
            item_ids=self.item_ids,
            popularity=self.popularity,
            pop_order=self.pop_order,
            active=self.active,
            **_csr_arrays("counts", self.counts),
            **_csr_arrays("seen", self.seen),
        )
        np.savez(path / "model.npz", **self._state())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model written by :meth:`save` (any backend when called on ``Recommender``)."""
        path = Path(path)
        meta = json.loads((path / "recommender.json").read_text())
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {meta.get('format_version')}")
        klass = Recommender._registry.get(meta["class"])
        if klass is None or not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        obj = klass(**meta["params"])
        obj.cutoff = pd.Timestamp(meta["cutoff"])
        with np.load(path / "index.npz", allow_pickle=False) as z:
            obj.customer_ids = z["customer_ids"]
            obj.item_ids = z["item_ids"]
            obj.popularity = z["popularity"]
            obj.pop_order = z["pop_order"]
            obj.active = z["active"]
            obj.counts = _csr_from("counts", z)
            obj.seen = _csr_from("seen", z)
        with np.load(path / "model.npz", allow_pickle=False) as z:
            obj._restore({k: z[k] for k in z.files})
        obj._index()
        obj._prepare_scoring()
        return obj


def _frame(
    key: str,
    ids: list[str],
    positions: list[tuple[np.ndarray, np.ndarray, int]],
    item_ids: np.ndarray,
) -> pd.DataFrame:
    lengths = [len(p) for p, _, _ in positions]
    if sum(lengths) == 0:
        return pd.DataFrame(
            {
                key: pd.Series(dtype=str),
                "rank": pd.Series(dtype=np.int64),
                "item_id": pd.Series(dtype=str),
                "score": pd.Series(dtype=float),
                "source": pd.Series(dtype=str),
            }
        )
    items = np.concatenate([p for p, _, _ in positions])
    return pd.DataFrame(
        {
            key: np.repeat(np.asarray(ids, dtype=object), lengths),
            "rank": np.concatenate([np.arange(1, n + 1) for n in lengths]).astype(np.int64),
            "item_id": item_ids[items].astype(object),
            "score": np.concatenate([s for _, s, _ in positions]),
            "source": np.concatenate(
                [
                    np.where(np.arange(len(p)) < m, "model", "popular").astype(object)
                    for p, _, m in positions
                ]
            ),
        }
    )


class PopularityRecommender(Recommender):
    """Most-bought items (distinct customers) in the ``popularity_days`` before the cutoff.

    ``similar_items`` returns the items most often bought by the same customers.
    """

    kind = "popularity"

    def __init__(
        self,
        *,
        popularity_days: int = 90,
        active_days: int | None = None,
    ):
        super().__init__(popularity_days=popularity_days, active_days=active_days)

    def _fit(self, data: _Interactions) -> None:
        pass

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity[items], (len(rows), len(items)))

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        bought = (self.counts > 0).astype(np.float32).tocsc()
        co = np.asarray((bought[:, [item]].T @ bought[:, items]).todense()).ravel()
        return np.where(co > 0, co, -np.inf)

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        pass


class ItemKNNRecommender(Recommender):
    """implicit's item-item BM25 nearest neighbours (``K`` neighbours per item).

    Scores a customer as implicit's ``ItemItemRecommender.recommend`` does: the customer's
    (recency-weighted) order counts times the item-item similarity. Items with no similarity
    to anything the customer bought have no evidence and are filled by popularity.
    """

    kind = "knn"

    def __init__(
        self,
        K: int = 20,
        K1: float = 1.2,
        B: float = 0.75,
        *,
        half_life_days: float | None = None,
        popularity_days: int = 90,
        active_days: int | None = None,
        num_threads: int = 0,
    ):
        super().__init__(
            half_life_days=half_life_days, popularity_days=popularity_days, active_days=active_days
        )
        self.K = K
        self.K1 = K1
        self.B = B
        self.num_threads = num_threads

    def _fit(self, data: _Interactions) -> None:
        from implicit.nearest_neighbours import BM25Recommender

        model = BM25Recommender(K=self.K, K1=self.K1, B=self.B, num_threads=self.num_threads)
        with warnings.catch_warnings():  # implicit converts its own BM25 coo matrix to csr
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(data.counts, show_progress=False)
        self.similarity = model.similarity.tocsr().astype(np.float64)

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        s = np.asarray((self.counts[rows] @ self._similarity_cols(items)).todense())
        s[s <= 0] = -np.inf
        return s

    def _similarity_cols(self, items: np.ndarray) -> sp.csr_matrix:
        if getattr(self, "_cols_key", None) is not items:
            self._cols = self.similarity.tocsc()[:, items].tocsr()
            self._cols_key = items
        return self._cols

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        s = np.asarray(self.similarity[item].todense()).ravel()[items]
        s[s <= 0] = -np.inf
        return s

    def _state(self) -> dict[str, np.ndarray]:
        return _csr_arrays("similarity", self.similarity)

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.similarity = _csr_from("similarity", arrays)


def _bm25(x: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25 weight of a customer × item matrix (idf per item, length norm per customer).

    implicit's ``bm25_weight`` with the idf floored at a small positive value, so an item
    nearly everybody bought keeps a (tiny) positive confidence instead of a negative one.
    """
    from implicit.nearest_neighbours import bm25_weight

    w = bm25_weight(x, K1=k1, B=b).tocsr()
    w.data = np.maximum(w.data, 1e-3).astype(np.float32)
    return w


class ALSRecommender(Recommender):
    """implicit ALS on customer × item confidences.

    Confidence: the number of orders buying the item, each weighted by ``0.5 ** (age /
    half_life_days)``, then ``weighting`` — ``"bm25"`` (BM25 with ``bm25_k1``/``bm25_b``:
    damps repeat counts and down-weights items everybody buys) or ``"log"`` (``log1p``) — and
    scaled by ``alpha``. ``popularity_blend`` adds ``blend × log1p(recent buyers) /
    log1p(max)`` to the scores (0 = pure ALS).
    """

    kind = "als"
    scoring_params = ("popularity_blend",)

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 10,
        alpha: float = 1.0,
        weighting: str = "bm25",
        *,
        half_life_days: float | None = 90.0,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        popularity_blend: float = 0.0,
        popularity_days: int = 90,
        active_days: int | None = None,
        random_state: int = 42,
        num_threads: int = 0,
    ):
        if weighting not in ("bm25", "log"):
            raise ValueError(f"weighting must be 'bm25' or 'log', got {weighting!r}")
        super().__init__(
            half_life_days=half_life_days, popularity_days=popularity_days, active_days=active_days
        )
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.popularity_blend = popularity_blend
        self.random_state = random_state
        self.num_threads = num_threads

    def confidence(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """The confidence matrix handed to ALS (before implicit multiplies it by ``alpha``)."""
        if self.weighting == "bm25":
            c = _bm25(counts, self.bm25_k1, self.bm25_b)
        else:
            c = counts.copy().astype(np.float32)
            c.data = np.log1p(c.data)
        return c

    def _fit(self, data: _Interactions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(self.confidence(data.counts), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _prepare_scoring(self) -> None:
        top = np.log1p(self.popularity.max()) if len(self.popularity) else 0.0
        self._blend = (
            self.popularity_blend * np.log1p(self.popularity) / top
            if self.popularity_blend and top > 0
            else None
        )

    def _score(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        s = (self.user_factors[rows] @ self.item_factors[items].T).astype(np.float64)
        if self._blend is not None:
            s += self._blend[items]
        return s

    def _similar(self, item: int, items: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(self.item_factors, axis=1)
        norms[norms == 0] = 1.0
        unit = self.item_factors / norms[:, None]
        return unit[items] @ unit[item]

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"]
        self.item_factors = arrays["item_factors"]


# ---------------------------------------------------------------------------------------------
# Targets and evaluation
# ---------------------------------------------------------------------------------------------


def customers_before(
    transactions: pd.DataFrame, cutoff: pd.Timestamp | str, active_days: int | None = None
) -> list[str]:
    """Customers with any row before ``cutoff`` (or a purchase in the ``active_days`` before it)."""
    t = pd.Timestamp(cutoff)
    ts = transactions["ts"]
    if active_days is None:
        mask = ts < t
    else:
        mask = (ts < t) & (ts >= t - pd.Timedelta(days=active_days))
        mask &= transactions["quantity"] > 0
    return sorted(transactions.loc[mask, "customer_id"].unique().tolist())


def cross_sell_targets(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    horizon_days: int,
    customers: Iterable[str] | None = None,
) -> dict[str, set[str]]:
    """Items each customer bought in ``[cutoff, cutoff + H)`` and never bought before ``cutoff``.

    Only customers with at least one such item appear; ``customers`` restricts the result.
    A "buy" is a row with quantity > 0 (a return is not a purchase).
    """
    t0 = pd.Timestamp(cutoff)
    t1 = t0 + pd.Timedelta(days=horizon_days)
    ts = transactions["ts"]
    buys = (transactions["quantity"] > 0) & transactions["item_id"].notna()
    cols = ["customer_id", "item_id"]
    before = transactions.loc[buys & (ts < t0), cols].drop_duplicates()
    window = transactions.loc[buys & (ts >= t0) & (ts < t1), cols].drop_duplicates()
    if customers is not None:
        window = window[window["customer_id"].isin(list(customers))]
    new = window.merge(before, on=cols, how="left", indicator=True)
    new = new[new["_merge"] == "left_only"]
    return {c: set(g.tolist()) for c, g in new.groupby("customer_id", sort=True)["item_id"]}


def evaluate(
    recommender: Recommender,
    targets: Mapping[str, set[str]],
    k: int = 10,
    customers: Iterable[str] | None = None,
) -> dict[str, float]:
    """recall@k, ndcg@k and hit_rate@k averaged over customers with targets (+ n_customers).

    ``customers`` restricts the population (customers without targets are skipped).
    """
    ids = sorted(targets) if customers is None else sorted(set(customers) & set(targets))
    ids = [c for c in ids if targets[c]]
    if not ids:
        raise ValueError("no customer with cross-sell targets to evaluate")
    recs = recommender.recommend(ids, k=k, exclude_seen=True)
    recommended = [recs[c] for c in ids]
    relevant = [targets[c] for c in ids]
    return {
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        f"hit_rate@{k}": hit_rate_at_k(recommended, relevant, k),
        "n_customers": float(len(ids)),
    }


# ---------------------------------------------------------------------------------------------
# Tuning on a validation split
# ---------------------------------------------------------------------------------------------

#: popularity window (days); the winner is also every model's fallback and ALS's blend prior
DEFAULT_POPULARITY_GRID: dict[str, tuple] = {"popularity_days": (3, 7, 14, 30, 90)}
#: implicit item-kNN BM25: neighbours per item, recency decay of the customer's history
DEFAULT_KNN_GRID: dict[str, tuple] = {"K": (20, 50, 100), "half_life_days": (None, 180)}
#: ALS: 8 fits; ``popularity_blend`` only changes scoring, so it costs evaluations, not fits
DEFAULT_ALS_GRID: dict[str, tuple] = {
    "factors": (64, 128),
    "regularization": (0.05,),
    "iterations": (10,),
    "weighting": ("bm25", "log"),
    "half_life_days": (60, 120),
    "popularity_blend": (0.0, 0.25, 0.5, 1.0),
}


def _combinations(grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict]:
    if isinstance(grid, Mapping):
        names = list(grid)
        return [
            dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())
        ]
    return [dict(g) for g in grid]


def _tune(
    klass: type[Recommender],
    transactions: pd.DataFrame,
    val_cutoff: pd.Timestamp | str,
    horizon_days: int,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    base: Mapping[str, Any] | None,
    k: int,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit every grid point before ``val_cutoff``; score recall@k on ``[val_cutoff, +H)``.

    Rows at or after ``val_cutoff + H`` are dropped first, so nothing here can read the
    backtest window when the caller passes ``val_cutoff = backtest_cutoff − H``.
    """
    t = pd.Timestamp(val_cutoff)
    tx = transactions[transactions["ts"] < t + pd.Timedelta(days=horizon_days)]
    targets = cross_sell_targets(tx, t, horizon_days, customers_before(tx, t))
    base = dict(base or {})
    fit_points: dict[str, dict] = {}
    for combo in _combinations(grid):
        params = {**base, **combo}
        fit_part = {n: v for n, v in params.items() if n not in klass.scoring_params}
        score_part = {n: v for n, v in params.items() if n in klass.scoring_params}
        key = json.dumps(fit_part, sort_keys=True, default=str)
        fit_points.setdefault(key, {"fit": fit_part, "score": []})["score"].append(score_part)
    cache: dict[tuple, _Interactions] = {}
    rows = []
    for point in fit_points.values():
        model = klass(**point["fit"])
        data_key = (model.half_life_days, model.popularity_days, model.active_days)
        if data_key not in cache:
            cache[data_key] = _interactions(tx, t, *data_key)
        start = time.perf_counter()
        model._fit_interactions(cache[data_key])
        fit_s = time.perf_counter() - start
        for score_part in point["score"]:
            start = time.perf_counter()
            model.set_scoring_params(**score_part)
            metrics = evaluate(model, targets, k=k)
            rows.append(
                {
                    **point["fit"],
                    **score_part,
                    **metrics,
                    "fit_s": fit_s,
                    "eval_s": time.perf_counter() - start,
                }
            )
    table = pd.DataFrame(rows)
    order = np.lexsort((-table[f"ndcg@{k}"].to_numpy(), -table[f"recall@{k}"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "model", klass.kind)
    best = {**base, **{n: _plain(table.loc[0, n]) for n in _combinations(grid)[0]}}
    return best, table


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def tune_als(
    transactions: pd.DataFrame,
    val_cutoff: pd.Timestamp | str,
    horizon_days: int,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    k: int = 10,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid-search :class:`ALSRecommender` on the validation split; best by recall@k.

    ``grid`` maps parameter names to candidate values (their product is searched) or is a list
    of parameter dicts; default :data:`DEFAULT_ALS_GRID`. ``base`` holds fixed parameters
    (e.g. the shared ``active_days`` / ``popularity_days``). The caller passes ``val_cutoff =
    backtest_cutoff − horizon_days`` so the validation labels end where the backtest starts.
    Returns ``(best_params, table)``; the table has one row per grid point, best first.
    """
    return _tune(
        ALSRecommender, transactions, val_cutoff, horizon_days, grid or DEFAULT_ALS_GRID, base, k
    )


def tune_knn(
    transactions: pd.DataFrame,
    val_cutoff: pd.Timestamp | str,
    horizon_days: int,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    k: int = 10,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`tune_als` for :class:`ItemKNNRecommender` (default :data:`DEFAULT_KNN_GRID`)."""
    return _tune(
        ItemKNNRecommender,
        transactions,
        val_cutoff,
        horizon_days,
        grid or DEFAULT_KNN_GRID,
        base,
        k,
    )


def tune_popularity(
    transactions: pd.DataFrame,
    val_cutoff: pd.Timestamp | str,
    horizon_days: int,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    k: int = 10,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`tune_als` for :class:`PopularityRecommender` (default: the window length)."""
    return _tune(
        PopularityRecommender,
        transactions,
        val_cutoff,
        horizon_days,
        grid or DEFAULT_POPULARITY_GRID,
        base,
        k,
    )


# ---------------------------------------------------------------------------------------------
# Backtest and final fit
# ---------------------------------------------------------------------------------------------

#: quick grids for tests and smoke runs (``grid="small"``)
SMALL_GRIDS: dict[str, dict[str, tuple]] = {
    "popularity": {"popularity_days": (7, 30)},
    "knn": {"K": (20, 100)},
    "als": {
        "factors": (32,),
        "iterations": (6,),
        "weighting": ("bm25",),
        "half_life_days": (120,),
        "popularity_blend": (0.0, 0.5),
    },
}
DEFAULT_GRIDS: dict[str, dict[str, tuple]] = {
    "popularity": DEFAULT_POPULARITY_GRID,
    "knn": DEFAULT_KNN_GRID,
    "als": DEFAULT_ALS_GRID,
}
#: evaluation populations: customers seen before the cutoff, and those buying in the year before
POPULATIONS: dict[str, int | None] = {"all": None, "active_365d": 365}

Grid = Mapping[str, Sequence] | Sequence[Mapping[str, Any]]


@dataclass
class CrossSellResult:
    """What :func:`run_backtest` produced.

    ``params`` are the tuned ALS parameters (what :func:`fit_final` takes);
    ``baseline_params`` the tuned item-kNN and popularity ones. ``backtest`` is the wide
    model × population table, ``table`` the same numbers in the training pipeline's long
    format (task, model, population, metric, value).
    """

    als: ALSRecommender
    knn: ItemKNNRecommender
    popularity: PopularityRecommender
    params: dict[str, Any]
    baseline_params: dict[str, dict[str, Any]]
    tuning: pd.DataFrame  # every validation grid point of every model, best first per model
    backtest: pd.DataFrame  # model × population at the backtest cutoff
    timings: dict[str, float]  # seconds per stage
    cutoff: pd.Timestamp
    val_cutoff: pd.Timestamp
    horizon_days: int
    targets: dict[str, dict[str, set[str]]] = field(repr=False, default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """Long format: task="cross_sell", model, population, metric, value."""
        value_cols = [c for c in self.backtest.columns if c not in ("model", "population")]
        long = self.backtest.melt(
            id_vars=["model", "population"], value_vars=value_cols, var_name="metric"
        )
        long.insert(0, "task", "cross_sell")
        long["value"] = long["value"].astype(float)
        return long

    def meets_target(self, vs_knn: float = 1.2, vs_popularity: float = 1.6) -> bool:
        """Issue #3's acceptance: ALS recall ≥ 1.2× item-kNN and ≥ 1.6× popularity, everywhere."""
        als = self.backtest[self.backtest["model"] == "als"]
        return bool(
            (als["recall_vs_knn"] >= vs_knn).all()
            and (als["recall_vs_popularity"] >= vs_popularity).all()
        )


def _grids(grid: str | Grid | None, knn_grid: Grid | None, popularity_grid: Grid | None) -> dict:
    if grid is None or isinstance(grid, str):
        presets = {"default": DEFAULT_GRIDS, "small": SMALL_GRIDS}
        if (grid or "default") not in presets:
            raise ValueError(f"grid must be 'default', 'small' or a grid, got {grid!r}")
        out = dict(presets[grid or "default"])
    else:
        out = {**DEFAULT_GRIDS, "als": grid}
    if knn_grid is not None:
        out["knn"] = knn_grid
    if popularity_grid is not None:
        out["popularity"] = popularity_grid
    return out


def run_backtest(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | str | None = None,
    horizon: int = 90,
    *,
    grid: str | Grid | None = "default",
    knn_grid: Grid | None = None,
    popularity_grid: Grid | None = None,
    active_days: int | None = 30,
    k: int = 10,
) -> CrossSellResult:
    """Tune on the validation split, refit at the backtest cutoff, evaluate model × population.

    1. ``val_cutoff = cutoff − horizon``; tuning sees only rows before ``cutoff``.
    2. Popularity's window is tuned first and becomes every model's ``popularity_days`` (the
       fallback, and ALS's blend prior); ``active_days`` (the dead-catalogue rule: only items
       sold in the last ``active_days`` are recommended) is shared as well. Item-kNN and ALS
       are then tuned on their own grids (``grid``: ``"default"``, ``"small"`` or an ALS grid).
    3. The three tuned models are refitted on the rows before ``cutoff`` and scored on the items
       bought in ``[cutoff, cutoff + horizon)`` and never bought before, for each population in
       :data:`POPULATIONS`.

    ``cutoff`` defaults to :func:`features.labels.backtest_cutoff` (log end − 90 days).
    """
    from features.labels import backtest_cutoff

    t = backtest_cutoff(transactions) if cutoff is None else pd.Timestamp(cutoff)
    val = t - pd.Timedelta(days=horizon)
    grids = _grids(grid, knn_grid, popularity_grid)
    before = transactions[transactions["ts"] < t]
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[stage] = time.perf_counter() - start
        return out

    pop_params, pop_table = timed(
        "tune_popularity_s",
        lambda: tune_popularity(
            before, val, horizon, grids["popularity"], base={"active_days": active_days}, k=k
        ),
    )
    shared = {"active_days": active_days, "popularity_days": pop_params["popularity_days"]}
    knn_params, knn_table = timed(
        "tune_knn_s", lambda: tune_knn(before, val, horizon, grids["knn"], base=shared, k=k)
    )
    als_params, als_table = timed(
        "tune_als_s", lambda: tune_als(before, val, horizon, grids["als"], base=shared, k=k)
    )
    models: dict[str, Recommender] = {}
    for name, klass, params in (
        ("als", ALSRecommender, als_params),
        ("knn", ItemKNNRecommender, knn_params),
        ("popularity", PopularityRecommender, pop_params),
    ):
        models[name] = timed(f"fit_{name}_s", lambda k=klass, p=params: k(**p).fit(transactions, t))

    start = time.perf_counter()
    rows = []
    all_targets: dict[str, dict[str, set[str]]] = {}
    for population, days in POPULATIONS.items():
        targets = cross_sell_targets(
            transactions, t, horizon, customers_before(transactions, t, days)
        )
        all_targets[population] = targets
        for name, model in models.items():
            rows.append({"model": name, "population": population, **evaluate(model, targets, k)})
    timings["backtest_eval_s"] = time.perf_counter() - start
    timings["total_s"] = sum(timings.values())
    backtest = pd.DataFrame(rows)
    recall = f"recall@{k}"
    ref = backtest.pivot(index="population", columns="model", values=recall)
    for base_model, column in (("knn", "recall_vs_knn"), ("popularity", "recall_vs_popularity")):
        backtest[column] = backtest[recall] / backtest["population"].map(ref[base_model])
    backtest["n_customers"] = backtest["n_customers"].astype(int)
    return CrossSellResult(
        als=models["als"],  # type: ignore[arg-type]
        knn=models["knn"],  # type: ignore[arg-type]
        popularity=models["popularity"],  # type: ignore[arg-type]
        params=als_params,
        baseline_params={"knn": knn_params, "popularity": pop_params},
        tuning=pd.concat([pop_table, knn_table, als_table], ignore_index=True),
        backtest=backtest,
        timings=timings,
        cutoff=t,
        val_cutoff=val,
        horizon_days=horizon,
        targets=all_targets,
    )


def backtest_table(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | str | None = None,
    horizon: int = 90,
    **kwargs: Any,
) -> pd.DataFrame:
    """Rows model × population: recall@10, ndcg@10, hit_rate@10, n_customers, recall ratios.

    Shorthand for ``run_backtest(transactions, cutoff, horizon, **kwargs).backtest``.
    """
    return run_backtest(transactions, cutoff, horizon, **kwargs).backtest


def fit_final(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | str | None = None,
    params: Mapping[str, Any] | None = None,
) -> ALSRecommender:
    """Refit ALS with the chosen ``params`` on every row before ``cutoff`` (for serving).

    ``cutoff`` defaults to the day after the log's last day (all rows are used).
    """
    if cutoff is None:
        cutoff = transactions["ts"].max().normalize() + _DAY
    model = ALSRecommender(**dict(params or {}))
    return model.fit(transactions, cutoff)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# MLflow pyfunc
# ---------------------------------------------------------------------------------------------

_OUTPUT_COLUMNS = ["rank", "item_id", "item_name", "score", "source"]


class CrossSellPyfunc(mlflow.pyfunc.PythonModel):
    """A fitted :class:`Recommender` behind MLflow's pyfunc interface.

    Artifacts: ``recommender`` (a directory written by :meth:`Recommender.save`) and
    ``item_index`` (JSON: the model's item ids and, when known, their names). Call with
    ``params={"mode": ..., "k": ..., "exclude_seen": ...}``:

    * ``mode="recommend"`` (default): input column ``customer_id``; output ``customer_id,
      rank, item_id, item_name, score, source`` — the top-k items each customer has not bought
      or returned (``exclude_seen``); unknown customers get popular items (``source="popular"``,
      ``score`` NaN);
    * ``mode="similar"``: input column ``item_id``; output ``query_item_id, rank, item_id,
      item_name, score, source`` — items bought together with each input item.

    An optional integer input column ``k`` overrides ``params["k"]`` per row.
    """

    def __init__(self) -> None:
        self.model: Recommender | None = None
        self.names: dict[str, str] = {}

    def load_context(self, context: Any) -> None:
        self.model = Recommender.load(context.artifacts["recommender"])
        index = json.loads(Path(context.artifacts["item_index"]).read_text())
        names = index.get("name") or [None] * len(index["item_id"])
        self.names = {i: n for i, n in zip(index["item_id"], names, strict=True) if n is not None}

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            self.load_context(context)
        params = dict(params or {})
        mode = params.get("mode") or "recommend"
        k_default = int(params.get("k") or 10)
        exclude_seen = bool(params.get("exclude_seen", True))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if mode == "recommend":
            key, query = "customer_id", "customer_id"
        elif mode == "similar":
            key, query = "item_id", "query_item_id"
        else:
            raise ValueError(f"mode must be 'recommend' or 'similar', got {mode!r}")
        if key not in frame.columns or frame[key].isna().any():
            raise ValueError(f"mode={mode!r} needs a non-empty '{key}' column in the input")
        ids = frame[key].astype(str).str.strip().tolist()
        if "k" in frame.columns:
            ks = pd.to_numeric(frame["k"], errors="coerce").fillna(k_default).astype(int)
            ks = ks.clip(lower=1).tolist()
        else:
            ks = [k_default] * len(ids)
        if not ids:
            return pd.DataFrame(columns=[query, *_OUTPUT_COLUMNS])
        if mode == "recommend":
            positions = self.model._recommend_positions(ids, max(ks), exclude_seen)
        else:
            positions = self.model._similar_positions(ids, max(ks))
        positions = [(p[:k], v[:k], min(m, k)) for (p, v, m), k in zip(positions, ks, strict=True)]
        out = _frame(query, ids, positions, self.model.item_ids)
        out.insert(3, "item_name", out["item_id"].map(self.names).astype(object))
        return out.reset_index(drop=True)


def _signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec("string", "customer_id", required=False),
            ColSpec("string", "item_id", required=False),
            ColSpec("long", "k", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "customer_id", required=False),
            ColSpec("string", "query_item_id", required=False),
            ColSpec("long", "rank"),
            ColSpec("string", "item_id"),
            ColSpec("string", "item_name", required=False),
            ColSpec("double", "score", required=False),
            ColSpec("string", "source"),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("mode", "string", "recommend"),
            ParamSpec("k", "long", 10),
            ParamSpec("exclude_seen", "boolean", True),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc(
    recommender: Recommender,
    name: str = "cross_sell",
    item_names: pd.DataFrame | None = None,
    registered_model_name: str | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log ``recommender`` as a :class:`CrossSellPyfunc` model in the active MLflow run.

    ``item_names`` (columns ``item_id``, ``name``; e.g. ``Loaded.items``) labels the items in
    the output. Starts (and ends) a run if none is active. With ``registered_model_name`` the
    model is also registered (a new version). Returns MLflow's ``ModelInfo``.
    """
    recommender._check_fitted()
    names: list[str | None] | None = None
    if item_names is not None and len(item_names):
        lookup = dict(
            zip(item_names["item_id"].astype(str), item_names["name"].astype(object), strict=True)
        )
        names = [
            None if pd.isna(lookup.get(i)) else str(lookup[i])
            for i in recommender.item_ids.tolist()
        ]
    # a made-up id (served the popularity fallback): no real customer id in the artifacts
    input_example = pd.DataFrame({"customer_id": ["example-customer"]})
    metadata = {
        "recommender": type(recommender).__name__,
        "params": json.dumps(recommender.get_params(), default=str),
        "cutoff": recommender.cutoff.isoformat(),
        "n_customers": len(recommender.customer_ids),
        "n_items": len(recommender.item_ids),
    }
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"scipy=={scipy.__version__}",
    ]
    run = nullcontext() if mlflow.active_run() else mlflow.start_run(run_name=name)
    with tempfile.TemporaryDirectory() as tmp, run:
        model_dir = recommender.save(Path(tmp) / "recommender")
        index_path = Path(tmp) / "item_index.json"
        index_path.write_text(json.dumps({"item_id": recommender.item_ids.tolist(), "name": names}))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=CrossSellPyfunc(),
            artifacts={"recommender": str(model_dir), "item_index": str(index_path)},
            signature=_signature(),
            input_example=(input_example, {"mode": "recommend", "k": 10}),
            registered_model_name=registered_model_name,
            pip_requirements=requirements,
            metadata=metadata,
        )
