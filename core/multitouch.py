"""Multi-touch channel attribution: which channels carry the conversions.

A customer sees a product on WeChat, gets an e-mail, searches and buys: which channel
mattered? The decision-level attribution (:mod:`core.attribution`, last touch within a
window) answers for one campaign's hold-out comparison; this module spreads each conversion
over the *path* of channel touches before it, by five rules:

* ``last_touch`` / ``first_touch``: all credit to the last / first touch of the path;
* ``linear``: equal credit to every touch;
* ``time_decay``: credit ∝ ``2 ** (-age / half_life)`` of each touch at the conversion;
* ``markov``: the data-driven removal effect of a first-order Markov chain over all paths,
  converting or not (Anderl, Becker, von Wangenheim & Schumann, "Mapping the customer
  journey: lessons learned from graph-based online attribution modeling", IJRM 2016). The
  chain runs start → channel → … → conversion | null; a channel's removal effect is the
  share of the conversion probability lost when every transition into it goes to null
  instead; conversions are credited in proportion to the removal effects.

Paths (:func:`build_paths`): a conversion's path is the customer's touches in the
``lookback`` before it and after their previous conversion; the touches after a customer's
last conversion form a path that did not convert. Repeated touches of one channel in a row
count once for the chain (a self-loop says nothing about which channel helps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

__all__ = ["MODELS", "TouchPath", "build_paths", "channel_attribution", "removal_effects"]

MODELS = ("last_touch", "first_touch", "linear", "time_decay", "markov")


@dataclass(frozen=True)
class TouchPath:
    """One customer's touches (channel, seconds before the end) and whether it converted."""

    channels: tuple[str, ...]
    ages: tuple[float, ...]  # seconds from each touch to the conversion (or the path's end)
    converted: bool


def _frame(df: pd.DataFrame, columns: tuple[str, ...], name: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    out = df.loc[:, list(columns)].dropna()
    out["ts"] = pd.to_datetime(out["ts"], utc=True)
    return out.sort_values(["customer_id", "ts"], kind="stable")


def build_paths(
    touches: pd.DataFrame, conversions: pd.DataFrame, lookback: timedelta
) -> list[TouchPath]:
    """Paths from ``touches`` (customer_id, ts, channel) and ``conversions`` (customer_id,
    ts); conversions with no touch in their lookback are left out (nothing to credit)."""
    if lookback <= timedelta(0):
        raise ValueError(f"lookback must be positive, got {lookback}")
    t = _frame(touches, ("customer_id", "ts", "channel"), "touches")
    c = _frame(conversions, ("customer_id", "ts"), "conversions")
    by_customer = {k: g for k, g in c.groupby("customer_id", sort=False)}
    paths: list[TouchPath] = []
    for cid, group in t.groupby("customer_id", sort=False):
        times = group["ts"].to_numpy(dtype="datetime64[ns]").astype("int64") / 1e9
        channels = group["channel"].astype(str).to_numpy()
        done = -np.inf  # the previous conversion's time: its touches are spent
        conv = by_customer.get(cid)
        for at in [] if conv is None else conv["ts"].to_numpy("datetime64[ns]").astype("int64"):
            at = at / 1e9
            mask = (times > done) & (times <= at) & (times > at - lookback.total_seconds())
            if mask.any():
                paths.append(
                    TouchPath(tuple(channels[mask]), tuple(at - times[mask]), converted=True)
                )
            done = max(done, at)
        rest = times > done
        if rest.any():
            end = times[rest].max()
            paths.append(TouchPath(tuple(channels[rest]), tuple(end - times[rest]), False))
    return paths


def removal_effects(paths: list[TouchPath]) -> dict[str, float]:
    """Per channel, the share of the chain's conversion probability lost without it."""
    channels = sorted({ch for p in paths for ch in p.channels})
    if not channels or not any(p.converted for p in paths):
        return {ch: 0.0 for ch in channels}
    index = {ch: i + 1 for i, ch in enumerate(channels)}  # 0: start
    n = len(channels) + 1
    counts = np.zeros((n, n + 2))  # to transient states, then conversion, null
    for p in paths:
        states = [0]
        for ch in p.channels:
            if index[ch] != states[-1]:
                states.append(index[ch])
        for a, b in zip(states[:-1], states[1:], strict=True):
            counts[a, b] += 1
        counts[states[-1], n if p.converted else n + 1] += 1
    rows = counts.sum(axis=1, keepdims=True)
    probs = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    q, r = probs[:, :n], probs[:, n]

    def p_convert(without: int | None) -> float:
        qq, rr = q.copy(), r.copy()
        if without is not None:  # every transition into it ends the path unconverted
            qq[:, without] = 0.0
            qq[without, :] = 0.0
            rr[without] = 0.0
        return float(np.linalg.solve(np.eye(n) - qq, rr)[0])

    base = p_convert(None)
    return {ch: max(0.0, 1.0 - p_convert(index[ch]) / base) for ch in channels}


def channel_attribution(
    touches: pd.DataFrame,
    conversions: pd.DataFrame,
    lookback: timedelta,
    half_life: timedelta = timedelta(days=7),
) -> pd.DataFrame:
    """Conversions credited to each channel by every rule of :data:`MODELS`, one row per
    channel (sorted by the Markov credit), plus ``touches`` and ``removal_effect``; each
    rule's column sums to the conversions that had a touch in their lookback."""
    if half_life <= timedelta(0):
        raise ValueError(f"half_life must be positive, got {half_life}")
    paths = build_paths(touches, conversions, lookback)
    channels = sorted({ch for p in paths for ch in p.channels})
    credit = {m: dict.fromkeys(channels, 0.0) for m in MODELS}
    seen = dict.fromkeys(channels, 0)
    hl = half_life.total_seconds()
    for p in paths:
        for ch in p.channels:
            seen[ch] += 1
        if not p.converted:
            continue
        credit["last_touch"][p.channels[-1]] += 1.0
        credit["first_touch"][p.channels[0]] += 1.0
        weights = np.exp2(-np.asarray(p.ages) / hl)
        weights /= weights.sum()
        for ch, w in zip(p.channels, weights, strict=True):
            credit["linear"][ch] += 1.0 / len(p.channels)
            credit["time_decay"][ch] += float(w)
    effects = removal_effects(paths)
    total_effect = sum(effects.values())
    converted = sum(p.converted for p in paths)
    for ch in channels:
        share = effects[ch] / total_effect if total_effect > 0 else 0.0
        credit["markov"][ch] = share * converted
    out = pd.DataFrame(credit, index=pd.Index(channels, name="channel"))
    out.insert(0, "touches", pd.Series(seen))
    out["removal_effect"] = pd.Series(effects)
    return out.sort_values(["markov", "last_touch"], ascending=False)
