"""A customer's contact history as a decision reads it: contacts, consents, engagement, priors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.store import ContactStore, CustomerHistory
from service.engine import ContactHistory, PolicyParams
from service.runtime.population import PopulationCache

__all__ = ["ContactHistories"]


@dataclass
class ContactHistories:
    """Reads contact histories from the store, with the cached population priors."""

    store: ContactStore
    params: PolicyParams
    population: PopulationCache

    def since(self, now: datetime) -> datetime:
        """How far back a decision reads contacts: the ``forgotten`` horizon, and at least
        the frequency caps' week before ``now``."""
        return now - timedelta(days=max(self.params.forgotten_days, 8.0))

    def of(self, found: CustomerHistory) -> ContactHistory:
        """The decision engine's history from the store's, with the population priors."""
        return ContactHistory(
            contacts=found.contacts,
            consents=found.consents,
            engagement=found.engagement,
            population=self.population.get(),
            shadows=found.shadows,
        )

    def found(self, customer_id: str, now: datetime, bought_since: datetime) -> CustomerHistory:
        """What the store holds of the customer for a decision at ``now``: contacts,
        consents, engagement and the purchases since ``bought_since`` (the snapshot)."""
        return self.store.customer_history(customer_id, self.since(now), bought_since)

    def read(self, customer_id: str, now: datetime) -> ContactHistory:
        """The customer's contacts, consents and engagement as one decision reads them."""
        return self.of(self.store.customer_history(customer_id, self.since(now)))
