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

:meth:`ClusterLog.features` builds the snapshot at a cutoff: the items' median prices (a
shop-level aggregate that does not add up over partitions) are reduced on the cluster and
gathered (one number per item, as :func:`~features.snapshot.item_median_prices` computes
them locally); each part's features are built by the worker holding it with
:func:`~features.snapshot.customer_features` — the local engine's own code; the
per-customer frames (one row per customer, small next to the log) are gathered and
:func:`~features.snapshot.finish_features` reduces the population cycle and the season.

Sums over a customer's rows differ from the one-piece build only where equal timestamps
are summed in another order (relative ≤ 1e-12, ``tests/test_distributed.py``). Dask is an
optional dependency (the ``dask`` extra): this module imports it, nothing else in
:mod:`features` does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.memory import release_free_memory
from features.contracts import DataContractError, validate_transactions
from features.cutoff import in_time_order
from features.snapshot import (
    FEATURE_COLUMNS,
    READ_COLUMNS,
    customer_features,
    finish_features,
)
from features.tables import is_parquet, table_columns

__all__ = [
    "CONTRACT_COLUMNS",
    "ClusterLog",
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

    def features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The snapshot at ``cutoff``: the same frame as
        :func:`features.snapshot.build_features` on the rows held (within the summation
        order of equal timestamps)."""
        import dask

        prices = self._median_prices(cutoff)
        frames = self.client.compute(
            [dask.delayed(customer_features)(p, cutoff, prices) for p in self.parts.to_delayed()]
        )
        out = [f for f in self.client.gather(frames) if len(f)]
        if not out:
            return pd.DataFrame(columns=FEATURE_COLUMNS, index=pd.Index([], name="customer_id"))
        snapshot = finish_features(pd.concat(out), cutoff)
        if self.customer_ids is not None:  # codes back to ids, in the ids' order
            ids = self.customer_ids.take(snapshot.index.to_numpy())
            snapshot = snapshot.set_axis(pd.Index(ids, name="customer_id")).sort_index()
        return snapshot

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
