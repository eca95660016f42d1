"""Channels: the engagement posteriors (Beta-Binomial, recency-weighted), Thompson draws,
and whether a channel is usable (enabled, consented, reachable, under its
frequency caps). See docs/design.md, "Decision engine" (Channel)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from core.store.caps import CapSpec, ContactCounts, Engagement
from service.config import CHANNELS, Settings
from service.engine.inputs import ContactHistory, Profile
from service.engine.memo import memo
from service.engine.policy import DEFAULT_PARAMS, PolicyParams


class Posterior(NamedTuple):
    """Beta(a, b) posterior of one customer's engagement on one channel (docs/design.md).

    ``prior`` is the channel's population rate m (itself shrunk to ``base_engagement``);
    ``trials`` and ``successes`` are the customer's recency-weighted messages and engaged
    messages.
    """

    a: float
    b: float
    prior: float
    trials: float
    successes: float

    @property
    def mean(self) -> float:
        """Posterior mean a / (a + b): the engagement estimate of the mean rule."""
        return self.a / (self.a + self.b) if self.a + self.b > 0 else 0.0


def recency_weight(age_days: float, half_life_days: float) -> float:
    """Weight of an outcome ``age_days`` old: 2^(-age / half-life); future ones weigh 1."""
    return 0.5 ** (max(age_days, 0.0) / half_life_days)


def engagement_posterior(
    own: Engagement,
    population: Engagement,
    base_engagement: float,
    now: datetime,
    half_life_days: float,
    params: PolicyParams = DEFAULT_PARAMS,
) -> Posterior:
    """Beta-Binomial posterior of a customer's engagement (opened or clicked) on a channel.

    Prior Beta(k·m, k·(1−m)) with k = ``engagement_prior_weight`` and m = the population's
    engaged/trials shrunk towards ``base_engagement`` with ``population_prior_weight``
    pseudo-messages. Evidence: the customer's messages, each weighted by
    :func:`recency_weight` of its age at ``now``; counts without message times (hand-made or
    aggregate :class:`Engagement`) weigh 1. Conjugate update (Gelman et al., *Bayesian Data
    Analysis*, ch. 2): a = k·m + Σw·engaged, b = k·(1−m) + Σw·(1 − engaged).
    """
    k_pop = params.population_prior_weight
    m = (population.engaged + k_pop * base_engagement) / (population.trials + k_pop)
    if own.messages:
        now_s = now.timestamp()
        weights = [
            (recency_weight((now_s - t) / 86400.0, half_life_days), hit) for t, hit in own.messages
        ]
        n = math.fsum(w for w, _ in weights)
        hits = math.fsum(w for w, hit in weights if hit)
    else:
        n, hits = float(own.trials), float(own.engaged)
    k = params.engagement_prior_weight
    return Posterior(a=k * m + hits, b=k * (1.0 - m) + n - hits, prior=m, trials=n, successes=hits)


def engagement_rates(
    history: ContactHistory, settings: Settings, p: PolicyParams, now: datetime
) -> tuple[np.ndarray, dict[str, Posterior]]:
    """Per channel: the posterior mean engagement (array over CHANNELS) and the posterior."""
    rates = np.zeros(len(CHANNELS))
    detail: dict[str, Posterior] = {}
    half_life = settings.engagement_half_life_days
    for i, ch in enumerate(CHANNELS):
        base = settings.channels[ch].base_engagement if ch in settings.channels else 0.0
        own = history.engagement.get(ch)
        population = history.population.get(ch, _NO_ENGAGEMENT)
        if own is None:
            post = prior_posterior(population, base, half_life, p)
        else:
            post = engagement_posterior(own, population, base, now, half_life, p)
        rates[i] = post.mean
        detail[ch] = post
    return rates, detail


_NO_ENGAGEMENT = Engagement()


def prior_posterior(
    population: Engagement, base: float, half_life_days: float, p: PolicyParams
) -> Posterior:
    """:func:`engagement_posterior` of a customer with no messages on the channel: the prior
    alone, the same for every such customer (per population aggregate, which the runtime
    keeps for a while)."""
    # memo: engine row p50 +5 % without it (0.179 vs 0.171 ms); tests/test_channel_learning.py
    # pins it (the same object per population aggregate)
    return memo(_build_prior, population, p, base, half_life_days)


def _build_prior(
    population: Engagement, p: PolicyParams, base: float, half_life_days: float
) -> Posterior:
    return engagement_posterior(_NO_ENGAGEMENT, population, base, _EPOCH, half_life_days, p)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # unused by a posterior without messages


def thompson_draws(posteriors: Mapping[str, Posterior], seed_key: str) -> np.ndarray:
    """One draw per channel (CHANNELS order) from its Beta posterior (Thompson 1933; Chapelle
    & Li 2011), with a generator seeded from ``seed_key`` so a decision is reproducible."""
    seed = int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    out = np.zeros(len(CHANNELS))
    for i, ch in enumerate(CHANNELS):
        post = posteriors.get(ch)
        if post is not None:
            out[i] = rng.beta(max(post.a, 1e-9), max(post.b, 1e-9))
    return out


def consent_reason(
    ch: str, history: ContactHistory, profile: Profile, settings: Settings
) -> str | None:
    """None if consented, else the reason: an explicit revoke wins, stored or in the
    request's profile; then a grant, stored or requested; else implied consent."""
    stored = history.consents.get(ch)
    given = profile.consents.get(ch)
    if stored is False:
        return "consent_revoked"
    if given is False:
        return "consent_refused"
    if stored or given:
        return None
    return None if ch in settings.implied_consent else "no_consent"


