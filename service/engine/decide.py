"""One decision: who to revive, why they slept, what to offer, on which channel, when —
:func:`decide_data` runs the steps of the other engine modules in order. Plain Python (no
BentoML) and deterministic given its inputs. The policy: docs/design.md, "Decision engine"."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from core.store.caps import cap_contacts, count_contacts
from service.config import CHANNELS, OFFER_TYPES, Campaign, Settings
from service.engine.campaigns import blocking_campaign, campaign_by_id, in_holdout
from service.engine.channels import (
    Posterior,
    engagement_rates,
    thompson_draws,
    unusable_channels,
)
from service.engine.choice import (
    Fit,
    Option,
    best_at_mean,
    best_hypothetical,
    first_that_fits,
    rank_options,
    thompson_order,
)
from service.engine.diagnosis import Diagnosis, diagnose
from service.engine.economics import customer_economics, net_priority
from service.engine.inputs import (
    ContactHistory,
    CustomerView,
    JourneyAsk,
    ModelScores,
    one_row_inputs,
)
from service.engine.items import message_items
from service.engine.offers import offer_reason
from service.engine.output import (
    Decision,
    channel_options_out,
    economics_out,
    message_out,
    offer_out,
    rounded,
    scores_out,
)
from service.engine.policy import ASLEEP_STAGES, DEFAULT_PARAMS, INTENTS, PolicyParams
from service.engine.ranking import Prepared, PreparedRow
from service.engine.timing import decision_send_at, expected_next_order, naive_local, zone_of
from service.messages import RenderedMessage, render_message

_REASON_KEYS = ("who", "why", "what", "channel", "when", "holdout")


def decide(*args: Any, **kwargs: Any) -> Decision:
    """:func:`decide_data` (same arguments) validated as a :class:`Decision`."""
    return Decision.model_validate(decide_data(*args, **kwargs))


def decide_data(
    view: CustomerView,
    scores: ModelScores,
    candidates: Sequence[str],
    history: ContactHistory,
    settings: Settings,
    now: datetime,
    *,
    campaign_id: str = "lifecycle",
    channels: Sequence[str] | None = None,
    item_names: Mapping[str, str] | None = None,
    model_versions: Mapping[str, str] | None = None,
    params: PolicyParams = DEFAULT_PARAMS,
    decision_id: str | None = None,
    unavailable: Mapping[str, str] | None = None,
    explore: bool | None = None,
    prepared: PreparedRow | None = None,
    journey: JourneyAsk | None = None,
) -> dict[str, Any]:
    """Decide for one customer (docs/design.md, "Decision engine"), as plain data.

    The result is a :class:`Decision` as a dict (fields in its order, values in its types),
    not validated: the served path encodes it at once with :func:`encode_decision`, and
    validating the engine's own output on every request would cost as much as encoding it.
    :func:`decide` returns the validated model; a test checks on every customer of the real
    log that both give the same JSON, byte for byte.

    ``candidates``: ALS items, best first (already excluding seen items where the model knows
    them; the item-history filter here is what guarantees nothing returned in the last
    ``return_block_days`` is offered). ``channels`` restricts the channels the caller allows.
    ``unavailable`` marks channels as unusable with a reason (e.g. a cap the store refused at
    reservation time). ``explore`` picks the channel rule for this call: True Thompson
    sampling, False the posterior mean, None the ``channel_selection`` setting.
    ``prepared``: the customer's row of :class:`Prepared` for the snapshot ``view`` comes
    from (the same decision, cheaper); ignored when a later purchase changed the stage.
    Raises :class:`UnknownCampaign`.
    """
    if now.tzinfo is None:
        raise ValueError("decide needs a timezone-aware now")
    now = now.astimezone(UTC)
    p = params
    campaign = campaign_by_id(settings, campaign_id)
    reasons: dict[str, list[str]] = {k: [] for k in _REASON_KEYS}
    zone = zone_of(view.profile.timezone, settings.default_timezone)

    # perceive: a purchase since the snapshot may wake the customer up
    stage, just_bought, reasons["who"] = _perceive(view, now, p)
    if prepared is None or stage != view.stage:
        prepared = Prepared.build(one_row_inputs(view, stage, scores), p).row(0)
    rates, posteriors = engagement_rates(history, settings, p, now)
    # diagnose: why asleep, and so the message intent
    diag = diagnose(view, stage, prepared, history, posteriors, now, p)
    reasons["why"] = diag.reasons
    if journey is not None:
        diag, candidates = _for_journey(journey, diag, candidates)
    # when (the same for every channel), then which channels can carry a message then
    expected_next = expected_next_order(view, scores)
    send_at, reasons["when"] = decision_send_at(
        view, stage, expected_next, settings, zone, now, prompt=journey is not None
    )
    control, why_not = _channels_at(
        view, history, settings, campaign, send_at, channels, unavailable, journey is None
    )
    # choose: the best (offer, channel) whose message fits
    thompson = settings.channel_selection == "thompson" if explore is None else explore
    names = item_names or {}
    call = _Call(
        view, scores, candidates, settings, p, now, names, decision_id, model_versions, journey
    )
    seed = _seed_key(decision_id, view, campaign, now) if thompson else None
    pick = _choose(call, prepared, diag, rates, posteriors, why_not, seed)
    # who: revive? (campaign windows are judged at the moment the message would land)
    revive, blocker, who = _verdict(campaign, settings, send_at, just_bought, pick, journey)
    reasons["who"] += who
    reasons["what"] = pick.what
    reasons["channel"] = _channel_reasons(pick, why_not, posteriors, settings, explore)
    holdout = revive and control
    if revive:
        share = f"share {settings.holdout_share:g}"
        reasons["holdout"].append(f"{'control' if holdout else 'treatment'} ({share})")
    verdict = (revive, holdout, blocker)
    return _output(
        call, campaign, stage, expected_next, diag, pick, send_at, zone, verdict, reasons
    )


def _output(
    call: _Call,
    campaign: Campaign,
    stage: str,
    expected_next: datetime | None,
    diag: Diagnosis,
    pick: _Pick,
    send_at: datetime,
    zone: ZoneInfo,
    verdict: tuple[bool, bool, Campaign | None],
    reasons: dict[str, list[str]],
) -> dict[str, Any]:
    """The fields of :class:`Decision`, in its order (the served path encodes them as they
    are)."""
    view, settings = call.view, call.settings
    revive, holdout, blocker = verdict
    chosen = pick.chosen is not None
    local = naive_local(send_at, zone).isoformat(timespec="minutes") if chosen else None
    return {
        "decision_id": call.decision_id or str(uuid.uuid4()),
        "customer_id": view.customer_id,
        "campaign_id": campaign.id,
        "decided_at": call.now,
        "snapshot_at": view.snapshot_at,
        "stage": stage,
        "tier": view.tier,
        "value_score": rounded(view.value_score, 2),
        "scores": scores_out(call.scores, expected_next, settings.zone),
        "revive": revive,
        "priority": rounded(pick.priority, 4),
        "currency": settings.currency,
        "economics": pick.economics,
        "why_asleep": diag.why,
        "intent": INTENTS[diag.intent],
        "offer": pick.offer_out,
        "channel": CHANNELS[pick.channel] if chosen else None,
        "channel_options": pick.options,
        "send_at": send_at if chosen else None,
        "send_at_local": local,
        "timezone": zone.key,
        "holdout": holdout,
        "contact": revive and not holdout and chosen,
        "blocked_by": blocker.id if blocker is not None else None,
        "message": message_out(pick.rendered) if pick.rendered is not None else None,
        "reasons": {k: v for k, v in reasons.items() if v},
        "model_versions": dict(call.model_versions or {}),
        "dispatch": None,
    }


def _channels_at(
    view: CustomerView,
    history: ContactHistory,
    settings: Settings,
    campaign: Campaign,
    send_at: datetime,
    channels: Sequence[str] | None,
    unavailable: Mapping[str, str] | None,
    draw_holdout: bool = True,
) -> tuple[bool, dict[str, str]]:
    """Whether the customer is in the campaign's hold-out (never, when ``draw_holdout`` is
    false: a journey draws its own), and why each channel that cannot carry a message at
    ``send_at`` can't (:func:`unusable_channels`)."""
    control = draw_holdout and in_holdout(
        view.customer_id, campaign.id, settings.holdout_salt, settings.holdout_share
    )
    # a hold-out customer is capped like their treated twin (the store's shadow contacts)
    counts = count_contacts(
        cap_contacts(history.contacts, history.shadows, campaign.id, control), send_at
    )
    allowed = CHANNELS if channels is None else channels
    why_not = unusable_channels(history, view.profile, settings, counts, allowed, unavailable)
    return control, why_not


