"""The stored serving snapshot: four Parquet files and a JSON meta in one folder.

Training writes it (:func:`write_stored`) and logs the folder as the ``snapshot`` artifact
of a run tagged ``revival.snapshot=1``; a service replica downloads the newest such folder
and reads it (:func:`read_stored`) instead of refeaturising the transaction log.

Files (``schema_version`` 1)::

    features.parquet   one row per customer: index customer_id, build_features' float64
                       columns (Parquet keeps float64 bit for bit, NaN included)
    bought.parquet     customer_id, item_id, last (epoch s UTC, float64), times (int64);
                       rows grouped by customer, ids dictionary-encoded (plain strings in
                       snapshots written before; both read)
    returned.parquet   customer_id, item_id, last (epoch s UTC, float64), the same way
    items.parquet      item_id, name
    meta.json          schema_version, cutoff, at (UTC), timezone (of the epochs), customers,
                       columns, row counts, data (file name, size, mtime, sha256 of its ends),
                       report (the cleaning report), created_at, files (sha256 of each file)

A reader refuses another schema version, a missing or altered file
(:class:`StoredSnapshotError`, naming the file): a damaged snapshot must not be served.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import ItemHistory
from features.loaders import CleaningReport
from features.serving import ServingData

__all__ = [
    "ARTIFACT_PATH",
    "META_FILE",
    "SCHEMA_VERSION",
    "SNAPSHOT_TAG",
    "StoredSnapshotError",
    "read_meta",
    "read_stored",
    "write_stored",
]

SCHEMA_VERSION = 1
SNAPSHOT_TAG = "revival.snapshot"  # run tag ("1") of a run holding a stored snapshot
ARTIFACT_PATH = "snapshot"  # the run's artifact folder holding the files
META_FILE = "meta.json"
_FILES = ("features.parquet", "bought.parquet", "returned.parquet", "items.parquet")
COUNTRIES_FILE = "countries.parquet"  # optional: snapshots stored before it have none


class StoredSnapshotError(ValueError):
    """A stored snapshot that cannot be read (missing file, other schema, altered file)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _history_table(history: ItemHistory) -> pa.Table:
    """The item history as one long table, rows grouped by customer, ids as dictionaries
    (an integer per row, each distinct id once)."""
    columns: dict[str, pa.Array] = {
        "customer_id": pa.DictionaryArray.from_arrays(
            history.customer_codes(), pa.array(history.customers, pa.string())
        ),
        "item_id": pa.DictionaryArray.from_arrays(
            history.item_codes, pa.array(history.item_ids, pa.string())
        ),
        "last": pa.array(history.last, pa.float64()),
    }
    if history.times is not None:
        columns["times"] = pa.array(history.times, pa.int64())
    return pa.table(columns)


def _history(table: pa.Table, times: bool) -> ItemHistory:
    """The long history table back as an :class:`ItemHistory` (plain or dictionary ids)."""
    customer, customers = _codes(table.column("customer_id"))
    item, item_ids = _codes(table.column("item_id"))
    return ItemHistory.from_codes(
        customer,
        customers,
        item,
        item_ids,
        table.column("last").to_numpy(),
        table.column("times").to_numpy() if times else None,
    )


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column as codes into its distinct values, without a Python string per row."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    encoded = column.combine_chunks().dictionary_encode()
    uniques = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    return encoded.indices.to_numpy(zero_copy_only=False), uniques


def write_stored(data: ServingData, folder: str | Path) -> dict[str, Any]:
    """Write ``data`` into ``folder`` (created; existing files replaced); returns the meta."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data.features.to_parquet(folder / "features.parquet")
    pq.write_table(_history_table(data.bought), folder / "bought.parquet")
    pq.write_table(_history_table(data.returned), folder / "returned.parquet")
    names = pa.table(
        {
            "item_id": pa.array(list(data.item_names), pa.string()),
            "name": pa.array(list(data.item_names.values()), pa.string()),
        }
    )
    pq.write_table(names, folder / "items.parquet")
    countries = pa.table(
        {
            "customer_id": pa.array(list(data.countries), pa.string()),
            "country": pa.array(list(data.countries.values()), pa.string()),
        }
    )
    pq.write_table(countries, folder / COUNTRIES_FILE)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "cutoff": data.cutoff.isoformat(),
        "at": data.at.isoformat(),
        "timezone": data.timezone,
        "customers": len(data.features),
        "columns": [str(c) for c in data.features.columns],
        "bought_rows": data.bought.pairs,
        "returned_rows": data.returned.pairs,
        "items": len(data.item_names),
        "data": data.data,
        "report": data.report.to_dict(),
        "created_at": datetime.now(UTC).isoformat(),
        "files": {name: _sha256(folder / name) for name in (*_FILES, COUNTRIES_FILE)},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The meta of the snapshot in ``folder``, its schema version checked."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoredSnapshotError(f"{path}: cannot read the snapshot meta: {exc}") from exc
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise StoredSnapshotError(
            f"{path}: schema_version {version!r}, this code reads {SCHEMA_VERSION}"
        )
    return meta


def _check_file(folder: Path, name: str, meta: dict[str, Any]) -> None:
    path = folder / name
    if not path.is_file():
        raise StoredSnapshotError(f"{path}: missing from the stored snapshot")
    if _sha256(path) != meta["files"].get(name):
        raise StoredSnapshotError(f"{path}: does not match the sha256 in {META_FILE}")


def read_stored(folder: str | Path) -> ServingData:
    """The snapshot stored in ``folder`` by :func:`write_stored`."""
    folder = Path(folder)
    meta = read_meta(folder)
    for name in _FILES:
        _check_file(folder, name, meta)
    features = pd.read_parquet(folder / "features.parquet")
    if [str(c) for c in features.columns] != meta["columns"] or len(features) != meta["customers"]:
        raise StoredSnapshotError(f"{folder / 'features.parquet'}: not the shape {META_FILE} says")
    bought = _history(pq.read_table(folder / "bought.parquet"), times=True)
    returned = _history(pq.read_table(folder / "returned.parquet"), times=False)
    countries: dict[str, str] = {}
    if COUNTRIES_FILE in meta["files"]:  # snapshots stored before customers' countries: none
        _check_file(folder, COUNTRIES_FILE, meta)
        table = pq.read_table(folder / COUNTRIES_FILE)
        countries = dict(
            zip(
                table.column("customer_id").to_pylist(),
                table.column("country").to_pylist(),
                strict=True,
            )
        )
    names = pq.read_table(folder / "items.parquet")
    item_names = dict(
        zip(names.column("item_id").to_pylist(), names.column("name").to_pylist(), strict=True)
    )
    return ServingData(
        cutoff=pd.Timestamp(meta["cutoff"]),
        timezone=meta["timezone"],
        features=features,
        bought=bought,
        returned=returned,
        item_names=item_names,
        report=CleaningReport(**meta["report"]),
        data=meta.get("data") or {},
        countries=countries,
    )
