"""Where a stacked training frame is held, as the propensity models read it.

A model fits from a frame's columns and from row-wise functions of it
(:class:`servable.propensity.ChurnModel`), never from the frame as a whole, so the same
code fits a frame in this process (:class:`FrameRows`, numpy arrays) and one held by a Dask
cluster's workers (``features.distributed.ClusterRows``, Dask arrays with the same
indexing, comparisons and ufuncs): only the rows at one cutoff are brought here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = ["Array", "FrameRows", "TrainingRows", "as_rows"]

#: a column or matrix of a training frame: a numpy array, or a Dask array on a cluster
Array = Any


class TrainingRows(Protocol):
    """A stacked training frame (features + labels + a ``cutoff`` column per row)."""

    @property
    def columns(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def newest(self) -> pd.Timestamp:
        """The newest cutoff stacked."""
        ...

    def at(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The rows at one cutoff, in this process."""
        ...

    def column(self, name: str) -> Array:
        """One column as an array, row-aligned with :meth:`rowwise`."""
        ...

    def rowwise(self, fn: Callable[[pd.DataFrame], np.ndarray], width: int) -> Array:
        """``fn`` (rows → ``width`` values per row) over every row, as one 2-D array."""
        ...


class FrameRows:
    """A training frame in this process: its columns are numpy arrays."""

    def __init__(self, frame: pd.DataFrame) -> None:
        if "cutoff" not in frame.columns:
            raise ValueError("need a stacked training frame with a 'cutoff' column")
        self.frame = frame

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame)

    def newest(self) -> pd.Timestamp:
        return self.frame["cutoff"].max()

    def at(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        return self.frame[self.frame["cutoff"] == cutoff]

    def column(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy()

    def rowwise(self, fn: Callable[[pd.DataFrame], np.ndarray], width: int) -> np.ndarray:
        return fn(self.frame)


def as_rows(frame: pd.DataFrame | TrainingRows) -> TrainingRows:
    """A stacked frame as :class:`TrainingRows` (a pandas frame is wrapped)."""
    return FrameRows(frame) if isinstance(frame, pd.DataFrame) else frame
