"""The runtime's domain errors, each mapped to one HTTP status by :mod:`service.service`."""

from __future__ import annotations

__all__ = ["Conflict", "DataUnavailable", "ModelsUnavailable", "Rejected", "UnknownCustomer"]


class UnknownCustomer(LookupError):
    """The customer is not in the snapshot (HTTP 404)."""


class Rejected(ValueError):
    """A well-formed request the service cannot act on (HTTP 422); nothing was written."""


class Conflict(RuntimeError):
    """The request conflicts with the stored state (HTTP 409); nothing was written."""


class ModelsUnavailable(RuntimeError):
    """A champion is missing or cannot be loaded (start-up / reload failure)."""


class DataUnavailable(RuntimeError):
    """The transaction log cannot be read to rebuild the snapshot (reload; HTTP 503)."""
