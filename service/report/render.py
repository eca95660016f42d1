"""A campaign report as Markdown or HTML with its PNG charts (gain curve, lift by segment)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from service.report.analysis import WAKE_STAGES, CampaignReport, Estimate

__all__ = ["gain_chart", "segment_chart", "write_report"]

_DPI = 120  # as training/plots.py (service never imports training)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "campaign"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _money(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f}"


def _lift(e: Estimate | None, pp: bool) -> str:
    if e is None:
        return "–"
    if pp:
        return f"{100 * e.estimate:+.1f} pp [{100 * e.low:.1f}, {100 * e.high:.1f}]"
    return f"{e.estimate:+,.2f} [{e.low:,.2f}, {e.high:,.2f}]"


def _tables(r: CampaignReport) -> list[tuple[str, list[str], list[list[str]]]]:
    o = r.overall
    t, h = o.treated, o.holdout
    overall = [
        ["customers (decisions)", f"{t.customers:,}", f"{h.customers:,}", ""],
        ["conversion", _pct(t.conversion), _pct(h.conversion), _lift(o.conversion_lift, True)],
        [
            f"wake-up rate ({'/'.join(WAKE_STAGES)})",
            f"{_pct(t.wake_up_rate)} of {t.asleep:,}",
            f"{_pct(h.wake_up_rate)} of {h.asleep:,}",
            _lift(o.wake_up_lift, True),
        ],
        [
            f"revenue per customer ({r.currency})",
            _money(t.revenue_per_customer),
            _money(h.revenue_per_customer),
            _lift(o.revenue_per_customer_lift, False),
        ],
        ["orders", f"{t.orders:,}", f"{h.orders:,}", ""],
        ["average order value", _money(t.average_order_value), _money(h.average_order_value), ""],
        ["revenue", _money(t.revenue), _money(h.revenue), _lift(o.incremental_revenue, False)],
        ["incentive cost", _money(t.incentive_cost), _money(h.incentive_cost), ""],
        ["contact cost", _money(t.contact_cost), _money(h.contact_cost), ""],
        ["ROI", "–" if o.roi is None else f"{o.roi:,.1f}×", "", ""],
    ]
    channels = [
        [
            c.channel,
            f"{c.contacted:,}",
            f"{c.sent:,}",
            _pct(c.open_rate),
            _pct(c.click_rate),
        ]
        for c in t.channels
    ]
    segments = [
        [
            str(s.stage),
            str(s.tier),
            f"{s.treated.customers:,}",
            f"{s.holdout.customers:,}",
            _pct(s.treated.conversion),
            _pct(s.holdout.conversion),
            _lift(s.conversion_lift, True),
            _lift(s.revenue_per_customer_lift, False),
            "yes" if s.significant else "no",
        ]
        for s in r.segments
    ]
    touches = [
        [
            c.channel,
            f"{c.touches:,}",
            *(f"{v:,.1f}" for v in (c.last_touch, c.first_touch, c.linear, c.time_decay, c.markov)),
            f"{c.removal_effect:.3f}",
        ]
        for c in r.channel_attribution
    ]
    return [
        ("Treated vs hold-out", ["", "treated", "hold-out", "lift [95% CI]"], overall),
        (
            "Channels (treated)",
            ["channel", "contacted", "sent", "open rate", "click rate"],
            channels,
        ),
        (
            "Segments (stage × tier)",
            [
                "stage",
                "tier",
                "treated",
                "hold-out",
                "conv. treated",
                "conv. hold-out",
                "conversion lift [95% CI]",
                f"revenue/customer lift ({r.currency})",
                "significant",
            ],
            segments,
        ),
        (
            "Channel attribution (conversions credited per rule)",
            [
                "channel",
                "touches",
                "last touch",
                "first touch",
                "linear",
                "time decay",
                "Markov",
                "removal effect",
            ],
            touches,
        ),
    ]


def _period(r: CampaignReport) -> str:
    """The requested period, else the decisions' own span."""
    a = r.start or r.first_decision_at
    b = r.end or r.last_decision_at
    if a is None or b is None:
        return "(none)"
    return f"{a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M} UTC"


