"""Labels at a cutoff and the stacked training frame of the backtest protocol.

For a cutoff ``t`` and horizon ``H`` (labels use only ``[t, t + H)`` and later):

* ``churn`` — no order in ``[t, t + H)``;
* ``buy_30d`` — an order in ``[t, t + 30 days)``;
* ``days_to_next`` — days from ``t`` to the next order, right-censored at the end of the
  observed log (``next_observed`` says whether the order was seen).

Backtest protocol (every model uses it): the last ``holdout_days`` (90) of the log are
held out — the *backtest cutoff* is the day after the log's last day minus 90 days
(2011-06-03 for the shared extract), so the held-out window ends where the log ends — and
models train on cutoffs whose label windows end on or before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from features.cutoff import rows_before
from features.snapshot import build_features

__all__ = [
    "LocalFrames",
    "Snapshots",
    "backtest_cutoff",
    "build_labels",
    "build_snapshots",
    "build_training_frame",
    "snapshot_at",
    "training_cutoffs",
]

#: feature snapshots by cutoff, built once for every cutoff a training run needs
Snapshots = Mapping[pd.Timestamp, pd.DataFrame]

_DAY = np.timedelta64(1, "D")


def backtest_cutoff(transactions: pd.DataFrame, holdout_days: int = 90) -> pd.Timestamp:
    """The day after the log's last calendar day minus ``holdout_days``: the held-out
    window ``[cutoff, cutoff + holdout_days)`` covers the log's last day too, and ends where
    the refit's labels end, so the backtest's cutoffs fall on the refit's grid (one
    snapshot serves both)."""
    end = transactions["ts"].max().normalize() + pd.Timedelta(days=1)
    return end - pd.Timedelta(days=holdout_days)


def training_cutoffs(
    transactions: pd.DataFrame,
    label_end: pd.Timestamp,
    horizon: int = 90,
    step_days: int = 30,
    min_history_days: int = 180,
    max_cutoffs: int = 12,
) -> list[pd.Timestamp]:
    """Cutoffs ``label_end − H − k·step`` (newest first) with ≥ ``min_history_days`` before them."""
    start = transactions["ts"].min().normalize() + pd.Timedelta(days=min_history_days)
    out = []
    t = label_end - pd.Timedelta(days=horizon)
    while t >= start and len(out) < max_cutoffs:
        out.append(t)
        t -= pd.Timedelta(days=step_days)
    if not out:
        raise ValueError(
            f"no training cutoff fits: the log starts {transactions['ts'].min()}, labels must "
            f"end by {label_end} with horizon {horizon} d and {min_history_days} d of history"
        )
    return out


def build_labels(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp,
    customers: pd.Index,
    horizon: int = 90,
    observed_until: pd.Timestamp | None = None,
    log_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Labels for ``customers`` at ``cutoff`` (see module docstring).

    Orders are seen up to the end of the log, or strictly before ``observed_until`` when
    given; an unseen next order is censored at that bound. ``log_end``: the log's last
    instant when ``transactions`` is one customer part of it (default: its last row's).
    """
    t = cutoff.to_datetime64().astype("datetime64[ns]")
    ts = transactions["ts"].to_numpy()
    if observed_until is None:  # the whole log, its last row included
        end = (transactions["ts"].max() if log_end is None else log_end).to_datetime64()
        seen = ts <= end
    else:  # observed_until is the first instant *not* observed (e.g. the backtest cutoff)
        end = observed_until.to_datetime64()
        seen = ts < end
    fut = transactions[(ts >= t) & seen & (transactions["quantity"].to_numpy() > 0)]
    first_next = fut.groupby("customer_id", observed=True)["ts"].min()
    # keyed as a snapshot's index is (ids as text), whatever the log's id column holds
    first_next.index = first_next.index.astype("str")
    nxt = first_next.reindex(customers)
    days = (nxt.to_numpy() - t) / _DAY
    observed = ~np.isnan(days)
    censor = (end - t) / _DAY
    out = pd.DataFrame(index=customers)
    out["churn"] = (~(observed & (days < horizon))).astype(np.int8)
    out["buy_30d"] = (observed & (days < 30)).astype(np.int8)
    out["days_to_next"] = np.where(observed, days, censor)
    out["next_observed"] = observed
    return out


