"""The feature snapshot on Dask (``dask.distributed``): the customer-partitioned build of
:func:`features.snapshot.build_features` spread over a cluster's workers.

:class:`ClusterLog` is a log held by the workers, shuffled once by customer id into
``partitions`` parts (every customer's rows in one part, each part in time order), from
either of two sources:

* a Parquet dataset in the transactions contract (``ClusterLog.read``: clean rows of
  ``customer_id``, ``order_id``, ``ts``, ``quantity``, ``unit_price``, optional
  ``item_id``; the format ``python -m features --export`` writes), read by the workers,
  only the columns features read, never the whole log on one machine;
* a log the driver already holds (``ClusterLog.scatter``: ``python -m training --engine
  dask``, whose labels and cross-sell read the loaded log too), sent to the workers once
  with its ids as integer codes, so the snapshots at every cutoff of a run share one shuffle.

:meth:`ClusterLog.snapshot_parts` builds the snapshot at a cutoff and leaves it on the
workers: the items' median prices (a shop-level aggregate that does not add up over
partitions) are reduced on the cluster and gathered (one number per item, as
:func:`~features.snapshot.item_median_prices` computes them locally); each part's features
are built by the worker holding it with :func:`~features.snapshot.customer_features` — the
local engine's own code — and finished there by :func:`~features.snapshot.finish_features`
with the shop's :class:`~features.snapshot.ShopTotals` (the population cycle and the
season's counts, summed from the parts' own). :meth:`ClusterLog.features` gathers it.

:class:`ClusterFrames` is a training run's snapshots and training frames on the cluster (as
:class:`features.labels.LocalFrames` in the process): each training frame is stacked part
by part from the snapshots and the labels of the part's own rows and stays there
(:class:`ClusterRows`, what a model fits from without gathering it); only the snapshots the
run scores come back.

Sums over a customer's rows differ from the one-piece build only where equal timestamps
are summed in another order (relative ≤ 1e-12, ``tests/test_distributed.py``). Dask is an
optional dependency (the ``dask`` extra): this module imports it, nothing else in
:mod:`features` does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.memory import release_free_memory
from features.contracts import DataContractError, validate_transactions
from features.cutoff import in_time_order
from features.labels import build_training_frame
from features.snapshot import (
    FEATURE_COLUMNS,
    READ_COLUMNS,
    ShopTotals,
    customer_features,
    finish_features,
)
from features.tables import is_parquet, table_columns

__all__ = [
    "CONTRACT_COLUMNS",
    "ClusterFrames",
    "ClusterLog",
    "ClusterRows",
    "build_features_dask",
    "connect",
    "export_contract",
]

#: the columns read from a dataset (``item_id`` when present)
CONTRACT_COLUMNS = ("customer_id", "order_id", "ts", "item_id", "quantity", "unit_price")
#: the ids a scattered log sends as bare codes (item ids keep their text: a family is read
#: from it when the log has no category)
_CODED = ("customer_id", "order_id")


@contextlib.contextmanager
def connect(scheduler: str, memory_limit: str = "auto") -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``scheduler``, or of a ``LocalCluster``
    (one worker process per core, ``memory_limit`` each) started for the run if it is
    ``"local"``; closed on exit. A ValueError naming the fix if Dask is not installed or the
    scheduler does not answer within Dask's ``distributed.comm.timeouts.connect`` (30 s; e.g.
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=10s``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("engine dask: Dask is not installed (pip install -e '.[dask]')") from None

    with contextlib.ExitStack() as stack:
        target: Any = scheduler
        if scheduler == "local":
            # the in-process scheduler's note on every shuffle it starts and stops: noise
            logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
            target = stack.enter_context(
                LocalCluster(
                    threads_per_worker=1, memory_limit=memory_limit, dashboard_address=None
                )
            )
        try:
            client = stack.enter_context(Client(target))
        except OSError as exc:
            raise ValueError(f"scheduler {scheduler!r}: cannot connect ({exc})") from None
        yield client


def export_contract(transactions: pd.DataFrame, folder: Path, rows_per_file: int = 500_000) -> Path:
    """Write clean transactions as a Parquet dataset of ``rows_per_file``-row parts (the
    input of :func:`build_features_dask`); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = [c for c in CONTRACT_COLUMNS if c in transactions.columns]
    for i, start in enumerate(range(0, len(transactions), rows_per_file)):
        part = transactions.iloc[start : start + rows_per_file][cols]
        part.to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    return folder