def _perceive(view: CustomerView, now: datetime, p: PolicyParams) -> tuple[str, bool, list[str]]:
    """The stage now (an asleep customer who bought since the snapshot is active), whether
    they bought within ``just_bought_days``, and the "who" reasons."""
    stage, just_bought, reasons = view.stage, False, []
    if view.last_purchase_at is not None and view.last_purchase_at > view.snapshot_at:
        days = (now - view.last_purchase_at).total_seconds() / 86400.0
        if stage in ASLEEP_STAGES:
            reasons.append(f"purchase_since_snapshot:{stage}->active")
            stage = "active"
        just_bought = 0 <= days <= p.just_bought_days
    stale = (now - view.snapshot_at).total_seconds() / 86400.0
    if stale > p.stale_snapshot_days:
        reasons.append(f"snapshot_age_days:{stale:.0f}")
    return stage, just_bought, reasons


def _seed_key(
    decision_id: str | None, view: CustomerView, campaign: Campaign, now: datetime
) -> str:
    """What seeds the Thompson draws: the decision id, else customer, campaign and ``now``."""
    return decision_id or f"{view.customer_id}\x1f{campaign.id}\x1f{now.isoformat()}"


class _Pick(NamedTuple):
    """The chosen option (else the best hypothetical one) and what is reported of it."""

    chosen: tuple[int, int] | None  # (offer, channel) whose message fits, if any
    offer: int  # index into OFFER_TYPES
    channel: int  # index into CHANNELS
    priority: float  # of (offer, channel) at the posterior mean, with the message's segments
    who_priority: float  # the best option at the mean: what revive is judged on
    contact_cost: float
    rendered: RenderedMessage | None
    draws: np.ndarray | None  # the Thompson draws, when exploring
    economics: dict[str, Any]  # the fields of Economics
    options: list[dict[str, Any]]  # the fields of each ChannelOption
    offer_out: dict[str, Any] | None  # the fields of OfferOut
    what: list[str]  # the "what" reasons


