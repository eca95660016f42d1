"""Customer data: stored profiles, identity resolution, erasure (HTTP desk and import CLI)."""

from service.customers.desk import CustomerDesk, RowError, to_record
from service.customers.models import (
    ConsentGiven,
    CustomerIn,
    CustomersRequest,
    CustomersResponse,
    EraseRequest,
    EraseResponse,
    UnmergeRequest,
    UnmergeResponse,
)

__all__ = [
    "ConsentGiven",
    "CustomerDesk",
    "CustomerIn",
    "CustomersRequest",
    "CustomersResponse",
    "EraseRequest",
    "EraseResponse",
    "RowError",
    "UnmergeRequest",
    "UnmergeResponse",
    "to_record",
]
