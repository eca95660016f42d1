"""The Qini figure of the experiment: curves, gain above random, observed uplift per decile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["qini_plot"]


def qini_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    deciles: dict[str, np.ndarray],
    path: str | Path,
    title: str,
    qini: dict[str, float] | None = None,
) -> Path:
    """Three panels: Qini curves with the perfect curve and the random line; each curve minus
    the random line (the gain the Qini coefficient integrates); observed uplift per decile of
    predicted uplift. ``curves`` maps names to :func:`qini_curve` output (``"perfect"``
    dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("curves is empty: pass at least one model")
    fig, (ax_q, ax_g, ax_d) = plt.subplots(1, 3, figsize=(19, 5))
    n = max(float(x[-1]) for x, _ in curves.values())
    end = float(next(iter(curves.values()))[1][-1])
    for name, (x, q) in curves.items():
        label = name if not qini or name not in qini else f"{name} (Qini {qini[name]:.3f})"
        style = {"color": "k", "ls": ":", "lw": 1} if name == "perfect" else {}
        ax_q.plot(100 * x / n, q, label=label, **style)
        if name != "perfect":
            ax_g.plot(100 * x / n, q - end * x / n, label=label)
    ax_q.plot([0, 100], [0, end], "k--", lw=1, label="random (line)")
    ax_q.set(
        xlabel="customers targeted (%)",
        ylabel="incremental responders (Qini curve)",
        title=title,
        xlim=(0, 100),
    )
    ax_g.axhline(0.0, color="k", ls="--", lw=1, label="random (line)")
    ax_g.set(
        xlabel="customers targeted (%)",
        ylabel="incremental responders above the random line",
        title="Qini curve minus random",
        xlim=(0, 100),
    )
    for ax in (ax_q, ax_g):
        ax.legend(fontsize=8, loc="upper left" if ax is ax_g else "lower right")
        ax.grid(alpha=0.3)
    width = 0.8 / max(len(deciles), 1)
    d = np.arange(1, 11)
    for i, (name, values) in enumerate(deciles.items()):
        ax_d.bar(d + (i - (len(deciles) - 1) / 2) * width, values, width=width, label=name)
    ax_d.axhline(0.0, color="k", lw=1)
    ax_d.set(
        xlabel="decile of predicted uplift (1 = highest)",
        ylabel="treated − control mean outcome",
        title="Observed uplift per decile",
        xticks=d,
    )
    ax_d.legend(fontsize=8)
    ax_d.grid(alpha=0.3, axis="y")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
