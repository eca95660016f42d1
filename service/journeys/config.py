"""Journeys as configuration: ``service/journeys.yaml``, validated as strictly as the policy.

A journey (Braze Canvas, Klaviyo Flow, Dittofeed journey) is an entry **trigger**, a list of
**steps** run in order from the first (a ``branch`` jumps), **exit conditions** checked
before every step, a conversion **goal** with its window, a **hold-out** share of entrants
who get no message, a **re-entry** rule and a **priority** (when two journeys want the same
customer on the same day, the higher one goes first; the other waits or skips, by its own
``on_conflict``).

Triggers are behaviour events posted to ``/events`` (``cart_abandoned``, ``purchase``,
``return``, ``browse``) or time from customer facts (days after the first or last order, a
birthday from the profile, the expected next order minus a lead, entering a lifecycle stage,
a named holiday's date in its time zone, unspent loyalty points about to expire). Steps: ``wait`` (a duration, or until a time
relative to a customer fact), ``branch`` (on a condition), ``decide`` (the decision engine
picks channel, offer and message under every contact rule), ``send`` (a fixed intent),
``exit``.

Unknown keys, a step id used twice, a branch to a missing step, a campaign or offer the
policy does not define: :class:`~service.config.ConfigError` naming the file and the key
path, as for the policy.
"""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.config import (
    ChannelName,
    ConfigError,
    OfferType,
    Settings,
    StrictYamlLoader,
    describe_validation,
)
from service.messages import Intent

__all__ = [
    "DEFAULT_JOURNEYS_PATH",
    "JOURNEYS_ENV",
    "Journey",
    "Journeys",
    "check_against_policy",
    "load_journeys",
]

DEFAULT_JOURNEYS_PATH = Path(__file__).resolve().parents[1] / "journeys.yaml"
JOURNEYS_ENV = "REVIVAL_JOURNEYS"

Id = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Stage = Literal["new", "active", "loyal", "at_risk", "sleeping", "lost"]
Tier = Literal["high", "mid", "low"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Duration(_Model):
    """A length of time; at least one part, and more than zero in all."""

    days: float = Field(default=0, ge=0, le=3650)
    hours: float = Field(default=0, ge=0, le=24 * 3650)
    minutes: float = Field(default=0, ge=0, le=60 * 24 * 3650)

    @model_validator(mode="after")
    def _positive(self) -> Duration:
        if self.seconds <= 0:
            raise ValueError("a duration must be longer than zero (days, hours, minutes)")
        return self

    @property
    def seconds(self) -> float:
        return self.days * 86400 + self.hours * 3600 + self.minutes * 60


# ----------------------------------------------------------------------------- triggers


class EventTrigger(_Model):
    """Enter when the customer's event arrives through ``/events``."""

    kind: Literal["event"]
    event: Literal["cart_abandoned", "purchase", "return", "browse"]
    min_value: float | None = Field(default=None, ge=0, description="cart or order value")


class FactTrigger(_Model):
    """Enter at a time computed from a customer fact: ``days`` after the first or last
    order, ``days`` before the birthday, ``days`` before the expected next order."""

    kind: Literal["fact"]
    fact: Literal["first_order", "last_order", "birthday", "expected_next_order"]
    days: float = Field(ge=-3650, le=3650, description="offset: after (+) or before (-)")
    at_local: time = Field(default=time(10, 0), description="local time of the entry")


class StageTrigger(_Model):
    """Enter when the customer moves into ``stage`` (e.g. becomes ``sleeping``)."""

    kind: Literal["stage_entered"]
    stage: Stage
    tiers: list[Tier] = Field(default_factory=lambda: ["high", "mid", "low"], min_length=1)


class HolidayTrigger(_Model):
    """Enter ``days_before`` a named holiday (month-day), at ``at_local`` in ``timezone``."""

    kind: Literal["holiday"]
    holiday: str = Field(min_length=1, max_length=40)
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)
    timezone: str = "Asia/Shanghai"
    days_before: int = Field(default=0, ge=0, le=60)
    at_local: time = time(10, 0)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class PointsTrigger(_Model):
    """Enter ``days_before`` a customer's unspent loyalty points expire (usually the
    policy's ``loyalty.expiry_reminder_days``), once per expiry date, when at least
    ``min_points`` expire then."""

    kind: Literal["points_expiring"]
    days_before: float = Field(gt=0, le=365)
    min_points: int = Field(default=1, ge=1, le=10**9)