def build_snapshots(
    transactions: pd.DataFrame, cutoffs: Iterable[pd.Timestamp]
) -> dict[pd.Timestamp, pd.DataFrame]:
    """The feature snapshot at each distinct cutoff, each built once.

    A snapshot reads only rows before its cutoff, so it is the same whichever origin or
    label bound it serves: a training run plans every cutoff of its backtest origins and its
    refit (they share one grid, so most recur) and builds each here once. Pass the log with
    its ids integer-coded (:func:`features.snapshot.coded_ids`, as training does) and no
    snapshot hashes its id strings again."""
    return {t: build_features(transactions, t) for t in sorted(set(cutoffs))}


def snapshot_at(
    transactions: pd.DataFrame, cutoff: pd.Timestamp, snapshots: Snapshots | None = None
) -> pd.DataFrame:
    """The snapshot at ``cutoff``: from ``snapshots`` when it holds it, else built now."""
    if snapshots is not None and cutoff in snapshots:
        return snapshots[cutoff]
    return build_features(transactions, cutoff)


def build_training_frame(
    transactions: pd.DataFrame,
    cutoffs: Sequence[pd.Timestamp],
    horizon: int = 90,
    observed_until: pd.Timestamp | None = None,
    snapshots: Snapshots | None = None,
    log_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Features + labels stacked over ``cutoffs`` (a ``cutoff`` column tells them apart).

    ``observed_until`` bounds what labels may see (the backtest cutoff when training, so no
    label reads into the held-out window); it defaults to the end of the log (``log_end``
    when ``transactions`` is one customer part of it, :func:`build_labels`). The features
    come from ``snapshots`` (:func:`build_snapshots`) where it has the cutoff.
    """
    tx = transactions
    if observed_until is not None:
        tx = rows_before(transactions, observed_until)
    frames = []
    for t in cutoffs:
        if observed_until is not None and t + pd.Timedelta(days=horizon) > observed_until:
            raise ValueError(f"cutoff {t}: label window ends after {observed_until}")
        feats = snapshot_at(tx, t, snapshots)
        labels = build_labels(tx, t, feats.index, horizon, observed_until, log_end)
        frame = feats.join(labels)
        frame.insert(0, "cutoff", t)
        frames.append(frame.reset_index())
    return pd.concat(frames, ignore_index=True)


class LocalFrames:
    """The snapshots and training frames of a training run in this process: every snapshot
    it needs built once (:func:`build_snapshots`), each training frame stacked from them
    (:func:`build_training_frame`); :class:`features.distributed.ClusterFrames` is the same
    on a Dask cluster."""

    def __init__(
        self,
        transactions: pd.DataFrame,
        cutoffs: Iterable[pd.Timestamp],
        scored: Iterable[pd.Timestamp] = (),
    ) -> None:
        """Snapshots at ``cutoffs`` (stacked in training frames) and ``scored`` (read as
        they are: evaluation, serving); a snapshot not built is built when first read."""
        self.transactions = transactions
        self.snapshots = build_snapshots(transactions, [*cutoffs, *scored])

    def training_frame(
        self,
        cutoffs: Sequence[pd.Timestamp],
        horizon: int,
        observed_until: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        return build_training_frame(
            self.transactions, cutoffs, horizon, observed_until, snapshots=self.snapshots
        )

    def keep_only(self, cutoff: pd.Timestamp) -> None:
        """Free every snapshot but ``cutoff``'s (no training frame is built after this)."""
        for t in [t for t in self.snapshots if t != cutoff]:
            del self.snapshots[t]
