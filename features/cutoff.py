"""The cutoff as one typed value: a date from a command line or a config, parsed once; and
the rows of a log before it.

Every feature, label and model function takes a ``pd.Timestamp`` cutoff and never re-parses
it; the boundaries (CLI arguments, ``TrainConfig``) call :func:`parse_cutoff`. A training
run cuts its log at a score of cutoffs: :func:`rows_before` makes each cut a slice of a log
in time order (:func:`in_time_order`) instead of a filtered copy of most of it.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

__all__ = ["in_time_order", "parse_cutoff", "rows_before"]


def parse_cutoff(value: str | date | datetime | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a ``pd.Timestamp``; ``ValueError`` naming the value if it is not a date."""
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"cannot parse {value!r} as a date") from None
    if pd.isna(t):
        raise ValueError(f"cannot parse {value!r} as a date")
    return t


def in_time_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` stably sorted by its ``ts`` column (``frame`` itself when it already is):
    rows at the same time keep their order, so a log exported in time order is unchanged."""
    if frame["ts"].is_monotonic_increasing:
        return frame
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def rows_before(frame: pd.DataFrame, t: pd.Timestamp | np.datetime64) -> pd.DataFrame:
    """The rows of ``frame`` with ``ts`` strictly before ``t``: on a frame in time order
    (:func:`in_time_order`) a slice sharing its memory, else a filtered copy (on the 16×
    tiled log a copy is ~0.35 GB; docs/results.md, #19)."""
    ts = frame["ts"]
    if ts.is_monotonic_increasing:
        return frame.iloc[: int(ts.searchsorted(pd.Timestamp(t), side="left"))]
    return frame[ts.to_numpy() < np.datetime64(pd.Timestamp(t), "ns")]
