"""Data contracts, loaders, point-in-time customer features, labels and lifecycle stages.

This package is shared by training and serving so that both compute features with the
same code (no training/serving skew).
"""

from features.contracts import (
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    TRANSACTION_COLUMNS,
    DataContractError,
    validate_customers,
    validate_events,
    validate_transactions,
)
from features.cutoff import parse_cutoff
from features.labels import (
    backtest_cutoff,
    build_labels,
    build_training_frame,
    training_cutoffs,
)
from features.lifecycle import STAGES, TIERS, assign_lifecycle
from features.loaders import (
    CleaningReport,
    load_csv,
    load_hillstrom,
    load_online_retail,
    load_transactions,
)
from features.serving import ServingData, build_serving
from features.snapshot import FEATURE_COLUMNS, build_features
from features.stored import StoredSnapshotError, read_stored, write_stored

__all__ = [
    "CUSTOMER_COLUMNS",
    "EVENT_COLUMNS",
    "FEATURE_COLUMNS",
    "STAGES",
    "TIERS",
    "TRANSACTION_COLUMNS",
    "CleaningReport",
    "DataContractError",
    "ServingData",
    "StoredSnapshotError",
    "assign_lifecycle",
    "backtest_cutoff",
    "build_features",
    "build_labels",
    "build_serving",
    "build_training_frame",
    "load_csv",
    "load_hillstrom",
    "load_online_retail",
    "load_transactions",
    "parse_cutoff",
    "read_stored",
    "training_cutoffs",
    "validate_customers",
    "validate_events",
    "validate_transactions",
    "write_stored",
]