class _Call(NamedTuple):
    """What one decision was asked about (the arguments of :func:`decide_data`)."""

    view: CustomerView
    scores: ModelScores
    candidates: Sequence[str]
    settings: Settings
    params: PolicyParams
    now: datetime
    names: Mapping[str, str]  # item id -> display name
    decision_id: str | None
    model_versions: Mapping[str, str] | None
    journey: JourneyAsk | None


def _for_journey(
    ask: JourneyAsk, diag: Diagnosis, candidates: Sequence[str]
) -> tuple[Diagnosis, Sequence[str]]:
    """The diagnosis with the step's fixed intent, and the trigger's items as candidates."""
    if ask.intent is not None:
        diag = diag._replace(intent=INTENTS.index(ask.intent))
    return diag, (ask.items if ask.items is not None else candidates)


def _choose(
    call: _Call,
    row: PreparedRow,
    diag: Diagnosis,
    rates: np.ndarray,
    posteriors: Mapping[str, Posterior],
    why_not: dict[str, str],
    seed_key: str | None,
) -> _Pick:
    """Economics of every (offer, channel) at the posterior mean; ranked at the mean or, when
    exploring (``seed_key`` seeds the Thompson draws), by each channel's draw; walked best
    first until a message fits (channels whose message is too long are added to ``why_not``).
    """
    settings, p = call.settings, call.params
    econ = customer_economics(row.inputs, settings, p, rates, diag.cause, diag.intent, row.reach)
    ranked = rank_options(econ, [ch not in why_not for ch in CHANNELS])
    if call.journey is not None and call.journey.offers is not None:
        ranked = [r for r in ranked if OFFER_TYPES[r[1]] in call.journey.offers]
    draws = None
    if seed_key is not None:
        draws = thompson_draws(posteriors, seed_key)
        sampled = customer_economics(
            row.inputs, settings, p, draws, diag.cause, diag.intent, row.reach
        )
        ranked = thompson_order(ranked, sampled.priority)
    intent = INTENTS[diag.intent]
    fit, items, item_reasons = _fit_message(call, intent, ranked, why_not)
    o, c = fit.chosen if fit.chosen is not None else best_hypothetical(econ)
    segments = fit.rendered.segments if fit.rendered is not None else 1
    contact_cost = econ.contact[c] * segments
    uplift, incentive = econ.uplift[o][c], econ.incentive[o][c]
    priority = net_priority(uplift, econ.value, incentive, contact_cost)
    # who is judged at the best option at the posterior mean; an explored channel's shortfall
    # from it is the price of exploring (reported)
    who_priority = priority
    if draws is not None and fit.chosen is not None:
        who_priority = best_at_mean(priority, ranked, fit.too_long)
    what = [offer_reason(call.scores.offer_model, econ, o, intent, settings)]
    offer = None
    if fit.chosen is not None:
        offer_type = settings.offer(OFFER_TYPES[o])
        offer = offer_out(offer_type, _locale(call), settings, items, call.names)
        what.append(f"offer:{offer['type']} (best net value for intent {intent})")
        what += item_reasons
    p0 = float(row.inputs.p0[0])
    return _Pick(
        fit.chosen,
        o,
        c,
        priority,
        who_priority,
        contact_cost,
        fit.rendered,
        draws,
        economics_out(p0, uplift, econ.value, contact_cost, incentive, priority),
        channel_options_out(
            settings,
            econ,
            rates,
            posteriors,
            draws,
            why_not,
            None if fit.chosen is None else c,
        ),
        offer,
        what,
    )


