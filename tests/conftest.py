"""Shared fixtures: a synthetic transaction log with a known churn signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features  # noqa: F401  (sets thread/env defaults before heavy imports)
from features.contracts import validate_transactions


def synthetic_log(n_customers: int = 300, days: int = 540, seed: int = 0) -> pd.DataFrame:
    """Customers buy as Poisson processes with their own rate until a random death day.

    Half of them die at a random point in the log, so recency and frequency carry a real,
    learnable churn signal; items come from two families so cross-sell code has structure.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2020-01-01")
    rows = []
    for c in range(n_customers):
        rate = rng.uniform(1 / 60, 1 / 7)  # orders per day
        birth = rng.uniform(0, days * 0.5)
        death = rng.uniform(birth, days * 1.5) if c % 2 else days * 2
        t = birth
        k = 0
        while True:
            t += rng.exponential(1 / rate)
            if t >= min(death, days):
                break
            fam = 10000 + 100 * (c % 2)
            for j in range(int(rng.integers(1, 4))):
                rows.append(
                    (
                        f"C{c:04d}",
                        f"O{c:04d}-{k}",
                        start + pd.Timedelta(days=t),
                        f"{fam + int(rng.integers(0, 6))}",
                        float(rng.integers(1, 5)),
                        float(rng.uniform(1, 10)) + j,
                    )
                )
            k += 1
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    )
    return validate_transactions(df.sort_values("ts").reset_index(drop=True), "synthetic")


@pytest.fixture(scope="session")
def synthetic_tx() -> pd.DataFrame:
    return synthetic_log()
