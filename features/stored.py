"""The stored serving snapshot: four Parquet files and a JSON meta in one folder.

Training writes it (:func:`write_stored`) and logs the folder as the ``snapshot`` artifact
of a run tagged ``revival.snapshot=1``; a service replica downloads the newest such folder
and reads it (:func:`read_stored`) instead of refeaturising the transaction log.

Files (``schema_version`` 1)::

    features.parquet   one row per customer: index customer_id, build_features' float64
                       columns (Parquet keeps float64 bit for bit, NaN included)
    bought.parquet     customer_id, item_id, last (epoch s UTC, float64), times (int64)
    returned.parquet   customer_id, item_id, last (epoch s UTC, float64)
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

from features.loaders import CleaningReport
from features.serving import Bought, Returned, ServingData

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


def _history_table(history: dict[str, dict[str, Any]], times: bool) -> pa.Table:
    """The nested item history as one long table, rows grouped by customer."""
    customers: list[str] = []
    items: list[str] = []
    values: list[Any] = []
    for cid, per_item in history.items():
        customers.extend([cid] * len(per_item))
        items.extend(per_item)
        values.extend(per_item.values())
    columns: dict[str, pa.Array] = {
        "customer_id": pa.array(customers, pa.string()),
        "item_id": pa.array(items, pa.string()),
    }
    if times:
        columns["last"] = pa.array([v[0] for v in values], pa.float64())
        columns["times"] = pa.array([v[1] for v in values], pa.int64())
    else:
        columns["last"] = pa.array(values, pa.float64())
    return pa.table(columns)


def write_stored(data: ServingData, folder: str | Path) -> dict[str, Any]:
    """Write ``data`` into ``folder`` (created; existing files replaced); returns the meta."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data.features.to_parquet(folder / "features.parquet")
    pq.write_table(_history_table(data.bought, times=True), folder / "bought.parquet")
    pq.write_table(_history_table(data.returned, times=False), folder / "returned.parquet")
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
        "bought_rows": sum(len(v) for v in data.bought.values()),
        "returned_rows": sum(len(v) for v in data.returned.values()),
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


def _nested(table: pa.Table, times: bool) -> dict[str, dict[str, Any]]:
    """The long history table back as customer -> item -> value (one dict per run of rows
    of one customer; rows are grouped by customer as :func:`_history_table` wrote them)."""
    out: dict[str, dict[str, Any]] = {}
    n = table.num_rows
    if n == 0:
        return out
    customers = np.asarray(table.column("customer_id").to_pylist(), dtype=object)
    items = table.column("item_id").to_pylist()
    last = table.column("last").to_pylist()
    values = list(zip(last, table.column("times").to_pylist(), strict=True)) if times else last
    starts = np.flatnonzero(customers[1:] != customers[:-1]) + 1
    bounds = [0, *starts.tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        out.setdefault(customers[a], {}).update(zip(items[a:b], values[a:b], strict=True))
    return out


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
    bought: Bought = _nested(pq.read_table(folder / "bought.parquet"), times=True)
    returned: Returned = _nested(pq.read_table(folder / "returned.parquet"), times=False)
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
