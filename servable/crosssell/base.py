"""The cross-sell model interface and what every model learns from.

:func:`build_interactions` turns the log before a cutoff into the customer × item matrices
(recency-weighted order counts, seen items, popularity, the active catalogue): the
parameter-free :func:`order_lines`, once per cutoff, weighted per model by
:func:`interactions`.
:class:`Recommender` — in the style of implicit's ``RecommenderBase``, keyed by the contract's
string ids — owns the id maps, seen-item filtering, the catalogue rule, deterministic
tie-breaking (more popular first), the popularity fallback and persistence (JSON + npz, no
pickle); subclasses only score.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "DAY",
    "Interactions",
    "OrderLines",
    "Recommender",
    "build_interactions",
    "csr_arrays",
    "csr_from",
    "interaction_columns",
    "interactions",
    "order_lines",
    "positions_frame",
]

DAY = pd.Timedelta(days=1)
_FORMAT_VERSION = 1
_CHUNK = 1024  # customers scored per dense block (1024 × 4k items × 8 B = 32 MB)


@dataclass
class Interactions:
    """Everything a recommender learns from: the log strictly before ``cutoff``."""

    cutoff: pd.Timestamp
    customer_ids: np.ndarray  # sorted unique customer ids ('<U')
    item_ids: np.ndarray  # sorted unique item ids ('<U')
    counts: sp.csr_matrix  # customer × item: (recency-weighted) number of orders buying it
    seen: sp.csr_matrix  # customer × item: 1 if bought or returned
    popularity: np.ndarray  # distinct customers buying the item in the popularity window
    pop_order: np.ndarray  # item positions, most popular first (recent, then all-time, then id)
    active: np.ndarray  # bool per item: sold in the catalogue window (dead items are False)
    item_text: Mapping[str, str]  # item id → description, known at the cutoff (may be empty)
    families: Mapping[str, str] | None  # item id → the log's ``category``; None: no such column


def _ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the sorted distinct ids (int32: half the memory of ten million int64s;
    combine two as int64, :func:`_pair_key`) and those ids."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int32), np.asarray(list(uniques), dtype=str)


def _pair_key(a: np.ndarray, b: np.ndarray, n_b: int) -> np.ndarray:
    """Pairs of non-negative codes as one int64 (``a · n_b + b``; ``a = key // n_b``)."""
    return a.astype(np.int64) * n_b + b


def _order_codes(customer: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lines' (customer, order) pairs of integer codes as one code each, and each code's
    customer (an order id shared by two customers counts as two orders)."""
    n = int(order.max()) + 1 if len(order) else 1
    codes, pairs = pd.factorize(_pair_key(customer, order, n))
    return codes, (pairs // n).astype(np.int32)


def _last(ts: np.ndarray | pd.Series, key: np.ndarray) -> pd.Series:
    """The latest ``ts`` per integer ``key`` (indexed by key, in first-seen order).

    By a stable sort of the keys, each key's rows then one run, each array dropped once
    read: grouping ten million keys by hash built ~0.6 GB of tables on the 16× log, this
    ~0.3 GB (docs/results.md, #19)."""
    order = np.argsort(key, kind="stable")
    key = key[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    key = key[start]
    latest = np.maximum.reduceat(np.asarray(ts)[order], start)
    first_row = order[start]  # stable: a run starts at its key's first row
    del order, start
    by_first_row = np.argsort(first_row)
    return pd.Series(latest[by_first_row], index=key[by_first_row])


def _age(t: pd.Timestamp, ts: pd.Series) -> np.ndarray:
    """Days from each of ``ts`` to ``t``."""
    return (t.to_datetime64() - ts.to_numpy()) / np.timedelta64(1, "D")


def interaction_columns(transactions: pd.DataFrame) -> list[str]:
    """The columns of a log a recommender reads (with ``category`` when the log has one)."""
    cols = ["customer_id", "order_id", "ts", "item_id", "quantity"]
    return [*cols, "category"] if "category" in transactions.columns else cols


@dataclass
class OrderLines:
    """The log before ``cutoff`` as every recommender reads it, before any parameter: the
    ids, what each customer has seen, each (customer, order, item) bought at its latest line
    and each (customer, item) at its latest order — built once per cutoff and weighted per
    model (:func:`interactions`)."""

    cutoff: pd.Timestamp
    customer_ids: np.ndarray  # sorted unique customer ids ('<U')
    item_ids: np.ndarray  # sorted unique item ids ('<U')
    seen: sp.csr_matrix  # customer × item: 1 if bought or returned
    customer: np.ndarray  # per order line bought: the customer's position
    item: np.ndarray  # per order line bought: the item's position
    age: np.ndarray  # per order line bought: days before the cutoff
    pair_item: np.ndarray  # per (customer, item) bought: the item's position
    pair_age: np.ndarray  # per (customer, item) bought: days since its latest order
    families: Mapping[str, str] | None  # item id → the log's ``category``; None: no such column


def order_lines(transactions: pd.DataFrame, cutoff: pd.Timestamp) -> OrderLines:
    """The :class:`OrderLines` of the rows strictly before ``cutoff`` (a ValueError when
    none has an item)."""
    t = cutoff
    ts = transactions["ts"]
    keep = (ts < t) & transactions["item_id"].notna()
    tx = transactions[keep.to_numpy()][interaction_columns(transactions)]  # all kept: no copy
    if tx.empty:
        raise ValueError(f"no transactions with an item before the cutoff {t}")
    c, customer_ids = _ids(tx["customer_id"])
    i, item_ids = _ids(tx["item_id"])
    shape = (len(customer_ids), len(item_ids))
    seen = sp.csr_matrix((np.ones(len(c), np.float32), (c, i)), shape=shape)
    seen.sum_duplicates()
    seen.data[:] = 1.0

    buy = tx["quantity"].to_numpy() > 0
    order, customer_of = _order_codes(c[buy], pd.factorize(tx["order_id"])[0][buy])
    # each (order, item) bought, at its latest line; grouped by one integer key, not a frame
    n_items = len(item_ids)
    line = _last(tx["ts"].to_numpy()[buy], _pair_key(order, i[buy], n_items))
    del c, i, buy, order
    key = line.index.to_numpy()
    customer, item = customer_of[key // n_items], (key % n_items).astype(np.int32)
    del key
    # each (customer, item) at its latest order
    pairs = _last(line, _pair_key(customer, item, n_items))
    families = None
    if "category" in tx.columns:  # the category on the item's last line
        last = tx.drop_duplicates("item_id", keep="last")
        families = dict(zip(last["item_id"], last["category"].astype(str), strict=True))
    return OrderLines(
        t,
        customer_ids,
        item_ids,
        seen,
        customer,
        item,
        _age(t, line),
        (pairs.index.to_numpy() % n_items).astype(np.int32),
        _age(t, pairs),
        families,
    )


def interactions(
    lines: OrderLines,
    half_life_days: float | None = None,
    popularity_days: int = 90,
    active_days: int | None = None,
    item_text: Mapping[str, str] | None = None,
) -> Interactions:
    """The matrices of :class:`Interactions` from ``lines`` with a model's parameters.

    ``counts`` weighs each order by ``0.5 ** (age / half_life_days)`` (1 without a half-life);
    ``popularity`` counts buyers in the ``popularity_days`` before the cutoff; an item is
    ``active`` if sold in the ``active_days`` before it (ever, when ``None``). ``item_text``
    (id → description) and the log's ``category`` column, when it has one, pass through for
    models that read what an item is (:mod:`servable.crosssell.hybrid`).
    """
    age = lines.age
    w = np.power(0.5, age / float(half_life_days)) if half_life_days else np.ones(len(age))
    shape = (len(lines.customer_ids), len(lines.item_ids))
    counts = sp.csr_matrix((w.astype(np.float32), (lines.customer, lines.item)), shape=shape)
    counts.sum_duplicates()
    n_items, pi = len(lines.item_ids), lines.pair_item
    ever = np.bincount(pi, minlength=n_items)
    popularity = np.bincount(pi[lines.pair_age <= popularity_days], minlength=n_items)
    pop_order = np.lexsort((np.arange(n_items), -ever, -popularity))
    if active_days is None:
        active = ever > 0
    else:
        active = np.bincount(pi[lines.pair_age <= active_days], minlength=n_items) > 0
    return Interactions(
        lines.cutoff,
        lines.customer_ids,
        lines.item_ids,
        counts,
        lines.seen,
        popularity.astype(float),
        pop_order,
        active,
        dict(item_text or {}),
        lines.families,
    )


def build_interactions(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp,
    half_life_days: float | None = None,
    popularity_days: int = 90,
    active_days: int | None = None,
    item_text: Mapping[str, str] | None = None,
) -> Interactions:
    """:func:`interactions` of the :func:`order_lines` strictly before ``cutoff``."""
    lines = order_lines(transactions, cutoff)
    return interactions(lines, half_life_days, popularity_days, active_days, item_text)


def csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as named arrays for ``np.savez`` (read back by :func:`csr_from`)."""
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape),
    }


def csr_from(prefix: str, arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    """The CSR matrix that :func:`csr_arrays` stored under ``prefix``."""
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=tuple(int(x) for x in arrays[f"{prefix}_shape"]),
    )


class Recommender(ABC):
    """Common interface of the cross-sell models (string customer and item ids).

    Subclasses implement ``_fit`` (learn from :class:`Interactions`), ``_score`` (dense
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

    def fit(
        self,
        transactions: pd.DataFrame,
        cutoff: pd.Timestamp,
        item_text: Mapping[str, str] | None = None,
    ) -> Recommender:
        """Learn from the rows of ``transactions`` strictly before ``cutoff`` (and the items'
        ``item_text``, id → description, for models that read content)."""
        return self.fit_lines(order_lines(transactions, cutoff), item_text)

    def fit_lines(
        self, lines: OrderLines, item_text: Mapping[str, str] | None = None
    ) -> Recommender:
        """Learn from already built :class:`OrderLines` (several models at one cutoff share
        them), weighted with this model's parameters."""
        data = interactions(
            lines, self.half_life_days, self.popularity_days, self.active_days, item_text
        )
        return self.fit_interactions(data)

    def fit_interactions(self, data: Interactions) -> Recommender:
        """Learn from already built interactions (tuning shares them across grid points)."""
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
    def _fit(self, data: Interactions) -> None: ...

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
        return positions_frame("customer_id", ids, positions, self.item_ids)

    def similar_items(self, item_id: str, k: int = 10) -> list[str]:
        """Items "bought together" with ``item_id`` (most similar first, itself excluded)."""
        return self.similar_items_frame([item_id], k)["item_id"].tolist()

    def similar_items_frame(self, item_ids: Iterable[str], k: int = 10) -> pd.DataFrame:
        """:meth:`similar_items` for many items: query_item_id, rank, item_id, score, source.

        An unknown item gets the most popular items (``source="popular"``, score NaN).
        """
        ids = [str(i) for i in item_ids]
        return positions_frame("query_item_id", ids, self._similar_positions(ids, k), self.item_ids)

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
            **csr_arrays("counts", self.counts),
            **csr_arrays("seen", self.seen),
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
            obj.counts = csr_from("counts", z)
            obj.seen = csr_from("seen", z)
        with np.load(path / "model.npz", allow_pickle=False) as z:
            obj._restore({k: z[k] for k in z.files})
        obj._index()
        obj._prepare_scoring()
        return obj


def positions_frame(
    key: str,
    ids: list[str],
    positions: list[tuple[np.ndarray, np.ndarray, int]],
    item_ids: np.ndarray,
) -> pd.DataFrame:
    """Ranked positions as rows ``key, rank, item_id, score, source`` (``"model"`` for the
    model's own picks, ``"popular"`` for the fallback)."""
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