Trigger = Annotated[
    EventTrigger | FactTrigger | StageTrigger | HolidayTrigger | PointsTrigger,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- conditions


class Condition(_Model):
    """True when every given part holds (an empty condition is refused)."""

    purchased_since_entry: bool | None = None
    opened_since_entry: bool | None = None
    stage_in: list[Stage] | None = Field(default=None, min_length=1)
    tier_in: list[Tier] | None = Field(default=None, min_length=1)
    p_buy_30d_above: float | None = Field(default=None, ge=0, le=1)
    p_buy_30d_below: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not self.model_dump(exclude_none=True):
            raise ValueError("a condition needs at least one part")
        return self


# ----------------------------------------------------------------------------- steps


class WaitStep(_Model):
    """Wait ``duration``, or until ``days`` relative to a customer fact at ``at_local``."""

    id: Id
    type: Literal["wait"]
    duration: Duration | None = None
    until_fact: Literal["expected_next_order", "birthday", "delivery"] | None = None
    days: float = Field(default=0, ge=-3650, le=3650)
    at_local: time | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WaitStep:
        if (self.duration is None) == (self.until_fact is None):
            raise ValueError("a wait needs exactly one of duration or until_fact")
        return self


class BranchStep(_Model):
    """Go to ``then`` if ``when`` holds, else to ``otherwise`` (step ids; ``exit`` ends)."""

    id: Id
    type: Literal["branch"]
    when: Condition
    then: str
    otherwise: str


class DecideStep(_Model):
    """The decision engine picks channel, offer and message under every contact rule."""

    id: Id
    type: Literal["decide"]
    campaign: str = Field(default="lifecycle", min_length=1)
    intent: Intent | None = Field(default=None, description="default: the engine's diagnosis")
    items: Literal["trigger", "cross_sell", "regulars"] = Field(
        default="cross_sell", description="the trigger's own items (a cart), or the engine's"
    )
    offers: list[OfferType] | None = Field(
        default=None, min_length=1, description="offer types allowed (default: all)"
    )


class SendStep(_Model):
    """Send a fixed intent (a care message) with no monetary offer; channel by the engine
    unless given."""

    id: Id
    type: Literal["send"]
    intent: Intent
    campaign: str = Field(default="lifecycle", min_length=1)
    channel: ChannelName | None = None


class ExitStep(_Model):
    id: Id
    type: Literal["exit"]


Step = Annotated[
    WaitStep | BranchStep | DecideStep | SendStep | ExitStep, Field(discriminator="type")
]


# ----------------------------------------------------------------------------- journey


class Goal(_Model):
    event: Literal["purchase"] = "purchase"
    within_days: float = Field(gt=0, le=365)


class Reentry(_Model):
    """``once`` ever, or again after ``days`` since the last entry."""

    mode: Literal["once", "every"]
    days: float | None = Field(default=None, gt=0, le=3650)

    @model_validator(mode="after")
    def _days(self) -> Reentry:
        if (self.mode == "every") != (self.days is not None):
            raise ValueError("re-entry 'every' needs days; 'once' takes none")
        return self


class Journey(_Model):
    id: Id
    name: str = Field(min_length=1, max_length=80)
    enabled: bool = True
    priority: int = Field(ge=0, le=1000, description="higher goes first on a shared day")
    on_conflict: Literal["wait", "skip"] = "wait"
    holdout_share: float = Field(default=0.1, ge=0, le=1)
    trigger: Trigger
    segment_stages: list[Stage] | None = Field(default=None, min_length=1)
    segment_tiers: list[Tier] | None = Field(default=None, min_length=1)
    exit_on: list[Literal["purchase", "unsubscribe", "stage_change", "return"]] = Field(
        default_factory=lambda: ["purchase", "unsubscribe"]
    )
    goal: Goal
    reentry: Reentry
    steps: list[Step] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _steps(self) -> Journey:
        ids = [s.id for s in self.steps]
        seen: set[str] = set()
        for i, sid in enumerate(ids):
            if sid in seen:
                raise ValueError(f"steps[{i}].id {sid!r} is used twice")
            seen.add(sid)
        for i, s in enumerate(self.steps):
            if isinstance(s, BranchStep):
                for key in ("then", "otherwise"):
                    target = getattr(s, key)
                    if target != "exit" and target not in seen:
                        raise ValueError(f"steps[{i}].{key}: no step {target!r} (or exit)")
                    if target != "exit" and ids.index(target) <= i:
                        raise ValueError(f"steps[{i}].{key}: {target!r} is not a later step")
        if not any(isinstance(s, DecideStep | SendStep) for s in self.steps):
            raise ValueError("a journey needs at least one decide or send step")
        return self


class Journeys(_Model):
    journeys: list[Journey] = Field(default_factory=list)

    @field_validator("journeys")
    @classmethod
    def _unique(cls, value: list[Journey]) -> list[Journey]:
        ids = [j.id for j in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"journey ids used twice: {', '.join(twice)}")
        return value

    def by_id(self, journey_id: str) -> Journey:
        for j in self.journeys:
            if j.id == journey_id:
                return j
        raise KeyError(f"no journey {journey_id!r} (known: {[j.id for j in self.journeys]})")


def check_against_policy(journeys: Journeys, settings: Settings) -> None:
    """:class:`ConfigError` for a ``decide`` step naming a campaign the policy lacks."""
    known = {c.id for c in settings.campaigns}
    for j, journey in enumerate(journeys.journeys):
        for i, step in enumerate(journey.steps):
            if isinstance(step, DecideStep | SendStep) and step.campaign not in known:
                raise ConfigError(
                    f"invalid journeys: journeys[{j}].steps[{i}].campaign: {step.campaign!r} "
                    f"is not a campaign of the policy (known: {sorted(known)})"
                )


def load_journeys(path: str | Path | None = None, settings: Settings | None = None) -> Journeys:
    """The journeys of ``path`` (else ``REVIVAL_JOURNEYS``, else ``service/journeys.yaml``),
    validated; checked against ``settings`` when given. :class:`ConfigError` names the file
    and every bad key path."""
    file = Path(path or os.environ.get(JOURNEYS_ENV) or DEFAULT_JOURNEYS_PATH).expanduser()
    try:
        with open(file, encoding="utf-8") as handle:
            raw = yaml.load(handle, Loader=StrictYamlLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"journeys file not found: {file}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid journeys ({file}): {exc}") from None
    try:
        journeys = Journeys.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation(exc, str(file), "journeys")) from exc
    if settings is not None:
        check_against_policy(journeys, settings)
    return journeys
