"""The Hillstrom offer-uplift experiment: every learner x arm x outcome on repeated splits.

Each e-mail arm against the no-e-mail arm, outcomes visit (primary), conversion and spend, on
stratified (arm x visit x conversion) 50/50 splits of all 64,000 customers; split 0 (seed
``seed``) is the fixed split, the table reports mean and sample standard deviation over
``n_splits`` seeds. :mod:`training.uplift.train` then refits the chosen learner on every row
for each arm (visit) and registers it as one pyfunc ``offer_uplift`` behind the champion gate
(gate metric: mean Qini, men's e-mail, visit; baselines: random = 0 and the response model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.uplift.design import (
    ARMS,
    CONTROL,
    GATE_OUTCOME,
    HILLSTROM_FEATURES,
    METRICS,
    MODELS,
    OUTCOMES,
)
from training.uplift.learners import UpliftParams, make_learner
from training.uplift.metrics import decile_uplift, perfect_qini_curve, qini_curve, uplift_report

__all__ = ["UpliftExperiment", "run_experiment", "stratified_halves", "summary_markdown"]


def stratified_halves(df: pd.DataFrame, seed: int) -> np.ndarray:
    """A 50/50 split stratified by arm x visit x conversion; True = training half."""
    from sklearn.model_selection import train_test_split

    strata = (
        df["treatment"].astype(str)
        + "|"
        + df["visit"].astype(int).astype(str)
        + "|"
        + df["conversion"].astype(int).astype(str)
    )
    train_idx, _ = train_test_split(
        np.arange(len(df)), test_size=0.5, random_state=seed, stratify=strata.to_numpy()
    )
    mask = np.zeros(len(df), dtype=bool)
    mask[train_idx] = True
    return mask


@dataclass
class UpliftExperiment:
    """What :func:`run_experiment` measured."""

    scores: pd.DataFrame  # long: seed, arm, outcome, model, metric, value
    summary: pd.DataFrame  # arm, outcome, model, metric, mean, std, fixed
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # arm -> model -> Qini curve
    deciles: dict[str, dict[str, np.ndarray]]  # arm -> model -> uplift per decile
    seeds: list[int]
    seconds: float
    params: UpliftParams

    def mean(
        self, arm: str, outcome: str, model: str, metric: str = "qini", stat: str = "mean"
    ) -> float:
        """A summary value: ``stat`` is ``mean``, ``std`` or ``fixed`` (the fixed split)."""
        s = self.summary
        sel = s[(s.arm == arm) & (s.outcome == outcome) & (s.model == model) & (s.metric == metric)]
        if sel.empty:
            raise KeyError(f"no {metric} for {arm}/{outcome}/{model}")
        return float(sel[stat].iloc[0])


def run_experiment(
    df: pd.DataFrame,
    arms: tuple[str, ...] = ARMS,
    outcomes: tuple[str, ...] = OUTCOMES,
    n_splits: int = 5,
    seed: int = 0,
    params: UpliftParams | None = None,
    models: tuple[str, ...] = MODELS,
    log: Any = None,
) -> UpliftExperiment:
    """Every model x arm x outcome on ``n_splits`` stratified 50/50 splits (seeds
    ``seed .. seed + n_splits - 1``; the first is the fixed split whose curves are kept)."""
    params = params or UpliftParams()
    started = time.perf_counter()
    seeds = [seed + i for i in range(n_splits)]
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    deciles: dict[str, dict[str, np.ndarray]] = {}
    x_all = df[HILLSTROM_FEATURES]
    for split_no, s in enumerate(seeds):
        train = stratified_halves(df, s)
        for arm in arms:
            in_arm = df["treatment"].isin([arm, CONTROL]).to_numpy()
            tr, te = in_arm & train, in_arm & ~train
            t_tr = (df["treatment"].to_numpy()[tr] == arm).astype(float)
            t_te = (df["treatment"].to_numpy()[te] == arm).astype(float)
            for outcome in outcomes:
                y = df[outcome].to_numpy(dtype=float)
                for name in models:
                    model = make_learner(name, params, seed=s).fit(x_all[tr], t_tr, y[tr])
                    u = model.predict_uplift(x_all[te])
                    for metric, value in uplift_report(y[te], u, t_te).items():
                        rows.append(
                            {
                                "seed": s,
                                "arm": arm,
                                "outcome": outcome,
                                "model": name,
                                "metric": metric,
                                "value": value,
                            }
                        )
                    if split_no == 0 and outcome == GATE_OUTCOME:
                        curves.setdefault(arm, {})[name] = qini_curve(y[te], u, t_te)
                        deciles.setdefault(arm, {})[name] = decile_uplift(y[te], u, t_te)
                if split_no == 0 and outcome == GATE_OUTCOME:
                    curves[arm]["perfect"] = perfect_qini_curve(y[te], t_te)
            if log is not None:
                log(f"    split {split_no + 1}/{n_splits} (seed {s}) {arm}: done")
    scores = pd.DataFrame(rows)
    keys = ["arm", "outcome", "model", "metric"]
    summary = (
        scores.groupby(keys, sort=False)["value"]
        .agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        .reset_index()
    )
    fixed = scores[scores.seed == seeds[0]].set_index(keys)["value"]
    summary["fixed"] = [fixed[tuple(r)] for r in summary[keys].itertuples(index=False)]
    return UpliftExperiment(
        scores, summary, curves, deciles, seeds, time.perf_counter() - started, params
    )


_HEADERS = {"qini": "Qini", "auuc": "AUUC", "uplift_at_30": "uplift@30%"}


def summary_markdown(summary: pd.DataFrame) -> str:
    """Rows arm x outcome x model; cells ``mean ± std`` over the splits."""
    wide = summary.pivot_table(
        index=["arm", "outcome", "model"],
        columns="metric",
        values=["mean", "std"],
        sort=False,
    )
    metrics = [m for m in METRICS if ("mean", m) in wide.columns]
    lines = [
        "| arm | outcome | model | " + " | ".join(_HEADERS[m] for m in metrics) + " |",
        "|---|---|---|" + "---:|" * len(metrics),
    ]
    for (arm, outcome, model), row in wide.iterrows():
        cells = [f"{row[('mean', m)]:.4f} ± {row[('std', m)]:.4f}" for m in metrics]
        lines.append(f"| {arm} | {outcome} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
