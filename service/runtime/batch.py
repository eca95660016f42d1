"""``decide_batch``: rank customers by priority (vectorised), cut at a budget or count, page."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from service.config import CHANNELS, OFFER_TYPES, Settings
from service.engine import PolicyParams, campaign_by_id, holdout_draw, rank_inputs
from service.runtime.clock import request_now
from service.runtime.decisions import Decider
from service.runtime.state import State
from service.schemas import BatchRequest, BatchResponse, BatchRow

__all__ = ["BatchRanker"]


@dataclass
class _Ranking:
    """The selected rows of a batch request, ranked: what a page is cut from."""

    rows: np.ndarray  # snapshot positions of the candidates (after the filters)
    unknown: list[str]  # requested ids not in the snapshot
    priority: np.ndarray  # per candidate
    offer: np.ndarray
    channel: np.ndarray
    eligible: np.ndarray  # candidates with revive, in candidate order
    order: np.ndarray  # eligible candidates by priority, highest first
    holdout: np.ndarray  # per ranked row
    cost: np.ndarray  # expected cost per ranked row (0 in hold-out)
    cum: np.ndarray  # cumulative cost of the ranking
    keep: int  # how many ranked rows are selected (count and budget)


@dataclass
class BatchRanker:
    """Ranks the snapshot for a campaign and decides one page of it."""

    settings: Settings
    params: PolicyParams
    decider: Decider

    def _holdout_draws(self, state: State, campaign_id: str) -> np.ndarray:
        """Every customer's hold-out draw for the campaign (cached per state)."""
        key = (campaign_id, self.settings.holdout_salt)
        draws = state.holdout_draws.get(key)
        if draws is None:
            draws = np.array(
                [
                    holdout_draw(c, campaign_id, self.settings.holdout_salt)
                    for c in state.inputs.index
                ]
            )
            state.holdout_draws[key] = draws
        return draws

    def _default_ok(self) -> np.ndarray:
        """Channels a customer without a profile can be reached on (enabled, implied
        consent, identifier on the account)."""
        s = self.settings
        return np.array(
            [
                c in s.channels
                and s.channels[c].enabled
                and c in s.implied_consent
                and s.channels[c].identifier in s.account_identifiers
                for c in CHANNELS
            ]
        )

    @staticmethod
    def _candidates(req: BatchRequest, state: State) -> tuple[np.ndarray, list[str]]:
        """Snapshot positions of the requested ids (or everyone) within the stage/tier
        filters, and the requested ids the snapshot does not know."""
        unknown: list[str] = []
        if req.customer_ids is not None:
            pos_map = state.snapshot.positions
            found = []
            for c in dict.fromkeys(req.customer_ids):
                p = pos_map.get(c)
                if p is None:
                    unknown.append(c)
                else:
                    found.append(p)
            rows = np.asarray(found, np.int64)
        else:
            rows = np.arange(len(state.inputs))
        mask = np.ones(len(rows), bool)
        if req.stages is not None:
            mask &= np.isin(state.stage[rows], req.stages)
        if req.tiers is not None:
            mask &= np.isin(state.tier[rows], req.tiers)
        return rows[mask], unknown

    def _rank(self, req: BatchRequest, state: State, campaign_id: str) -> _Ranking:
        """Priorities of the candidates, the eligible ones ranked, and the cut."""
        rows, unknown = self._candidates(req, state)
        ok = None
        if req.channels is not None:
            ok = np.array([c in req.channels for c in CHANNELS]) & self._default_ok()
        pr = rank_inputs(state.inputs.take(rows), self.settings, self.params, channel_ok=ok)
        eligible = np.flatnonzero(pr.revive)
        order = eligible[np.argsort(-pr.priority[eligible], kind="stable")]
        draws = self._holdout_draws(state, campaign_id)
        holdout = draws[rows[order]] < self.settings.holdout_share
        cost = np.where(holdout, 0.0, pr.cost[order])
        cum = np.cumsum(cost)
        keep = len(order)
        if req.max_customers is not None:
            keep = min(keep, req.max_customers)
        if req.budget is not None:
            keep = min(keep, int(np.searchsorted(cum, req.budget, side="right")))
        return _Ranking(
            rows=rows,
            unknown=unknown,
            priority=pr.priority,
            offer=pr.offer,
            channel=pr.channel,
            eligible=eligible,
            order=order,
            holdout=holdout,
            cost=cost,
            cum=cum,
            keep=keep,
        )

    def _page(
        self, req: BatchRequest, r: _Ranking, state: State, now: datetime, campaign_id: str
    ) -> list[BatchRow]:
        """The rows of the requested page, with full decisions if asked."""
        page = np.arange(req.offset, min(r.keep, req.offset + req.limit))
        if req.decisions and len(page):
            ids = [str(state.inputs.index[int(r.rows[r.order[k]])]) for k in page]
            self.decider.views.prefetch_candidates(ids, self.params.candidate_items, state)
        out: list[BatchRow] = []
        for rank in page:
            i = r.order[rank]
            pos = int(r.rows[i])
            cid = str(state.inputs.index[pos])
            decision = None
            if req.decisions:
                decision, _ = self.decider.decide_and_record(
                    cid, now, campaign_id, req.channels, None, state, None, record=req.record
                )
            out.append(
                BatchRow(
                    rank=int(rank) + 1,
                    customer_id=cid,
                    stage=str(state.stage[pos]),
                    tier=str(state.tier[pos]),
                    priority=round(float(r.priority[i]), 4),
                    expected_cost=round(float(r.cost[rank]), 4),
                    cumulative_cost=round(float(r.cum[rank]), 4),
                    offer=OFFER_TYPES[r.offer[i]] if r.offer[i] >= 0 else None,
                    channel=CHANNELS[r.channel[i]] if r.channel[i] >= 0 else None,
                    holdout=bool(r.holdout[rank]),
                    decision=decision,
                )
            )
        return out

    def decide_batch(self, req: BatchRequest, state: State) -> BatchResponse:
        """Rank customers by priority (vectorised), cut at budget/count, decide the page."""
        t0 = time.perf_counter()
        now = request_now(req.now, self.settings, state.snapshot.at)
        campaign = campaign_by_id(self.settings, req.campaign_id)
        r = self._rank(req, state, campaign.id)
        rows = self._page(req, r, state, now, campaign.id)
        end = req.offset + len(rows)
        keep = r.keep
        return BatchResponse(
            campaign_id=campaign.id,
            currency=self.settings.currency,
            candidates=len(r.rows),
            eligible=len(r.eligible),
            selected=keep,
            selected_cost=round(float(r.cum[keep - 1]) if keep else 0.0, 4),
            selected_priority=round(float(r.priority[r.order[:keep]].sum()), 4),
            offset=req.offset,
            limit=req.limit,
            next_offset=end if end < keep else None,
            unknown_customer_ids=r.unknown[:1000],
            rows=rows,
            seconds=round(time.perf_counter() - t0, 4),
        )