def _in_time_order(part: pd.DataFrame, source: str | None) -> pd.DataFrame:
    """One customer part (on a worker), validated if it came from a ``source`` outside."""
    part = part.reset_index(drop=True)
    if source is not None:
        part = validate_transactions(part, source=source)
    return in_time_order(part)


def _as_codes(column: pd.Series) -> pd.Series:
    """A categorical's codes behind the categories ``0 … n-1``: the same grouping, and a
    part pickles an integer range instead of every id string."""
    codes = column.cat.codes.to_numpy()
    return pd.Series(
        pd.Categorical.from_codes(codes, pd.RangeIndex(len(column.cat.categories))),
        index=column.index,
        name=column.name,
    )


@dataclass
class ClusterLog:
    """A log on ``client``'s workers, shuffled by customer into parts in time order (see
    module docstring); ``customer_ids``: the ids the codes of a scattered log stand for."""

    client: Any  # a distributed.Client (dask is optional: not imported at module level)
    parts: Any  # a persisted dask DataFrame
    customer_ids: pd.Index | None = None

    @classmethod
    def read(
        cls,
        client: Any,
        dataset: str | Path,
        before: pd.Timestamp | None = None,
        partitions: int | None = None,
    ) -> ClusterLog:
        """The rows of the Parquet ``dataset`` (before ``before``), read and validated by the
        workers; a :class:`DataContractError` names a dataset that is not the contract."""
        import dask.dataframe as dd

        source = str(dataset)
        if not is_parquet(dataset):
            raise DataContractError(source, None, "the dask engine reads a Parquet dataset")
        names = table_columns(dataset)  # the dataset's schema; unreadable: a clear error
        missing = [c for c in ("customer_id", "ts", "quantity", "unit_price") if c not in names]
        if missing:
            raise DataContractError(source, missing[0], f"missing contract column(s) {missing}")
        ddf = dd.read_parquet(dataset, columns=[c for c in CONTRACT_COLUMNS if c in names])
        if before is not None:
            ddf = ddf[ddf["ts"] < before]
        return cls._shuffled(client, ddf, partitions, source)

    @classmethod
    def scatter(
        cls, client: Any, transactions: pd.DataFrame, partitions: int | None = None
    ) -> ClusterLog:
        """The driver's clean ``transactions`` (ids categorical, :func:`coded_ids`) sent to
        the workers once: only the columns features read, customer and order ids as codes."""
        import dask.dataframe as dd

        frame = transactions[[c for c in transactions.columns if c in READ_COLUMNS]]
        if not all(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in _CODED):
            raise ValueError("ClusterLog.scatter: pass the log with its ids coded (coded_ids)")
        frame = frame.assign(**{c: _as_codes(frame[c]) for c in _CODED})
        n = _workers(client)
        rows = max(1, -(-len(frame) // (4 * n)))  # a few pieces per worker
        pieces = client.scatter([frame.iloc[a : a + rows] for a in range(0, len(frame), rows)])
        ddf = dd.from_delayed(pieces, meta=frame.iloc[:0], verify_meta=False)
        ids = transactions["customer_id"].cat.categories
        return cls._shuffled(client, ddf, partitions, None, ids)

    @classmethod
    def _shuffled(
        cls,
        client: Any,
        ddf: Any,
        partitions: int | None,
        source: str | None,
        customer_ids: pd.Index | None = None,
    ) -> ClusterLog:
        n = partitions or 2 * _workers(client)
        shuffled = ddf.shuffle("customer_id", npartitions=n)
        parts = shuffled.map_partitions(_in_time_order, source, meta=_meta(ddf, source))
        return cls(client, client.persist(parts), customer_ids)

    def snapshot_parts(self, cutoff: pd.Timestamp) -> Any:
        """The snapshot at ``cutoff`` held by the workers: a persisted dask DataFrame of one
        part per customer part (indexed by the part's customer ids; codes for a scattered
        log). Each part's features are the local engine's :func:`customer_features`, then
        :func:`finish_features` with the whole shop's :class:`ShopTotals` (summed from the
        parts' own)."""
        import dask
        import dask.dataframe as dd

        prices = self._median_prices(cutoff)
        partial = self.client.compute(
            [dask.delayed(customer_features)(p, cutoff, prices) for p in self.parts.to_delayed()]
        )
        totals = sum(self.client.gather(self.client.map(ShopTotals.of, partial)), ShopTotals())
        finished = [dask.delayed(_finished)(f, cutoff, totals) for f in partial]
        return self.client.persist(dd.from_delayed(finished, meta=_EMPTY, verify_meta=False))

    def gather(self, snapshot_parts: Any) -> pd.DataFrame:
        """A snapshot held by the workers (:meth:`snapshot_parts`) in this process, indexed
        by customer id."""
        out = [
            f
            for f in self.client.gather(self.client.compute(snapshot_parts.to_delayed()))
            if len(f)
        ]
        if not out:
            return _EMPTY.copy()
        snapshot = pd.concat(out).sort_index()
        if self.customer_ids is not None:  # codes back to ids, in the ids' order
            ids = self.customer_ids.take(snapshot.index.astype(int))
            snapshot = snapshot.set_axis(pd.Index(ids, name="customer_id")).sort_index()
        return snapshot

    def features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The snapshot at ``cutoff``: the same frame as
        :func:`features.snapshot.build_features` on the rows held (within the summation
        order of equal timestamps)."""
        return self.gather(self.snapshot_parts(cutoff))

    def training_frame(
        self,
        snapshots: dict[pd.Timestamp, Any],
        cutoffs: Sequence[pd.Timestamp],
        horizon: int,
        observed_until: pd.Timestamp | None = None,
    ) -> ClusterRows:
        """As :func:`features.labels.build_training_frame`, held by the workers: each
        customer part's features at ``cutoffs`` (from ``snapshots``, cutoff → its
        :meth:`snapshot_parts`) joined with the labels of the part's own rows."""
        import dask
        import dask.dataframe as dd

        cutoffs = list(cutoffs)
        per_part = zip(*(snapshots[t].to_delayed() for t in cutoffs), strict=True)
        stack = functools.partial(
            _stacked,
            cutoffs=cutoffs,
            horizon=horizon,
            observed_until=observed_until,
            log_end=self.client.compute(self.parts["ts"].max()).result(),  # labels' bound
        )
        parts = [
            dask.delayed(stack)(log, list(snaps))
            for log, snaps in zip(self.parts.to_delayed(), per_part, strict=True)
        ]
        meta = stack(self.parts._meta, [_EMPTY] * len(cutoffs))
        frame = self.client.persist(dd.from_delayed(parts, meta=meta, verify_meta=False))
        lengths = self.client.compute(frame.map_partitions(len)).result().tolist()
        return ClusterRows(self.client, frame, lengths, tuple(cutoffs))

    def release(self) -> None:
        """Drop the workers' copy of the log and hand what they freed back to the OS
        (Dask's advice for workers whose freed memory stays mapped: ``malloc_trim``)."""
        self.client.cancel(self.parts)
        self.client.run(release_free_memory)

    def _median_prices(self, cutoff: pd.Timestamp) -> pd.Series | None:
        """Each item's median unit price over purchase lines before ``cutoff`` (None: no
        items), reduced on the cluster with a shuffle by item."""
        if "item_id" not in self.parts.columns:
            return None
        ddf = self.parts
        buy = ddf[(ddf["quantity"] > 0) & (ddf["ts"] < cutoff)]
        prices = self.client.compute(buy.groupby("item_id")["unit_price"].median()).result()
        if not len(prices):
            return None
        prices.index = pd.Index(prices.index.astype("str"), name="item_id")
        return prices.sort_index().rename("unit_price")


#: an empty snapshot part: a snapshot's columns and index (ids as text, as
#: :func:`~features.snapshot.customer_features` gives them), no customer
_EMPTY = pd.DataFrame(
    columns=FEATURE_COLUMNS, dtype="float64", index=pd.Index([], name="customer_id", dtype="str")
)


def _finished(partial: pd.DataFrame, cutoff: pd.Timestamp, totals: ShopTotals) -> pd.DataFrame:
    """One customer part's snapshot (on a worker) from its partial features."""
    return finish_features(partial, cutoff, totals) if len(partial) else _EMPTY


def _stacked(
    log: pd.DataFrame,
    snapshots: list[pd.DataFrame],
    cutoffs: list[pd.Timestamp],
    horizon: int,
    observed_until: pd.Timestamp | None,
    log_end: pd.Timestamp,
) -> pd.DataFrame:
    """One customer part's training frame (on a worker): its snapshots and its labels."""
    return build_training_frame(
        log, cutoffs, horizon, observed_until, dict(zip(cutoffs, snapshots, strict=True)), log_end
    )


def _values(part: pd.DataFrame, name: str) -> np.ndarray:
    return part[name].to_numpy()


@dataclass
class ClusterRows:
    """A stacked training frame held by a cluster's workers, one part per customer part
    (:class:`servable.training_rows.TrainingRows`): a model fits from its columns and
    row-wise functions as Dask arrays, so the frame is never gathered; only the rows at
    one cutoff come to the driver (:meth:`at`)."""

    client: Any
    frame: Any  # a persisted dask DataFrame
    lengths: list[int]  # rows per part (the arrays' chunks)
    cutoffs: tuple[pd.Timestamp, ...]

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def __len__(self) -> int:
        return sum(self.lengths)

    def newest(self) -> pd.Timestamp:
        return max(self.cutoffs)

    def at(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        return self.client.compute(self.frame[self.frame["cutoff"] == cutoff]).result()

    def column(self, name: str) -> Any:
        return self._array(functools.partial(_values, name=name), (), self.frame.dtypes[name])

    def rowwise(self, fn: Callable[[pd.DataFrame], np.ndarray], width: int) -> Any:
        return self._array(fn, (width,), np.dtype("float64"))

    def _array(self, fn: Callable[[pd.DataFrame], np.ndarray], shape: tuple, dtype: Any) -> Any:
        """``fn`` over the parts, each by the worker holding it, as one dask array (a block
        per part, in order) persisted there: a model reads a column in several computations
        (folds, masks, counts), and an array recomputed in each would be sent under one key
        with other tasks (dask/dask#9888)."""
        import dask
        import dask.array as da

        blocks = [
            da.from_delayed(dask.delayed(fn)(part), (n, *shape), dtype=dtype)
            for part, n in zip(self.frame.to_delayed(), self.lengths, strict=True)
        ]
        return self.client.persist(da.concatenate(blocks))


class ClusterFrames:
    """The snapshots and training frames of a training run on a Dask cluster (as
    :class:`features.labels.LocalFrames` in this process): the log is sent and shuffled by
    customer once (:meth:`ClusterLog.scatter`), every cutoff's snapshot is built and kept
    by the workers, each training frame is stacked there (:class:`ClusterRows`); only the
    snapshots at the ``scored`` cutoffs (evaluated or served here) are gathered."""

    def __init__(
        self,
        client: Any,
        transactions: pd.DataFrame,
        cutoffs: Iterable[pd.Timestamp],
        scored: Iterable[pd.Timestamp],
    ) -> None:
        scored = sorted(set(scored))
        self.log: ClusterLog | None = ClusterLog.scatter(client, transactions)
        self.parts = {t: self.log.snapshot_parts(t) for t in sorted({*cutoffs, *scored})}
        self.snapshots = {t: self.log.gather(self.parts[t]) for t in scored}

    def training_frame(
        self,
        cutoffs: Sequence[pd.Timestamp],
        horizon: int,
        observed_until: pd.Timestamp | None = None,
    ) -> ClusterRows:
        if self.log is None:
            raise RuntimeError("ClusterFrames: the log was freed (keep_only)")
        return self.log.training_frame(self.parts, cutoffs, horizon, observed_until)

    def keep_only(self, cutoff: pd.Timestamp) -> None:
        """Free every snapshot but ``cutoff``'s, and the workers' log and snapshots (their
        references dropped, not cancelled: a training frame built from them lives on)."""
        for t in [t for t in self.snapshots if t != cutoff]:
            del self.snapshots[t]
        self.parts.clear()
        self.log = None


def _workers(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


def _meta(ddf: Any, source: str | None) -> pd.DataFrame:
    """The parts' empty frame: the contract's columns when validated on the workers."""
    empty = ddf._meta
    return empty if source is None else validate_transactions(empty, source=source)


def build_features_dask(
    dataset: str | Path,
    cutoff: pd.Timestamp,
    client: Any,
    partitions: int | None = None,
) -> pd.DataFrame:
    """The snapshot at ``cutoff`` of the Parquet ``dataset`` built on ``client``'s cluster
    (:class:`ClusterLog`); ``partitions``: customer parts (default twice the workers'
    threads)."""
    log = ClusterLog.read(client, dataset, before=cutoff, partitions=partitions)
    try:
        return log.features(cutoff)
    finally:
        log.release()
