"""The evaluation protocol: which training cutoffs a backtest origin gets, and the origins.

**Training cutoffs** (:func:`choose_protocol`): the standard protocol stacks cutoffs every
``step_days`` with ``min_history_days`` of history before the first; a log too short for
``SHORT_HISTORY_BELOW`` of them before an origin (12–18 months with a 90-day horizon) gets
the short-history protocol — 90 days of history and a cutoff every 14 days — so that enough
labelled cutoffs fit. The choice is returned with its name and why, to be printed and logged.

**Rolling origins** (:func:`plan_origins`; Tashman 2000, "Out-of-sample tests of forecasting
accuracy"): the newest origin is the backtest cutoff; each older one is a horizon earlier,
so the label windows tile the end of the log without overlapping and, on a log of a year or
more, one of them covers any given season. An origin is kept only if some protocol fits a
purged validation fold before it (cutoffs spanning at least one horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

import pandas as pd

from features.labels import training_cutoffs

__all__ = [
    "SHORT_HISTORY",
    "SHORT_HISTORY_BELOW",
    "CutoffSettings",
    "Origin",
    "choose_protocol",
    "cutoff_kw",
    "plan_origins",
]

# Fewer training cutoffs than this under the standard protocol: the short-history protocol
SHORT_HISTORY_BELOW = 4
SHORT_HISTORY = {"min_history_days": 90, "step_days": 14}


class CutoffSettings(Protocol):
    """What the protocol reads from a (dataclass) config such as ``TrainConfig``."""

    horizon: int
    step_days: int
    min_history_days: int
    max_cutoffs: int


S = TypeVar("S", bound=CutoffSettings)


def cutoff_kw(cfg: CutoffSettings) -> dict[str, int]:
    """The keyword arguments of :func:`features.labels.training_cutoffs` for ``cfg``."""
    return {
        "horizon": cfg.horizon,
        "step_days": cfg.step_days,
        "max_cutoffs": cfg.max_cutoffs,
        "min_history_days": cfg.min_history_days,
    }


def _fitting(tx: pd.DataFrame, origin: pd.Timestamp, cfg: CutoffSettings) -> int:
    try:
        return len(training_cutoffs(tx, origin, **cutoff_kw(cfg)))
    except ValueError:
        return 0


def choose_protocol(tx: pd.DataFrame, origin: pd.Timestamp, cfg: S) -> tuple[S, str, str]:
    """The training protocol for models evaluated at ``origin``: the settings (``cfg``
    itself, or a copy with the short-history ones), the protocol's name and why. The
    horizon is the caller's, unchanged."""
    span = (tx["ts"].max() - tx["ts"].min()).days
    n = _fitting(tx, origin, cfg)
    short = replace(  # type: ignore[type-var]
        cfg,
        min_history_days=min(cfg.min_history_days, SHORT_HISTORY["min_history_days"]),
        step_days=min(cfg.step_days, SHORT_HISTORY["step_days"]),
    )
    n_short = _fitting(tx, origin, short)
    if n >= SHORT_HISTORY_BELOW or n_short <= n:
        return (
            cfg,
            "standard",
            f"{span} d of log: {n} training cutoffs every {cfg.step_days} d after "
            f"{cfg.min_history_days} d of history, horizon {cfg.horizon} d",
        )
    return (
        short,
        "short history",
        f"{span} d of log: the standard protocol fits {n} training cutoffs, fewer than "
        f"{SHORT_HISTORY_BELOW}; {n_short} cutoffs every {short.step_days} d after "
        f"{short.min_history_days} d of history, horizon {cfg.horizon} d",
    )


@dataclass(frozen=True)
class Origin:
    """One backtest origin: models see rows before ``cutoff`` and are scored on the
    ``horizon`` days after it; they train on ``train_cutoffs`` under ``protocol``."""

    cutoff: pd.Timestamp
    horizon: int
    train_cutoffs: tuple[pd.Timestamp, ...]
    protocol: str
    why: str

    @property
    def label(self) -> str:
        """``2011-06-03`` — how tables and metric keys name the origin."""
        return str(self.cutoff.date())

    @property
    def window(self) -> str:
        """The label window, e.g. ``Jun 2011–Aug 2011``."""
        end = self.cutoff + pd.Timedelta(days=self.horizon - 1)
        return f"{self.cutoff:%d %b %Y}–{end:%d %b %Y}"


def plan_origins(
    tx: pd.DataFrame, newest: pd.Timestamp, cfg: CutoffSettings, n_origins: int
) -> tuple[list[Origin], list[str]]:
    """Up to ``n_origins`` origins, newest first, one horizon apart, each with the protocol
    :func:`choose_protocol` picks for it; and why each left-out origin was left out."""
    origins: list[Origin] = []
    dropped: list[str] = []
    for k in range(n_origins):
        cutoff = newest - pd.Timedelta(days=k * cfg.horizon)
        chosen, name, why = choose_protocol(tx, cutoff, cfg)
        try:
            cutoffs = training_cutoffs(tx, cutoff, **cutoff_kw(chosen))
        except ValueError as exc:
            dropped.append(f"{cutoff.date()}: {exc}")
            continue
        if (cutoffs[0] - cutoffs[-1]).days < cfg.horizon:  # no purged validation fold
            dropped.append(
                f"{cutoff.date()}: its {len(cutoffs)} training cutoffs span less than the "
                f"{cfg.horizon}-day horizon (no purged validation fold)"
            )
            continue
        origins.append(Origin(cutoff, cfg.horizon, tuple(cutoffs), name, why))
    return origins, dropped
