"""Evaluation figures saved as PNG (matplotlib, headless Agg backend).

Cumulative-gain / decile-lift chart, reliability diagram and feature-importance bars, logged as
MLflow artifacts next to the metrics of :mod:`training.metrics`. Every function writes one
file, closes its figure (no leaks in long training runs) and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from training.metrics import (  # noqa: E402
    calibration_bins,
    cumulative_gain,
    decile_lift,
    expected_calibration_error,
    lift_quality,
)

__all__ = ["calibration_curve", "calibration_curves", "feature_importance", "lift_chart"]

_DPI = 120


def _save(fig: plt.Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def _check_models(kind: str, models: Mapping[str, Any]) -> None:
    if not models:
        raise ValueError(f"{kind} is empty: pass at least one model")


def lift_chart(y: ArrayLike, scores: Mapping[str, ArrayLike], path: str | Path) -> Path:
    """Cumulative-gain curves of several models vs random and perfect, plus decile-lift bars.

    Left: share of positives captured vs share of customers targeted (legend shows each
    model's :func:`~training.metrics.lift_quality`). Right: lift of each score decile.
    """
    _check_models("scores", scores)
    labels = np.asarray(y)
    curves = {name: cumulative_gain(labels, s) for name, s in scores.items()}
    lifts = {name: decile_lift(labels, s) for name, s in scores.items()}
    quality = {name: lift_quality(labels, s) for name, s in scores.items()}
    pi = float(np.mean(labels))

    fig, (ax_gain, ax_lift) = plt.subplots(1, 2, figsize=(13, 5))
    for name, (x, g) in curves.items():
        ax_gain.plot(100 * x, 100 * g, label=f"{name} (lift quality {quality[name]:.3f})")
    ax_gain.plot([0, 100], [0, 100], "k--", lw=1, label="random")
    ax_gain.plot([0, 100 * pi, 100], [0, 100, 100], "k:", lw=1, label="perfect")
    ax_gain.set(
        xlabel="customers targeted (%)",
        ylabel="positives captured (%)",
        title="Cumulative gain",
        xlim=(0, 100),
        ylim=(0, 101),
    )
    ax_gain.legend(loc="lower right", fontsize=8)
    ax_gain.grid(alpha=0.3)

    deciles = np.arange(1, 11)
    width = 0.8 / len(lifts)
    for i, (name, lift) in enumerate(lifts.items()):
        ax_lift.bar(deciles + (i - (len(lifts) - 1) / 2) * width, lift, width=width, label=name)
    ax_lift.axhline(1.0, color="k", ls="--", lw=1, label="random")
    ax_lift.set(
        xlabel="score decile (1 = highest)",
        ylabel="lift (decile positive rate / overall)",
        title=f"Decile lift (positive rate {pi:.1%}, n={labels.size})",
        xticks=deciles,
    )
    ax_lift.legend(fontsize=8)
    ax_lift.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def calibration_curve(
    y: ArrayLike, probs: Mapping[str, ArrayLike], path: str | Path, n_bins: int = 10
) -> Path:
    """Reliability diagram (observed rate vs mean prediction per equal-width bin, with the
    diagonal) above a histogram of the predicted probabilities."""
    _check_models("probs", probs)
    return calibration_curves({name: (y, p) for name, p in probs.items()}, path, n_bins)


def calibration_curves(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], path: str | Path, n_bins: int = 10
) -> Path:
    """:func:`calibration_curve` for curves with their own labels, e.g. one per backtest
    origin: ``{name: (y, p)}``."""
    _check_models("curves", curves)
    fig, (ax_rel, ax_hist) = plt.subplots(
        2, 1, figsize=(7, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_rel.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for name, (y, p) in curves.items():
        labels = np.asarray(y)
        mean_p, rate, counts = calibration_bins(labels, p, n_bins)
        used = counts > 0
        ece = expected_calibration_error(labels, p, n_bins)
        ax_rel.plot(mean_p[used], rate[used], "o-", label=f"{name} (ECE {ece:.3f})")
        ax_hist.hist(np.asarray(p, dtype=float), bins=edges, histtype="step", lw=1.5, label=name)
    ax_rel.set(
        ylabel="observed positive rate",
        title="Reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1.03),
    )
    ax_rel.legend(loc="upper left", fontsize=8)
    ax_rel.grid(alpha=0.3)
    ax_hist.set(xlabel="predicted probability", ylabel="customers")
    ax_hist.grid(alpha=0.3)
    return _save(fig, path)


def feature_importance(
    names: Sequence[str], importances: ArrayLike, path: str | Path, top: int = 25
) -> Path:
    """Horizontal bars of the ``top`` largest importances (e.g. LightGBM gain), largest on top."""
    values = np.asarray(importances, dtype=float)
    labels = [str(n) for n in names]
    if values.ndim != 1 or values.size != len(labels):
        raise ValueError(
            f"length mismatch: {len(labels)} names, importances of shape {values.shape}"
        )
    if values.size == 0:
        raise ValueError("no features to plot")
    if not np.all(np.isfinite(values)):
        raise ValueError("importances contain NaN or infinite values")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    order = np.argsort(-values, kind="stable")[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * order.size))
    ax.barh([labels[i] for i in order], values[order], color="tab:blue")
    ax.set(
        xlabel="importance",
        title=f"Feature importance (top {order.size} of {values.size})",
    )
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
