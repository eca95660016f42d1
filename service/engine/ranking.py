"""The batch path: the vectorised priority, best offer and channel for every customer of a
snapshot (:func:`priorities`, :func:`rank_inputs`), and the per-snapshot static terms a
single decision reads (:class:`Prepared`). See docs/design.md, "Decision engine"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from service.config import CHANNELS, Settings
from service.engine.channels import default_channels
from service.engine.diagnosis import cause_scores, intents_of
from service.engine.economics import economics_matrix, reach_of
from service.engine.inputs import PriorityInputs
from service.engine.policy import CAUSES, DEFAULT_PARAMS, FIRST_ASLEEP, PolicyParams


class PreparedRow(NamedTuple):
    """One customer's rows of :class:`Prepared` (plain lists: indexing numpy is slow)."""

    inputs: PriorityInputs  # one row
    cause_scores: list[list[float]]  # [without, with] message fatigue, each over CAUSES
    intent_by_cause: list[int]  # intent code when that cause is the primary one
    reach: float  # :func:`reach_of` of the customer


@dataclass(frozen=True)
class Prepared:
    """The parts of a decision that depend only on the snapshot, the models and the params.

    The cause scores (with and without message fatigue), the intent each primary cause
    leads to and the reach of a message, for every customer at once when a snapshot loads,
    by the same vectorised :func:`cause_scores` / :func:`intents_of` the batch ranking uses. One
    decision then reads its row instead of running them on a one-row array (numpy's
    per-call overhead, ~0.15 ms); a decision without a row, or whose stage changed since the
    snapshot, builds a one-row :class:`Prepared` (the same code).
    """

    inputs: PriorityInputs
    cause_scores: np.ndarray  # (2, n, len(CAUSES))
    intent_by_cause: np.ndarray  # (n, len(CAUSES))
    reach: np.ndarray  # (n,) share of customers still reachable (:func:`reach_of`)

    @classmethod
    def build(cls, inputs: PriorityInputs, params: PolicyParams = DEFAULT_PARAMS) -> Prepared:
        """Evaluate the static terms for every row of ``inputs``."""
        n = len(inputs)
        scores = np.stack(
            [cause_scores(inputs, params, np.full(n, tired))[0] for tired in (False, True)]
        )
        intents = np.stack([intents_of(inputs, np.full(n, k)) for k in range(len(CAUSES))], axis=1)
        return cls(inputs, scores, intents.astype(np.int16), reach_of(inputs.recency, params))

    def row(self, pos: int) -> PreparedRow:
        """Customer ``pos``'s row."""
        return PreparedRow(
            self.inputs.take(slice(pos, pos + 1)),
            self.cause_scores[:, pos, :].tolist(),
            self.intent_by_cause[pos].tolist(),
            float(self.reach[pos]),
        )


@dataclass
class Priorities:
    """Vectorised result: best (offer, channel) per customer and its economics."""

    index: np.ndarray
    priority: np.ndarray  # currency; -inf where no offer/channel is available
    cost: np.ndarray  # expected spend: contact + incentive
    uplift: np.ndarray
    offer: np.ndarray  # index into OFFER_TYPES, -1 none
    channel: np.ndarray  # index into CHANNELS, -1 none
    intent: np.ndarray  # index into INTENTS
    cause: np.ndarray  # index into CAUSES, -1 when not asleep
    revive: np.ndarray  # bool
    offer_by_model: np.ndarray | None = None  # bool: the offer-uplift model chose the offer


def rank_inputs(
    inp: PriorityInputs,
    settings: Settings,
    params: PolicyParams = DEFAULT_PARAMS,
    *,
    channel_ok: np.ndarray | None = None,
    channel_q: np.ndarray | None = None,
    fatigue: np.ndarray | None = None,
    chunk: int = 16_384,
) -> Priorities:
    """:func:`priorities` on prepared arrays (the service keeps them between requests).

    ``channel_ok`` / ``channel_q`` are (n × channels) or (channels,) availability and
    engagement; by default every customer gets the configured channels with implied consent
    at their base engagement (no store lookups: the batch path).
    """
    n = len(inp)
    d_ok, d_q = default_channels(settings, params)
    ok = np.broadcast_to(d_ok if channel_ok is None else channel_ok, (n, len(CHANNELS)))
    q = np.broadcast_to(d_q if channel_q is None else channel_q, (n, len(CHANNELS)))
    _, cause = cause_scores(inp, params, fatigue)
    asleep = inp.stage >= FIRST_ASLEEP
    intent = intents_of(inp, cause)
    out = Priorities(
        index=inp.index,
        priority=np.full(n, -np.inf),
        cost=np.zeros(n),
        uplift=np.zeros(n),
        offer=np.full(n, -1, np.int16),
        channel=np.full(n, -1, np.int16),
        intent=intent.astype(np.int16),
        cause=np.where(asleep, cause, -1).astype(np.int16),
        revive=np.zeros(n, bool),
        offer_by_model=np.zeros(n, bool),
    )
    n_ch = len(CHANNELS)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        part = inp.take(np.arange(sl.start, sl.stop))
        mat = economics_matrix(part, settings, params, q[sl], cause[sl], intent[sl])
        mask = mat["offer_ok"][:, :, None] & ok[sl][:, None, :]
        score = np.where(mask, mat["priority"] + mat["pref"][:, :, None], -np.inf)
        flat = score.reshape(len(part), -1)
        best = np.argmax(flat, axis=1)
        rows = np.arange(len(part))
        o, c = np.divmod(best, n_ch)
        found = np.isfinite(flat[rows, best])
        out.priority[sl] = np.where(found, mat["priority"][rows, o, c], -np.inf)
        out.cost[sl] = np.where(found, mat["contact"][rows, o, c] + mat["incentive"][rows, o, c], 0)
        out.uplift[sl] = np.where(found, mat["uplift"][rows, o, c], 0.0)
        out.offer[sl] = np.where(found, o, -1)
        out.channel[sl] = np.where(found, c, -1)
        out.offer_by_model[sl] = mat["by_model"] & found
    out.revive = np.isfinite(out.priority) & (out.priority > settings.value_tiers.min_priority)
    return out


def priorities(
    snapshot: pd.DataFrame,
    scores: pd.DataFrame,
    settings: Settings,
    params: PolicyParams = DEFAULT_PARAMS,
    offer_uplift: np.ndarray | None = None,
    **kwargs: Any,
) -> Priorities:
    """Vectorised priority (currency), best offer and channel for every snapshot row.

    ``snapshot``: feature rows with a ``stage`` column; ``scores``: ``p_buy_30d`` (and the
    other model outputs) aligned with it; ``offer_uplift``: the offer-uplift model's
    predictions (n × ``OFFER_TYPES``, NaN = no arm) when it applies. Same formula as
    :func:`decide`, with the channel defaults of :func:`rank_inputs` instead of
    per-customer store lookups.
    """
    inp = PriorityInputs.from_frames(snapshot, scores, offer_uplift=offer_uplift)
    return rank_inputs(inp, settings, params, **kwargs)
