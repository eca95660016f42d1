"""Choosing the (offer, channel): rank the usable options at the posterior mean (or, when
exploring, each channel at a Thompson draw), then walk them best first until the message
fits the channel. See docs/design.md, "Decision engine" (Channel)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from service.config import CHANNELS, OFFER_TYPES
from service.engine.economics import RowEconomics
from service.messages import MessageTooLong, RenderedMessage

Option = tuple[float, int, int]  # (priority at the mean + tie-breaker, offer, channel)


def rank_options(econ: RowEconomics, usable: Sequence[bool]) -> list[Option]:
    """Every allowed offer on every usable channel, best priority at the mean first."""
    return sorted(
        (
            (econ.priority[o][c] + econ.pref[o], o, c)
            for o in range(len(OFFER_TYPES))
            for c in range(len(CHANNELS))
            if econ.offer_ok[o] and usable[c]
        ),
        key=lambda t: -t[0],
    )


def thompson_order(ranked: list[Option], sampled: Sequence[Sequence[float]]) -> list[Option]:
    """``ranked`` with the channels ordered by their Thompson draw: each channel keeps its best
    offer at the mean, ranked by that offer's priority at the channel's draw (``sampled``)."""
    best_offer: dict[int, int] = {}
    for _, o, c in ranked:
        best_offer.setdefault(c, o)
    score = {c: sampled[o][c] for c, o in best_offer.items()}
    return sorted(ranked, key=lambda t: (score[t[2]], t[0]), reverse=True)


class Fit(NamedTuple):
    """The first option whose message fits, and the channels whose message did not."""

    chosen: tuple[int, int] | None  # (offer, channel)
    rendered: RenderedMessage | None
    too_long: list[int]  # channels, in the order they were tried


def first_that_fits(ranked: Sequence[Option], render: Callable[[int, int], RenderedMessage]) -> Fit:
    """Walk ``ranked`` best first; ``render(offer, channel)`` raises :class:`MessageTooLong`
    when the message cannot fit the channel, which rules the channel out."""
    too_long: list[int] = []
    for _, o, c in ranked:
        if c in too_long:
            continue
        try:
            rendered = render(o, c)
        except MessageTooLong:
            too_long.append(c)
            continue
        return Fit((o, c), rendered, too_long)
    return Fit(None, None, too_long)


def best_hypothetical(econ: RowEconomics) -> tuple[int, int]:
    """The best allowed (offer, channel) ignoring channel availability (reported when no
    channel is usable); "none" on the first channel when no offer is allowed."""
    allowed = [
        (econ.priority[o][c], o, c)
        for o in range(len(OFFER_TYPES))
        for c in range(len(CHANNELS))
        if econ.offer_ok[o]
    ]
    return max(allowed)[1:] if allowed else (OFFER_TYPES.index("none"), 0)


def best_at_mean(priority: float, ranked: Sequence[Option], too_long: Sequence[int]) -> float:
    """Who is judged on: the best option at the posterior mean among channels whose message
    fits (at least the chosen option's ``priority``)."""
    return max(priority, max((t[0] for t in ranked if t[2] not in too_long), default=-math.inf))
