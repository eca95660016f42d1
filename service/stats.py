"""Confidence intervals for treated-vs-hold-out comparisons.

* :func:`wilson` — the Wilson score interval of one proportion (Wilson 1927).
* :func:`newcombe` — the difference of two independent proportions by Newcombe's hybrid
  score method (method 10 of Newcombe 1998, *Statistics in Medicine* 17:873-890): good
  coverage even for small counts and rates near 0 or 1, where the Wald interval fails.
* :func:`bootstrap_mean_diff` — the difference of two means by the percentile bootstrap
  (Efron & Tibshirani 1993), resampling each group independently with a fixed seed, for
  skewed outcomes such as revenue per customer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Interval", "bootstrap_mean_diff", "newcombe", "wilson", "z_value"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (1.959964 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for ``successes / n``."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_value(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Interval:
    """Interval for ``x1/n1 - x2/n2`` by Newcombe's hybrid score method (method 10)."""
    a, b = wilson(x1, n1, confidence), wilson(x2, n2, confidence)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, low, high)


def bootstrap_mean_diff(
    treated: ArrayLike,
    control: ArrayLike,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    chunk: int = 200,
) -> Interval:
    """Percentile-bootstrap interval for ``mean(treated) - mean(control)``.

    Each group is resampled with replacement on its own (the groups are independent
    samples); ``chunk`` resamples are drawn at a time to bound memory. Deterministic for a
    given ``seed``.
    """
    t = np.asarray(treated, float)
    c = np.asarray(control, float)
    if len(t) == 0 or len(c) == 0:
        raise ValueError("both groups need at least one value")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for lo in range(0, resamples, chunk):
        k = min(chunk, resamples - lo)
        mt = t[rng.integers(0, len(t), size=(k, len(t)))].mean(axis=1)
        mc = c[rng.integers(0, len(c), size=(k, len(c)))].mean(axis=1)
        diffs[lo : lo + k] = mt - mc
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return Interval(float(t.mean() - c.mean()), float(low), float(high))
