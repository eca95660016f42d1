"""The ``loyalty:`` block of the policy: how purchases earn points, how long points live,
what a point is worth, and when customers are reminded that points expire.

Validated with the rest of :class:`service.config.Settings` (unknown keys refused). The
ledger itself is :mod:`core.store.points`; the ``bonus_points`` offer's size is its own
``points`` in the offer catalogue, its cost ``points * point_value``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.store import EarnRule

__all__ = ["LoyaltySettings"]


class LoyaltySettings(BaseModel):
    """Earn rule, expiry rule, the money value of a point and the expiry reminder."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    points_per_currency_unit: float = Field(
        default=1.0, ge=0, le=1000, description="points per currency unit spent (floored)"
    )
    expire_after_days: float = Field(
        default=365.0,
        gt=0,
        le=3650,
        description="an earned lot expires this long after the purchase",
    )
    point_value: float = Field(
        default=0.01, ge=0, le=1000, description="what a point costs the brand (currency)"
    )
    expiry_reminder_days: float = Field(
        default=30.0, gt=0, le=365, description="remind this long before points expire"
    )

    @property
    def rule(self) -> EarnRule:
        """The earn rule the ledger applies to a purchase."""
        return EarnRule(self.points_per_currency_unit, self.expire_after_days)

    @property
    def reminder_window(self) -> timedelta:
        """How far ahead expiring points are counted (``/customer``, the engine's inputs)."""
        return timedelta(days=self.expiry_reminder_days)

    def money(self, points: int) -> float:
        """The money value of ``points`` (currency)."""
        return points * self.point_value
