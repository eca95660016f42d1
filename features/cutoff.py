"""The cutoff as one typed value: a date from a command line or a config, parsed once.

Every feature, label and model function takes a ``pd.Timestamp`` cutoff and never re-parses
it; the boundaries (CLI arguments, ``TrainConfig``) call :func:`parse_cutoff`.
"""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

__all__ = ["parse_cutoff"]


def parse_cutoff(value: str | date | datetime | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a ``pd.Timestamp``; ``ValueError`` naming the value if it is not a date."""
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"cannot parse {value!r} as a date") from None
    if pd.isna(t):
        raise ValueError(f"cannot parse {value!r} as a date")
    return t
