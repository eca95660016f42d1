"""Input checks shared by the served models' ``fit`` and training's metrics (numpy only).

They live here, not in :mod:`training.metrics`, so the uplift learners can validate their
inputs without importing scikit-learn; training re-exports them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["binary_flags", "finite_values", "is_binary"]


def binary_flags(name: str, values: ArrayLike, what: str = "0/1 flags") -> np.ndarray:
    """``values`` checked to be a non-empty 1-D array of 0/1 (or booleans), as floats."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    flt = arr.astype(float)
    if not np.all((flt == 0) | (flt == 1)):
        raise ValueError(f"{name} must hold {what} (or booleans)")
    return flt


def finite_values(name: str, values: ArrayLike, n: int, against: str = "y") -> np.ndarray:
    """``values`` checked to be a 1-D array of ``n`` finite numbers (``n`` = len(``against``))."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"length mismatch: {against} has {n} rows, {name} has {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def is_binary(y: np.ndarray) -> bool:
    """Every value is 0 or 1 (a binary outcome)."""
    return bool(np.all((y == 0) | (y == 1)))