def reach_reason(
    ch: str, history: ContactHistory, profile: Profile, settings: Settings
) -> str | None:
    ident = settings.channels[ch].identifier
    if ident not in profile.identifiers and ident not in settings.account_identifiers:
        return f"no_{ident}"
    eng = history.engagement.get(ch)
    if (
        eng is not None
        and eng.bounces > 0
        and (eng.last_send_ts is None or eng.bounces >= eng.sends)
    ):
        return "bounced"
    return None


def caps_for(settings: Settings, channel: str) -> CapSpec:
    """The frequency caps that apply to one more contact on ``channel``."""
    policy = settings.channel(channel)
    return CapSpec(policy.per_day_cap, policy.per_week_cap, settings.global_weekly_cap)


def default_channels(settings: Settings, p: PolicyParams) -> tuple[np.ndarray, np.ndarray]:
    """Channel availability and engagement for customers the store knows nothing about."""
    ok = np.array(
        [
            c in settings.channels
            and settings.channels[c].enabled
            and c in settings.implied_consent
            and settings.channels[c].identifier in settings.account_identifiers
            for c in CHANNELS
        ]
    )
    q = np.array(
        [settings.channels[c].base_engagement if c in settings.channels else 0.0 for c in CHANNELS]
    )
    return ok, q


def unusable_channels(
    history: ContactHistory,
    profile: Profile,
    settings: Settings,
    counts: ContactCounts,
    allowed: Collection[str],
    unavailable: Mapping[str, str] | None,
) -> dict[str, str]:
    """Why each channel that cannot carry the message can't, in CHANNELS order: disabled, not
    ``allowed`` by the caller, marked ``unavailable``, no consent, unreachable, or over a
    frequency cap (``counts``: the contacts around the send time)."""
    why_not: dict[str, str] = {}
    for ch in CHANNELS:
        policy = settings.channels.get(ch)
        reason: str | None
        if policy is None or not policy.enabled:
            reason = "disabled"
        elif ch not in allowed:
            reason = "not_requested"
        elif unavailable and ch in unavailable:
            reason = unavailable[ch]
        else:
            reason = (
                consent_reason(ch, history, profile, settings)
                or reach_reason(ch, history, profile, settings)
                or counts.cap_reason(caps_for(settings, ch), ch)
            )
        if reason is not None:
            why_not[ch] = reason
    return why_not
