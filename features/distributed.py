"""The feature snapshot on Dask (``dask.distributed``): the customer-partitioned build of
:func:`features.snapshot.build_features` spread over a cluster's workers.

Reads a Parquet dataset in the transactions contract (clean rows: ``customer_id``,
``order_id``, ``ts``, ``quantity``, ``unit_price``, optional ``item_id``; the format
``python -m features --export`` writes), never the whole log on one machine:

1. the rows before the cutoff are read by the workers, only the contract's columns;
2. the items' median prices (a shop-level aggregate that does not add up over partitions)
   are reduced on the cluster with a shuffle by item and gathered (one number per item,
   as :func:`~features.snapshot.item_median_prices` computes them locally);
3. the rows are shuffled by customer id into ``partitions`` parts, so every customer's rows
   sit in one part, and each part's features are built by the worker holding it with
   :func:`~features.snapshot.customer_features` — the local engine's own code;
4. the per-customer frames (one row per customer, small next to the log) are gathered and
   :func:`~features.snapshot.finish_features` reduces the population cycle and the season.

Rows within a shuffled part are put back in time order first; sums over a customer's rows
then differ from the one-piece build only where equal timestamps are summed in another
order (relative ≤ 1e-12, ``tests/test_distributed.py``). Dask is an optional dependency
(the ``dask`` extra): this module imports it, nothing else in :mod:`features` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from features.contracts import DataContractError, validate_transactions
from features.snapshot import FEATURE_COLUMNS, customer_features, finish_features
from features.tables import is_parquet, table_columns

__all__ = ["CONTRACT_COLUMNS", "build_features_dask", "connect", "export_contract"]

#: the columns read from the dataset (``item_id`` when present)
CONTRACT_COLUMNS = ("customer_id", "order_id", "ts", "item_id", "quantity", "unit_price")


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


def _part_features(
    part: pd.DataFrame, cutoff: pd.Timestamp, prices: pd.Series | None, source: str
) -> pd.DataFrame:
    """One customer partition's features (on a worker): validated, in time order."""
    part = validate_transactions(part.reset_index(drop=True), source=source)
    part = part.sort_values("ts", kind="stable").reset_index(drop=True)
    return customer_features(part, cutoff, prices)


def build_features_dask(
    dataset: str | Path,
    cutoff: pd.Timestamp,
    client,  # a distributed.Client (dask is optional: not imported at module level)
    partitions: int | None = None,
) -> pd.DataFrame:
    """The snapshot at ``cutoff`` of the Parquet ``dataset`` built on ``client``'s cluster;
    the same frame as :func:`features.snapshot.build_features` on the loaded rows (within
    the summation order of equal timestamps). ``partitions``: customer parts (default
    twice the workers' threads)."""
    import dask
    import dask.dataframe as dd

    source = str(dataset)
    if not is_parquet(dataset):
        raise DataContractError(source, None, "the dask engine reads a Parquet dataset")
    names = table_columns(dataset)  # the dataset's schema; unreadable: a clear error
    missing = [c for c in ("customer_id", "ts", "quantity", "unit_price") if c not in names]
    if missing:
        raise DataContractError(source, missing[0], f"missing contract column(s) {missing}")
    ddf = dd.read_parquet(dataset, columns=[c for c in CONTRACT_COLUMNS if c in names])
    ddf = ddf[ddf["ts"] < cutoff]
    prices = None
    if "item_id" in ddf.columns:
        buy = ddf[ddf["quantity"] > 0]  # the median skips missing items, as locally
        prices = client.compute(buy.groupby("item_id")["unit_price"].median()).result()
        if len(prices):
            prices.index = prices.index.astype(object)
            prices = prices.sort_index().rename("unit_price")
        else:
            prices = None
    n = partitions or 2 * max(1, sum(client.nthreads().values()))
    parts = ddf.shuffle("customer_id", npartitions=n).to_delayed()
    frames = client.compute(
        [dask.delayed(_part_features)(p, cutoff, prices, source) for p in parts]
    )
    out = [f for f in client.gather(frames) if len(f)]
    if not out:
        return pd.DataFrame(columns=FEATURE_COLUMNS, index=pd.Index([], name="customer_id"))
    return finish_features(pd.concat(out), cutoff)
