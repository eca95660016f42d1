"""``/points``: spend (``burn``) or correct (``adjust``) a customer's loyalty points.

Earning needs no endpoint: a purchase posted to ``/events`` earns by the policy's
``loyalty`` rule. The route needs scope ``events`` (a till or shop spending points); an
``adjust`` (a goodwill grant, a correction) additionally needs ``admin``, checked here on
the calling key's scopes. ``ref`` is the caller's reference: the same (customer, kind, ref)
again changes nothing (``stored`` false), so a retried request is safe. A burn the balance
cannot cover is a 409 naming ``points``; nothing is written before the request validates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from core.store import InsufficientPoints
from service.auth import allows
from service.runtime import Conflict, Rejected, Runtime
from service.runtime.clock import aware
from service.schemas import NOT_BLANK, Id, Moment, _In, _Out

__all__ = ["NeedsScope", "PointsDesk", "PointsRequest", "PointsResponse"]

POINTS_LIMIT = 1_000_000_000  # per request


class NeedsScope(PermissionError):
    """The key may call the route but not do what the body asks (HTTP 403)."""


class PointsRequest(_In):
    """Spend ``points`` (``burn``: positive, oldest points first) or correct the balance
    (``adjust``: signed; a positive adjustment expires like earned points) at ``ts``
    (default now)."""

    customer_id: Id
    kind: Literal["burn", "adjust"]
    points: int = Field(ge=-POINTS_LIMIT, le=POINTS_LIMIT)
    ref: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=NOT_BLANK),
    ] = Field(description="the caller's reference (order, refund, ticket): stored once")
    ts: Moment | None = None
    note: Annotated[str, StringConstraints(max_length=255)] | None = None

    @field_validator("points")
    @classmethod
    def _signed(cls, value: int, info: ValidationInfo) -> int:
        if value == 0:
            raise ValueError("must not be zero")
        if value < 0 and info.data.get("kind") == "burn":
            raise ValueError("a burn takes a positive number of points (an adjust is signed)")
        return value


class PointsResponse(_Out):
    """The operation and the customer's points right after it (at ``ts``)."""

    customer_id: str
    kind: str
    points: int
    ref: str
    ts: datetime
    stored: bool = Field(description="false: this ref was stored before; nothing changed")
    balance: int
    expiring: int
    expiring_by: datetime | None


class PointsDesk:
    """Answers ``/points`` on the runtime's store and settings."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def apply(self, req: PointsRequest, scopes: tuple[str, ...]) -> PointsResponse:
        """Burn or adjust for the unified customer ``req.customer_id`` names (module doc)."""
        if req.kind == "adjust" and not allows(scopes, "admin"):
            raise NeedsScope(
                "kind: an adjust needs a key with scope 'admin' (a burn needs 'events'); "
                f"this key has {list(scopes)}"
            )
        settings, ledger = self.runtime.settings, self.runtime.store.points
        customer = self.runtime.resolve([req.customer_id])[req.customer_id]
        now = datetime.now(UTC)
        ts = aware(req.ts, settings, default=now)
        tolerance = settings.events.future_tolerance_seconds
        if ts > now + timedelta(seconds=tolerance):
            raise Rejected(
                f"ts: {ts.isoformat()} is later than the server clock plus {tolerance:g} s "
                "(events.future_tolerance_seconds)"
            )
        try:
            if req.kind == "burn":
                stored = ledger.burn(customer, req.points, ts, req.ref)
            else:
                life = timedelta(days=settings.loyalty.expire_after_days)
                expires = ts + life if req.points > 0 else None
                stored = ledger.adjust(customer, req.points, ts, req.ref, req.note, expires)
        except InsufficientPoints as exc:
            raise Conflict(f"points: {exc}") from None
        balance = ledger.balance(customer, ts, settings.loyalty.reminder_window)
        return PointsResponse(
            customer_id=customer,
            kind=req.kind,
            points=req.points,
            ref=req.ref,
            ts=ts,
            stored=stored,
            balance=balance.balance,
            expiring=balance.expiring,
            expiring_by=balance.expiring_by,
        )
