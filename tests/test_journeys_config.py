"""The journeys configuration (service/journeys.yaml): the shipped journeys load against the
policy, and every kind of mistake is refused with the file and the key path named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import get_args

import pytest
import yaml

from features.lifecycle import STAGES, TIERS
from service.config import ConfigError, load_settings
from service.journeys import DEFAULT_JOURNEYS_PATH, load_journeys
from service.journeys.config import Stage, Tier

SHIPPED = yaml.safe_load(DEFAULT_JOURNEYS_PATH.read_text())


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "journeys.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_shipped_journeys_load_against_the_policy() -> None:
    journeys = load_journeys(settings=load_settings())
    assert [j.id for j in journeys.journeys] == [
        "cart_recovery", "post_purchase", "first_order_followup", "birthday", "win_back",
        "points_expiry",
    ]  # fmt: skip
    points = journeys.by_id("points_expiry")
    assert points.trigger.kind == "points_expiring"
    assert points.trigger.days_before == load_settings().loyalty.expiry_reminder_days
    cart = journeys.by_id("cart_recovery")
    assert cart.trigger.kind == "event" and cart.trigger.event == "cart_abandoned"
    first, second = (s for s in cart.steps if s.type == "decide")
    assert first.items == second.items == "trigger"  # the cart's own items, not cross-sell
    assert first.offers == ["none"] and "low_threshold_coupon" in second.offers
    win_back = journeys.by_id("win_back")
    assert win_back.trigger.stage == "sleeping" and win_back.trigger.tiers == ["high", "mid"]
    assert journeys.by_id("first_order_followup").reentry.mode == "once"
    assert get_args(Stage) == STAGES and get_args(Tier) == TIERS


def _broken(edit) -> dict:
    data = copy.deepcopy(SHIPPED)
    edit(data["journeys"][0])
    return data


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda j: j.update(colour="red"), r"journeys\[0\]\.colour: unknown key"),
        (lambda j: j["steps"][1].update(id="first_wait"), "'first_wait' is used twice"),
        (lambda j: j["steps"][3].update(otherwise="nowhere"), "no step 'nowhere'"),
        (lambda j: j["steps"][3].update(otherwise="reminder"), "'reminder' is not a later step"),
        (
            lambda j: j["steps"][0].update(until_fact="birthday"),
            "exactly one of duration or until_fact",
        ),
        (lambda j: j["steps"][0].update(duration={}), "longer than zero"),
        (lambda j: j.update(reentry={"mode": "every"}), "re-entry 'every' needs days"),
        (lambda j: j.update(holdout_share=1.5), r"journeys\[0\]\.holdout_share"),
        (lambda j: j["trigger"].update(event="teleport"), r"trigger\.event\.event"),
        (lambda j: j["steps"][1].update(offers=["free_car"]), r"steps\[1\]\.decide\.offers\[0\]"),
        (
            lambda j: j.update(steps=[{"id": "w", "type": "wait", "duration": {"hours": 1}}]),
            "at least one decide or send step",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, edit, named: str) -> None:
    path = _write(tmp_path, _broken(edit))
    with pytest.raises(ConfigError, match=named) as err:
        load_journeys(path)
    assert str(path) in str(err.value)


def test_policy_cross_checks_and_file_level_mistakes(tmp_path: Path) -> None:
    data = _broken(lambda j: j["steps"][1].update(campaign="spring"))
    with pytest.raises(ConfigError, match=r"steps\[1\]\.campaign: 'spring' is not a campaign"):
        load_journeys(_write(tmp_path, data), settings=load_settings())
    twice = {"journeys": [SHIPPED["journeys"][0], SHIPPED["journeys"][0]]}
    with pytest.raises(ConfigError, match="journey ids used twice: cart_recovery"):
        load_journeys(_write(tmp_path, twice))
    dup = tmp_path / "dup.yaml"
    dup.write_text("journeys: []\njourneys: []\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_journeys(dup)
    with pytest.raises(ConfigError, match="journeys file not found"):
        load_journeys(tmp_path / "missing.yaml")
