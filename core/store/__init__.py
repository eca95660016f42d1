"""Contact-history store: decisions, message events, consents and dispatch attempts.

The decision service must remember whom it contacted, when and on which channel, to
enforce frequency caps, consent and fatigue, and to learn which channel works for whom.
:class:`ContactStore` is the small interface the rest of the service depends on;
:class:`SqlContactStore` implements it with SQLAlchemy Core on any SQLAlchemy URL
(SQLite by default, PostgreSQL for several hosts). This package re-exports its public API:

* :mod:`core.store.records` — the records, the store's errors and input checks;
* :mod:`core.store.caps` — frequency caps and a customer's history, plain Python (what
  counts as a contact is defined there);
* :mod:`core.store.base` — the :class:`ContactStore` interface;
* :mod:`core.store.schema` — the append-only SQL tables and the UTC timestamp type;
* :mod:`core.store.queries` — the composed SQL statements and row <-> record helpers;
* :mod:`core.store.keys` — API keys (hashed) in the same database;
* :mod:`core.store.behaviour` — behaviour events (carts, returns, browsing) with items;
* :mod:`core.store.serving` — what every replica serves (model versions, snapshot);
* :mod:`core.store.jobs` — background jobs (retraining) and their status;
* :mod:`core.store.journeys` — journey enrolments, step runs (exactly once), pauses;
* :mod:`core.store.points` — the loyalty points ledger (earn, burn, adjust, expiry);
* :mod:`core.store.profiles` — stored profiles, identity resolution (merges, undo);
* :mod:`core.store.sql` — :class:`SqlContactStore` and :func:`open_store`;
* :mod:`core.store.upgrade` — in-place upgrades of a store made by an earlier version.
"""

from __future__ import annotations

from core.store.base import ContactStore
from core.store.behaviour import BehaviourLog, BehaviourRecord
from core.store.caps import (
    DAY,
    WEEK,
    CapSpec,
    ContactCounts,
    CustomerHistory,
    Engagement,
    cap_contacts,
    count_contacts,
)
from core.store.jobs import Job, JobRunning, JobStore
from core.store.journeys import Enrolment, JourneyState, StepRun
from core.store.keys import ApiKey, KeyStore, hash_key
from core.store.points import (
    EarnRule,
    ExpiringPoints,
    InsufficientPoints,
    PointsBalance,
    PointsEntry,
    PointsLedger,
)
from core.store.profiles import (
    AmbiguousIdentifier,
    ErasedCustomer,
    ProfileRecord,
    ProfileStore,
    StoredProfile,
    UnknownMerge,
    UpsertResult,
)
from core.store.records import (
    BEHAVIOUR_EVENTS,
    DISPATCH_STATUSES,
    EVENT_TYPES,
    FRAME_MAX,
    FRAME_MIN,
    KNOWN_CHANNELS,
    AlreadyDispatched,
    ContactRecord,
    DecisionRecord,
    DispatchAttempt,
    DispatchInProgress,
    DuplicateDecision,
    EventRecord,
    InvalidRecord,
    NotDispatchable,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
    UnknownDecision,
    as_utc,
)
from core.store.schema import metadata
from core.store.serving import Served, ServingLog
from core.store.sql import SqlContactStore, open_store

__all__ = [
    "DAY",
    "BEHAVIOUR_EVENTS",
    "DISPATCH_STATUSES",
    "EVENT_TYPES",
    "FRAME_MAX",
    "FRAME_MIN",
    "KNOWN_CHANNELS",
    "WEEK",
    "AlreadyDispatched",
    "ApiKey",
    "CapSpec",
    "ContactCounts",
    "Enrolment",
    "JourneyState",
    "StepRun",
    "ContactRecord",
    "ContactStore",
    "CustomerHistory",
    "DecisionRecord",
    "DispatchAttempt",
    "DispatchInProgress",
    "DuplicateDecision",
    "Engagement",
    "EventRecord",
    "InvalidRecord",
    "BehaviourLog",
    "BehaviourRecord",
    "Job",
    "JobRunning",
    "JobStore",
    "KeyStore",
    "EarnRule",
    "ExpiringPoints",
    "InsufficientPoints",
    "PointsBalance",
    "PointsEntry",
    "PointsLedger",
    "AmbiguousIdentifier",
    "ErasedCustomer",
    "ProfileRecord",
    "ProfileStore",
    "StoredProfile",
    "UnknownMerge",
    "UpsertResult",
    "Served",
    "ServingLog",
    "NotDispatchable",
    "SqlContactStore",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "UnknownDecision",
    "as_utc",
    "cap_contacts",
    "hash_key",
    "count_contacts",
    "metadata",
    "open_store",
]