def _markdown(r: CampaignReport, charts: Sequence[Path]) -> str:
    lines = [
        f"# Campaign report: {r.campaign_id}",
        "",
        f"Decisions {_period(r)}: {r.decisions:,} ({r.eligible:,} eligible, "
        f"{r.not_eligible:,} not); {r.attributed_orders:,} attributed orders, "
        f"{r.currency} {r.attributed_revenue:,.2f}.",
        "",
        f"**{r.overall.statement}**; {r.overall.revenue_statement}.",
        "",
    ]
    for title, head, rows in _tables(r):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += ["## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts] + [""]
    lines += ["## Method", ""] + [f"* {n}" for n in r.notes] + [""]
    return "\n".join(lines)


def _html(r: CampaignReport, charts: Sequence[Path]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Campaign report: {e(r.campaign_id)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td{text-align:right}td:first-child{text-align:left}</style></head><body>",
        f"<h1>Campaign report: {e(r.campaign_id)}</h1>",
        f"<p>Decisions {e(_period(r))}: {r.decisions:,} ({r.eligible:,} eligible, "
        f"{r.not_eligible:,} not); {r.attributed_orders:,} attributed orders, "
        f"{e(r.currency)} {r.attributed_revenue:,.2f}.</p>",
        f"<p><b>{e(r.overall.statement)}</b>; {e(r.overall.revenue_statement)}.</p>",
    ]
    for title, head, rows in _tables(r):
        parts.append(f"<h2>{e(title)}</h2><table><tr>")
        parts += [f"<th>{e(h)}</th>" for h in head]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Charts</h2>")
    parts += [f"<p><img src='{e(p.name)}' alt='{e(p.stem)}'></p>" for p in charts]
    parts.append("<h2>Method</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")  # type: ignore[attr-defined]
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return path


def gain_chart(r: CampaignReport, path: Path) -> Path:
    """Cumulative incremental conversions by share of decisions targeted (by priority)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * g.share for g in r.gain]
    y = [g.incremental_conversions for g in r.gain]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(x, y, label="campaign (ranked by priority)")
    ax.plot([0, 100], [0, y[-1]], "k--", lw=1, label="random targeting")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(
        xlabel="decisions targeted, highest priority first (%)",
        ylabel="incremental conversions",
        title=f"Cumulative gain — {r.campaign_id}",
        xlim=(0, 100),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def segment_chart(r: CampaignReport, path: Path) -> Path:
    """Conversion lift with its interval, overall and per stage × tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("all eligible", r.overall)] + [(f"{s.stage} × {s.tier}", s) for s in r.segments]
    rows = [(name, c.conversion_lift) for name, c in rows if c.conversion_lift is not None]
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(rows), 1) + 1.5))
    for i, (_, e) in enumerate(rows):
        colour = "tab:green" if e.low > 0 else ("tab:red" if e.high < 0 else "tab:grey")
        ax.errorbar(
            100 * e.estimate,
            i,
            xerr=[[100 * (e.estimate - e.low)], [100 * (e.high - e.estimate)]],
            fmt="o",
            color=colour,
            capsize=3,
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set(
        xlabel=f"conversion lift, treated − hold-out (pp, {r.confidence:.0%} CI)",
        title=f"Lift by segment — {r.campaign_id}",
    )
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def write_report(report: CampaignReport, out_dir: str | Path, fmt: str = "md") -> Path:
    """Write ``<campaign>-report.<md|html>`` and its PNG charts into ``out_dir``; the path."""
    if fmt not in ("md", "html"):
        raise ValueError(f"format must be 'md' or 'html', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _safe(report.campaign_id)
    charts = [
        gain_chart(report, out / f"{stem}-gain.png"),
        segment_chart(report, out / f"{stem}-segments.png"),
    ]
    text = _markdown(report, charts) if fmt == "md" else _html(report, charts)
    path = out / f"{stem}-report.{fmt}"
    path.write_text(text, encoding="utf-8")
    return path