def _locale(call: _Call) -> str:
    """The customer's locale if a template exists for it, else the brand's default."""
    locale = call.view.profile.locale
    return locale if locale in ("zh-CN", "en") else call.settings.default_locale


def _fit_message(
    call: _Call, intent: str, ranked: list[Option], why_not: dict[str, str]
) -> tuple[Fit, list[str], list[str]]:
    """The first ranked option whose message fits its channel (channels whose message is too
    long are added to ``why_not``), the items it names and the item reasons."""
    if not ranked:
        return Fit(None, None, []), [], []
    p, settings, view = call.params, call.settings, call.view
    now_s, k = call.now.timestamp(), settings.value_tiers.max_items
    items, item_reasons = message_items(intent, view, call.candidates, now_s, k, p)
    labels = [call.names.get(i) or i for i in items]
    locale = _locale(call)
    fit = first_that_fits(
        ranked, lambda o, c: _render(intent, o, c, locale, labels, view.profile.name, settings)
    )
    for c in fit.too_long:
        why_not[CHANNELS[c]] = "message_too_long"
    return fit, items, item_reasons


def _render(
    intent: str,
    o: int,
    c: int,
    locale: str,
    items: list[str],
    name: str | None,
    settings: Settings,
) -> RenderedMessage:
    """The message of offer ``o`` on channel ``c`` (:class:`MessageTooLong` if it can't fit)."""
    ch = CHANNELS[c]
    return render_message(
        intent,  # type: ignore[arg-type]
        ch,  # type: ignore[arg-type]
        locale,  # type: ignore[arg-type]
        brand=settings.brand,
        items=items,
        offer_text=settings.offer(OFFER_TYPES[o]).text(locale, settings.currency_symbol),  # type: ignore[arg-type]
        channel_policy=settings.channels[ch],
        name=name,
        link=str(settings.landing_url) if settings.landing_url else None,
    )


def _verdict(
    campaign: Campaign,
    settings: Settings,
    send_at: datetime,
    just_bought: bool,
    pick: _Pick,
    journey: JourneyAsk | None = None,
) -> tuple[bool, Campaign | None, list[str]]:
    """Revive? No when the campaign is not running at ``send_at``, a higher-priority campaign
    blacks it out, the customer just bought, no channel can carry the message, or the best
    option's priority is not above ``min_priority``. For a journey step the trigger chose
    who: only the campaign, its blackouts and the channels decide. Returns the blocker and
    "who" reasons."""
    reasons = []
    blocker = blocking_campaign(settings, campaign, send_at)
    revive = True
    if not campaign.is_active(send_at):
        revive = False
        reasons.append(f"campaign_not_active:{campaign.id}")
    if blocker is not None:
        revive = False
        reasons.append(f"blackout:{blocker.id}(priority {blocker.priority})")
    if pick.chosen is None:
        revive = False
    if journey is not None:
        reasons.append(f"journey:{journey.journey_id}")
        return revive, blocker, reasons
    if just_bought:
        revive = False
        reasons.append("purchased_since_snapshot")
    floor, best = settings.value_tiers.min_priority, pick.who_priority
    if best <= floor:
        revive = False
        reasons.append(f"priority {best:.4f} <= min_priority {floor:g}")
    elif revive:
        reasons.append(f"priority {best:.4f} {settings.currency} > min_priority {floor:g}")
    return revive, blocker, reasons


def _channel_reasons(
    pick: _Pick,
    why_not: Mapping[str, str],
    posteriors: Mapping[str, Posterior],
    settings: Settings,
    explore: bool | None,
) -> list[str]:
    """The chosen channel and its posterior (or the draw), the price of exploring, why each
    other channel was not usable, the rule, and every channel's posterior."""
    reasons = []
    c, draws = pick.channel, pick.draws
    if pick.chosen is not None:
        post = posteriors[CHANNELS[c]]
        how = f"thompson sample {draws[c]:.3f} from" if draws is not None else "posterior mean of"
        reasons.append(
            f"{CHANNELS[c]}: best {how} Beta(a={post.a:.2f}, b={post.b:.2f}), "
            f"mean {post.mean:.3f}, net of cost {pick.contact_cost:.4f}"
        )
        if draws is not None and pick.who_priority > pick.priority + 1e-9:
            reasons.append(f"exploration_cost:{pick.who_priority - pick.priority:.4f}")
    else:
        reasons.append("no_channel")
    reasons += [f"{ch}:{r}" for ch, r in why_not.items()]
    rule = "thompson" if draws is not None else "mean"
    origin = "setting channel_selection" if explore is None else f"request explore={explore}"
    reasons.append(f"rule:{rule} ({origin})")
    reasons += [
        f"posterior:{ch} mean={post.mean:.3f} a={post.a:.2f} b={post.b:.2f}"
        for ch, post in posteriors.items()
        if ch in settings.channels
    ]
    return reasons
