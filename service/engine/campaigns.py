"""Campaigns: look one up, find the higher-priority campaign that blacks it out, and the
stable hold-out draw that puts a customer in a campaign's control group. See
docs/design.md, "Decision engine" (Who)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from service.config import Campaign, Settings


class UnknownCampaign(KeyError):
    """The requested campaign is not configured."""


def campaign_by_id(settings: Settings, campaign_id: str) -> Campaign:
    """The configured campaign ``campaign_id``; :class:`UnknownCampaign` names the known ones."""
    for campaign in settings.campaigns:
        if campaign.id == campaign_id:
            return campaign
    known = ", ".join(c.id for c in settings.campaigns)
    raise UnknownCampaign(f"unknown campaign {campaign_id!r}; configured campaigns: {known}")


def blocking_campaign(settings: Settings, campaign: Campaign, at: datetime) -> Campaign | None:
    """The highest-priority active campaign that blocks ``campaign`` at ``at``, if any."""
    blockers = [
        c
        for c in settings.campaigns
        if c.id != campaign.id
        and c.blocks_lower_priority
        and c.priority > campaign.priority
        and c.is_active(at)
    ]
    return max(blockers, key=lambda c: c.priority) if blockers else None


def holdout_draw(customer_id: str, campaign_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, campaign, customer): same on every restart."""
    key = f"{salt}\x1f{campaign_id}\x1f{customer_id}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def in_holdout(customer_id: str, campaign_id: str, salt: str, share: float) -> bool:
    """Whether the customer is in the campaign's control group (``share`` of all customers)."""
    return holdout_draw(customer_id, campaign_id, salt) < share
