"""The contact-store interface: what the decision service, reports and retraining call.

:class:`ContactStore` holds exactly the methods that code outside the store calls through
it (``service``, ``core.attribution``, ``training.retrain``); :class:`core.store.sql.SqlContactStore`
implements it. The store remembers whom the service contacted, when and on which channel, to
enforce frequency caps, consent and fatigue, and to learn which channel works for whom.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import pandas as pd

from core.store.behaviour import BehaviourLog
from core.store.caps import CapSpec, CustomerHistory, Engagement
from core.store.jobs import JobStore
from core.store.journeys import JourneyState
from core.store.keys import KeyStore
from core.store.points import PointsLedger
from core.store.profiles import ProfileStore
from core.store.records import DecisionRecord, DispatchAttempt, EventRecord
from core.store.serving import ServingLog

__all__ = ["ContactStore"]


class ContactStore(abc.ABC):
    """The contact history the decision service reads and appends to."""

    @property
    @abc.abstractmethod
    def keys(self) -> KeyStore:
        """The API keys kept in this store (shared by every service replica using it)."""

    @property
    @abc.abstractmethod
    def serving(self) -> ServingLog:
        """What every replica serves: model versions and snapshot (:mod:`core.store.serving`)."""

    @property
    @abc.abstractmethod
    def behaviour(self) -> BehaviourLog:
        """Behaviour events with their items (:mod:`core.store.behaviour`)."""

    @property
    @abc.abstractmethod
    def journeys(self) -> JourneyState:
        """Journey enrolments and step runs (:mod:`core.store.journeys`)."""

    @property
    @abc.abstractmethod
    def points(self) -> PointsLedger:
        """The loyalty points ledger (:mod:`core.store.points`)."""

    @property
    @abc.abstractmethod
    def profiles(self) -> ProfileStore:
        """Customer profiles and identity resolution (:mod:`core.store.profiles`)."""

    @property
    @abc.abstractmethod
    def jobs(self) -> JobStore:
        """Background jobs, shared by every replica (:mod:`core.store.jobs`)."""

    @abc.abstractmethod
    def decide_and_reserve(
        self,
        customer_id: str,
        since: datetime,
        decide: Callable[[CustomerHistory], tuple[DecisionRecord, CapSpec | None]],
        bought_since: datetime | None = None,
    ) -> tuple[DecisionRecord, str | None]:
        """Read the history, ``decide`` on it and record the result, atomically.

        The customer's history since ``since`` (purchases since ``bought_since``, default
        ``since``) is read, ``decide`` turns it into a record
        (and the caps that bound it, or None), and the record is stored only if it fits the
        caps as counted on that same history — no other writer can take the slot in
        between. Returns ``(record, None)`` when stored, ``(record, reason)`` when refused
        (nothing stored). ``since`` must reach a week before the contact time.
        """

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """The stored decision, or None."""
        return self.get_decisions([decision_id]).get(decision_id)

    @abc.abstractmethod
    def get_decisions(self, decision_ids: Iterable[str]) -> dict[str, DecisionRecord]:
        """The stored decisions among ``decision_ids``, by id (unknown ids are left out)."""

    @abc.abstractmethod
    def first_sends(self, decision_ids: Iterable[str]) -> dict[tuple[str, str], datetime]:
        """The earliest stored ``sent`` event of each (customer, decision) among events that
        reference ``decision_ids``, keyed by ``(customer_id, decision_id)``."""

    @abc.abstractmethod
    def latest_decision(
        self, customer_id: str, before: datetime | None = None
    ) -> DecisionRecord | None:
        """The customer's most recent decision (decision time strictly before ``before``)."""

    @abc.abstractmethod
    def record_events(self, events: Sequence[EventRecord]) -> tuple[int, int]:
        """Append a batch in one transaction; return ``(inserted, duplicates)``."""

    @abc.abstractmethod
    def population_engagement(self, since: datetime | None = None) -> dict[str, Engagement]:
        """Per-channel message outcomes over all customers (priors for channel learning)."""

    @abc.abstractmethod
    def set_consent(
        self,
        customer_id: str,
        channel: str,
        granted: bool,
        ts: datetime,
        source: str,
        *,
        dedup_key: str | None = None,
        if_changed: bool = False,
    ) -> bool:
        """Append a consent change for ``(customer_id, channel)``; False (nothing stored)
        when ``dedup_key`` is already stored, or when ``if_changed`` and the customer's
        current consent for ``channel`` (as of ``ts``) already is ``granted``."""

    @abc.abstractmethod
    def consents(self, customer_id: str, as_of: datetime | None = None) -> dict[str, bool]:
        """The customer's consent per channel with any history, as of ``as_of`` (default
        now); channels without history are absent."""

    @abc.abstractmethod
    def customer_history(
        self, customer_id: str, since: datetime, bought_since: datetime | None = None
    ) -> CustomerHistory:
        """Contacts since ``since`` (scheduled ones included), current consents,
        all-time engagement and purchase events since ``bought_since`` (default ``since``), read together (in one transaction where the backend allows:
        the decision service calls this on every decision)."""

    @abc.abstractmethod
    def decisions_between(
        self, start: datetime, end: datetime, campaign_id: str | None = None
    ) -> pd.DataFrame:
        """Decisions with ``start <= ts < end`` as a frame (timestamps tz-aware UTC; the
        period is clipped to ``FRAME_MIN``..``FRAME_MAX``, what pandas can hold)."""

    @abc.abstractmethod
    def events_between(
        self,
        start: datetime,
        end: datetime,
        customer_id: str | None = None,
        event: str | None = None,
        campaign_id: str | None = None,
    ) -> pd.DataFrame:
        """Events with ``start <= ts < end`` as a frame (timestamps tz-aware UTC; the
        period is clipped to ``FRAME_MIN``..``FRAME_MAX``, what pandas can hold)."""

    @abc.abstractmethod
    def begin_dispatch(
        self, decision_id: str, customer_id: str, channel: str, ts: datetime, lease_s: float = 300.0
    ) -> int:
        """Open a dispatch attempt (log ``sending``) and return its number.

        Raises :class:`UnknownDecision`, :class:`AlreadyDispatched`,
        :class:`DispatchInProgress` (an attempt opened less than ``lease_s`` ago has no
        outcome yet) or :class:`NotDispatchable` (recorded as a failed attempt).
        """

    @abc.abstractmethod
    def finish_dispatch(self, outcome: DispatchAttempt) -> bool:
        """Log the outcome of an open attempt.

        For ``sent`` it also marks the decision sent and appends a ``sent`` event, in the
        same transaction. Returns True only if this outcome is the decision's (first)
        success: False for ``failed`` and for a ``sent`` that another attempt beat.
        """

    @abc.abstractmethod
    def dispatch_success(self, decision_id: str) -> DispatchAttempt | None:
        """The successful attempt of ``decision_id``, if any."""

    @abc.abstractmethod
    def dispatch_attempts(self, decision_id: str) -> list[DispatchAttempt]:
        """The dispatch log of ``decision_id`` in order (``sending`` rows and outcomes)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> ContactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
