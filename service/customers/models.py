"""The HTTP models of customer data: profile upsert, merge undo, erasure."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, StringConstraints, field_validator

from service.config import ChannelName, Locale
from service.schemas import Day, Id, Moment, Whole, _In, _Out

__all__ = [
    "ConsentGiven",
    "CustomerIn",
    "CustomersRequest",
    "CustomersResponse",
    "EraseRequest",
    "EraseResponse",
    "IdentifierKind",
    "MergeOut",
    "SharedOut",
    "UnmergeRequest",
    "UnmergeResponse",
]

IdentifierKind = Literal["phone", "email", "wechat_openid", "wechat_unionid", "member_id"]
SourceName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
MAX_CUSTOMERS = 10_000  # profiles per request (the CLI import pages bigger files)


class ConsentGiven(_In):
    """A channel consent as the source recorded it."""

    granted: bool
    ts: Moment | None = Field(default=None, description="when it was given (default: now)")
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "profile"


class CustomerIn(_In):
    """One source's record of a customer (created, or updated field by field: a field left
    out keeps its stored value; identifiers are added, never removed)."""

    customer_id: Id = Field(description="the source's own id of the customer")
    source: SourceName | None = Field(default=None, description="default: the primary source")
    identifiers: dict[IdentifierKind, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict
    )
    consents: dict[ChannelName, ConsentGiven] = Field(default_factory=dict)
    locale: Locale | None = None
    timezone: str | None = Field(default=None, max_length=64)
    country: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    birthday: Day | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("birthday")
    @classmethod
    def _past(cls, value: date | None) -> date | None:
        if value is not None and not date(1900, 1, 1) <= value <= date.today():
            raise ValueError("must lie between 1900-01-01 and today")
        return value


class CustomersRequest(_In):
    """Create or update profiles in one batch; profiles sharing an identifier join."""

    customers: list[CustomerIn] = Field(min_length=1, max_length=MAX_CUSTOMERS)


class MergeOut(_Out):
    survivor: str
    absorbed: str
    kind: str


class SharedOut(_Out):
    kind: str
    value: str
    profiles: int


class CustomersResponse(_Out):
    created: int
    updated: int
    consents_recorded: int
    customers: dict[str, str] = Field(description="profile id -> unified customer id")
    merges: list[MergeOut]
    over_shared: list[SharedOut] = Field(description="identifiers that joined nobody")


class UnmergeRequest(_In):
    merge_id: Whole = Field(ge=1, le=2**62)


class UnmergeResponse(_Out):
    merge_id: int
    customers: list[str] = Field(description="the customers the merged one split into")


class EraseRequest(_In):
    """A right-to-erasure request: the customer (any identifier) and why."""

    customer_id: Id
    reason: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class EraseResponse(_Out):
    tombstone: str = Field(description="what now stands for the customer in kept records")
    erased_at: datetime
    rows: dict[str, int] = Field(description="rows deleted or anonymised, per table")
