"""The decision engine: who to revive, why they slept, what to offer, on which channel, when.

Plain Python (no BentoML), deterministic given its inputs, and the one package that holds the
decision policy (docs/design.md, "Decision engine"). The service perceives a customer and
calls :func:`decide_data` (:func:`decide` is the same, validated); batch ranking uses the
vectorised :func:`priorities` on the whole snapshot and builds full decisions only for the
rows it keeps.
"""

from core.store.caps import count_contacts
from service.engine.campaigns import (
    UnknownCampaign,
    blocking_campaign,
    campaign_by_id,
    holdout_draw,
    in_holdout,
)
from service.engine.channels import (
    Posterior,
    caps_for,
    engagement_posterior,
    prior_posterior,
    recency_weight,
    thompson_draws,
)
from service.engine.decide import decide, decide_data
from service.engine.economics import (
    RowEconomics,
    economics_matrix,
    predicted_value,
    row_economics,
)
from service.engine.inputs import (
    ContactHistory,
    CustomerView,
    JourneyAsk,
    ModelScores,
    PriorityInputs,
    Profile,
)
from service.engine.items import regulars
from service.engine.offers import NO_OFFER_MODEL, OfferModel, offer_model_status
from service.engine.output import (
    ChannelOption,
    Decision,
    DispatchOut,
    Economics,
    MessageOut,
    OfferOut,
    ScoresOut,
    WhyAsleep,
    encode_decision,
)
from service.engine.policy import (
    ASLEEP_STAGES,
    CAUSES,
    DEFAULT_PARAMS,
    HILLSTROM_UPLIFT,
    INTENT_OFFERS,
    INTENTS,
    PolicyParams,
)
from service.engine.ranking import Prepared, PreparedRow, Priorities, priorities, rank_inputs
from service.engine.timing import plan_send_at

__all__ = [
    "ASLEEP_STAGES",
    "CAUSES",
    "DEFAULT_PARAMS",
    "HILLSTROM_UPLIFT",
    "INTENTS",
    "INTENT_OFFERS",
    "NO_OFFER_MODEL",
    "ChannelOption",
    "ContactHistory",
    "CustomerView",
    "Decision",
    "DispatchOut",
    "Economics",
    "JourneyAsk",
    "MessageOut",
    "ModelScores",
    "OfferModel",
    "OfferOut",
    "PolicyParams",
    "Posterior",
    "Prepared",
    "PreparedRow",
    "PriorityInputs",
    "Priorities",
    "Profile",
    "RowEconomics",
    "ScoresOut",
    "UnknownCampaign",
    "WhyAsleep",
    "blocking_campaign",
    "campaign_by_id",
    "caps_for",
    "count_contacts",
    "decide",
    "decide_data",
    "economics_matrix",
    "encode_decision",
    "engagement_posterior",
    "holdout_draw",
    "in_holdout",
    "offer_model_status",
    "plan_send_at",
    "predicted_value",
    "prior_posterior",
    "priorities",
    "rank_inputs",
    "recency_weight",
    "regulars",
    "row_economics",
    "thompson_draws",
]
