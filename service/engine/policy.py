"""The decision policy's vocabulary and constants: causes, intents, candidate offers per
intent, and :class:`PolicyParams` (the stated priors that are not part of the operator's
YAML). The formula and the evidence behind each number: docs/design.md, "Decision engine"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from features.lifecycle import STAGES

# Hillstrom (2008): conversion 0.010681 (both e-mail arms) vs 0.005726 (no e-mail).

HILLSTROM_UPLIFT = 0.010681 - 0.005726

ASLEEP_STAGES = ("at_risk", "sleeping", "lost")

CAUSES = ("returns", "message_fatigue", "price_sensitivity", "need_met", "forgotten")

INTENTS_BY_CAUSE = {
    "returns": "service_recovery",
    "message_fatigue": "win_back",
    "price_sensitivity": "win_back",
    "need_met": "new_arrivals",
    "forgotten": "win_back",
}

# Candidate offers per message intent, in order of preference when they tie.

INTENT_OFFERS: dict[str, tuple[str, ...]] = {
    "win_back": (
        "value_reminder",
        "low_threshold_coupon",
        "exclusive_discount",
        "bonus_points",
        "none",
    ),
    "service_recovery": ("low_threshold_coupon", "exclusive_discount", "value_reminder"),
    "new_arrivals": ("new_arrivals", "low_threshold_coupon"),
    "replenishment": ("replenishment_reminder", "low_threshold_coupon"),
    "cross_sell": ("none", "low_threshold_coupon"),
    "value_reminder": ("value_reminder", "exclusive_discount", "bonus_points"),
    # journey intents (service/journeys.yaml): never chosen by the diagnosis
    "cart_reminder": ("none", "low_threshold_coupon"),
    "care": ("none",),
    "points_reminder": ("none", "bonus_points"),
}

INTENTS = tuple(INTENT_OFFERS)

# Templates of these intents name the customer's own items ("your favourites", "reorder");
# the others name new-to-them items from the cross-sell model.

OWN_ITEM_INTENTS = ("win_back", "replenishment", "value_reminder")

# Offers that cost the brand money per buyer (a discount rate, or bonus points' money value):
# boosted for price-sensitive customers, never part of a journey's fixed ``send``.
MONETARY = ("low_threshold_coupon", "exclusive_discount", "bonus_points")

STAGE_CODES = STAGES  # stage codes are positions in the lifecycle order

FIRST_ASLEEP = STAGE_CODES.index("at_risk")  # the asleep stages are the last three codes

assert STAGE_CODES[FIRST_ASLEEP:] == ASLEEP_STAGES


@dataclass(frozen=True)
class PolicyParams:
    """Decision-policy constants that are not part of the operator's YAML (docs/design.md)."""

    uplift_prior: float = HILLSTROM_UPLIFT
    reference_engagement: float = 0.12  # e-mail base rate: the channel Hillstrom measured
    lost_decay_days: float = 365.0  # reach decay beyond a year of silence (assumption)
    # k of the Beta prior: pseudo-messages shrinking a customer's engagement to the channel's
    # rate. Customers' rates are very spread (many never open, some always): method of moments
    # on such a mix (k + 1 = m(1 - m) / var) gives k ~ 4, so a handful of own messages dominate.
    engagement_prior_weight: float = 4.0
    population_prior_weight: float = 200.0  # pseudo-sends shrinking the population rate
    offer_response: Mapping[str, float] = field(
        default_factory=lambda: {
            "none": 1.0,
            "value_reminder": 1.0,
            "new_arrivals": 1.0,
            "replenishment_reminder": 1.0,
            "low_threshold_coupon": 2.0,
            "exclusive_discount": 3.0,
            # an assumption: a small points bonus moves customers less than a cash discount
            "bonus_points": 1.5,
        }
    )
    # extra response of monetary offers (m - 1) is multiplied by this for the primary cause
    cause_offer_boost: Mapping[str, float] = field(
        default_factory=lambda: {"price_sensitivity": 2.0, "returns": 1.5}
    )
    return_block_days: float = 90.0  # an item returned this recently is never offered
    recent_purchase_days: float = 30.0  # an item bought this recently is not offered
    just_bought_days: float = 14.0  # a purchase since the snapshot this recent: no revival
    returns_recent_days: float = 90.0
    returns_rate: float = 0.15  # returned value / purchased value that counts as evidence
    fatigue_min_sends: int = 3
    fatigue_open_ratio: float = 0.25  # opens/sends below this x the channel prior
    price_index: float = 0.85  # pays below 85% of the items' median price
    need_met_share: float = 0.6  # share of purchase lines in one item family
    need_met_max_days: float = 3.0  # ... over at most this many purchase days
    forgotten_days: float = 90.0  # no contact this long
    stale_snapshot_days: float = 30.0
    candidate_items: int = 20  # ALS candidates requested before filtering


DEFAULT_PARAMS = PolicyParams()
