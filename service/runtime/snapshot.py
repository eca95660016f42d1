"""The point-in-time snapshot a replica serves: features and item history of every customer.

Training stores it once per run (:mod:`features.stored`, the ``snapshot`` artifact of an
MLflow run tagged ``revival.snapshot=1``); at start-up and on ``/reload {"data": true}`` a
replica loads the newest stored one from its tracking store (a fraction of a second and a
few MB of files) instead of refeaturising the whole log. Without any stored snapshot it
falls back to building one from ``data_path`` as before, with a WARNING saying how to store
one. Every snapshot names its ``source``: the MLflow run id, or ``data:<path>``.

Pinning (so that every replica serves the same snapshot): the ``snapshot`` setting
(``REVIVAL_SNAPSHOT``) or the ``source`` argument of :func:`load_snapshot` is ``"newest"``
(default), ``"data"`` (always featurise ``data_path``) or a run id; pass one replica's
``Snapshot.source`` to the others. :func:`newest_snapshot_run` says which run is newest.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core.env import tracking_uri as env_tracking_uri
from core.identity import erasure_hash
from features.history import ItemHistory
from features.loaders import CleaningReport
from features.serving import ServingData, build_serving
from features.sources import Source, load_sources
from features.stored import ARTIFACT_PATH, SNAPSHOT_TAG, StoredSnapshotError, read_stored
from service.config import Settings

__all__ = [
    "REGULARS_KEPT",
    "FeatureRow",
    "Snapshot",
    "build_snapshot",
    "load_snapshot",
    "newest_snapshot_run",
    "stored_snapshot",
]

log = logging.getLogger(__name__)

REGULARS_KEPT = 50  # own items kept per customer, most bought first
HOW_TO_STORE = (
    "store one with `python -m training` (it logs one at its end) or "
    "`python -m training.score --snapshot-only`"
)


@dataclass
class Snapshot:
    """Everything derived from the transaction log at start-up (or on a data reload)."""

    cutoff: pd.Timestamp
    at: datetime
    features: pd.DataFrame
    positions: dict[str, int]
    columns: list[str]
    values: np.ndarray  # features as a float matrix (row lookups without pandas)
    bought: ItemHistory  # customer -> item -> (last epoch, times bought)
    returned: ItemHistory  # customer -> item -> last epoch
    item_names: dict[str, str]
    report: CleaningReport
    seconds: float
    source: str = ""  # the MLflow run id of a stored snapshot, or "data:<path>"
    timezone: str = ""  # the zone the item-history epochs were computed in
    origin: dict[str, Any] = field(default_factory=dict)  # the data file it was built from
    countries: dict[str, str] = field(default_factory=dict)  # customer -> usual country
    column_index: dict[str, int] = field(init=False)  # feature name -> column of ``values``

    def __post_init__(self) -> None:
        self.column_index = {name: i for i, name in enumerate(self.columns)}

    def regulars(self, customer_id: str) -> list[str]:
        """The customer's own items, most bought first (:func:`service.engine.regulars`'
        order, which the history keeps), at most :data:`REGULARS_KEPT`."""
        return self.bought.head(customer_id, REGULARS_KEPT)


class FeatureRow(Mapping[str, float]):
    """One customer's row of :attr:`Snapshot.values`, read by feature name. A decision reads
    a handful of columns: building a dict of all of them cost more than the reads."""

    __slots__ = ("_index", "_row")

    def __init__(self, index: Mapping[str, int], row: np.ndarray) -> None:
        self._index = index
        self._row = row

    def __getitem__(self, name: str) -> float:
        return float(self._row[self._index[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _snapshot(data: ServingData, source: str, t0: float) -> Snapshot:
    feats = data.features
    return Snapshot(
        cutoff=data.cutoff,
        at=data.at,
        features=feats,
        positions={c: i for i, c in enumerate(feats.index.astype(str))},
        columns=[str(c) for c in feats.columns],
        values=feats.to_numpy(dtype=float),
        bought=data.bought,
        returned=data.returned,
        item_names=data.item_names,
        report=data.report,
        seconds=time.perf_counter() - t0,
        source=source,
        timezone=data.timezone,
        origin=data.data,
        countries=data.countries,
    )


def _without(snap: Snapshot, erased: Collection[str]) -> Snapshot:
    """``snap`` without the customers whose :func:`core.identity.erasure_hash` is in
    ``erased`` (a stored snapshot made before their erasure)."""
    gone = {c for c in snap.positions if erased and erasure_hash(c) in erased}
    if not gone:
        return snap
    keep = ~snap.features.index.astype(str).isin(gone)
    features = snap.features[keep]
    return dataclasses.replace(
        snap,
        features=features,
        positions={c: i for i, c in enumerate(features.index.astype(str))},
        values=snap.values[keep],
        bought=snap.bought.without(gone),
        returned=snap.returned.without(gone),
        countries={c: v for c, v in snap.countries.items() if c not in gone},
    )


def build_snapshot(
    settings: Settings, identity: Mapping[str, str] | None = None, erased: Collection[str] = ()
) -> Snapshot:
    """Featurise ``data_path`` and the ``identity.sources`` logs, on the customers the
    ``identity`` map unifies and without the ``erased`` ones, at the day after the last
    transaction (the slow path)."""
    t0 = time.perf_counter()
    ident = settings.identity
    loaded = load_sources(
        Source(ident.primary_source, settings.data_path, settings.log_mapping),
        [Source(s.name, s.path) for s in ident.sources],
        identity,
        erased,
    )
    if loaded.transactions.empty:
        raise ValueError(f"{settings.data_path}: no usable transactions")
    data = build_serving(loaded, settings.default_timezone, data_path=settings.data_path)
    return _snapshot(data, f"data:{settings.data_path}", t0)


def newest_snapshot_run(uri: str) -> str | None:
    """The id of the newest finished run tagged ``revival.snapshot=1`` in any experiment of
    the tracking store ``uri`` (by start time), or ``None`` when there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(
        ids,
        filter_string=f"tags.`{SNAPSHOT_TAG}` = '1' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def stored_snapshot(uri: str, run_id: str) -> Snapshot:
    """The snapshot stored by run ``run_id`` of ``uri`` (:class:`StoredSnapshotError`, a
    ``ValueError``, naming the run when it holds none or a damaged one)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="revival-snapshot-") as tmp:
        try:
            folder = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT_PATH, dst_path=tmp, tracking_uri=uri
            )
        except (MlflowException, OSError) as exc:
            raise StoredSnapshotError(
                f"run {run_id} in {uri}: no readable '{ARTIFACT_PATH}' artifact: {exc}"
            ) from exc
        try:
            data = read_stored(folder)
        except StoredSnapshotError as exc:
            raise StoredSnapshotError(f"run {run_id} in {uri}: {exc}") from exc
    return _snapshot(data, run_id, t0)


def load_snapshot(
    settings: Settings,
    source: str | None = None,
    identity: Mapping[str, str] | None = None,
    erased: Collection[str] = (),
) -> Snapshot:
    """The snapshot to serve. ``source`` (default: the ``snapshot`` setting) is ``"newest"``
    (the newest stored snapshot, else ``data_path`` with a WARNING), ``"data"`` or
    ``"data:<anything>"`` (featurise ``data_path``), or the id of a run holding one.
    ``identity`` (profile → customer) unifies the customers of a featurised log; ``erased``
    (:meth:`core.store.ProfileStore.erased_hashes`) are left out of any snapshot."""
    source = source or settings.snapshot
    if source == "data" or source.startswith("data:"):
        return build_snapshot(settings, identity, erased)
    uri = env_tracking_uri(settings.mlflow_tracking_uri)
    run_id = source
    if source == "newest":
        from mlflow.exceptions import MlflowException

        try:
            run_id = newest_snapshot_run(uri)
        except MlflowException as exc:
            raise StoredSnapshotError(f"{uri}: cannot search for stored snapshots: {exc}") from exc
        if run_id is None:
            log.warning(
                "no stored snapshot in %s: featurising %s at start-up instead (slow); %s",
                uri,
                settings.data_path,
                HOW_TO_STORE,
            )
            return build_snapshot(settings, identity, erased)
    snap = _without(stored_snapshot(uri, run_id), erased)
    origin = snap.origin.get("path") or snap.report.source
    log.info(
        "stored snapshot at cut-off %s (%d customers) from run %s, built from %s "
        "(data_path %s is not read)",
        snap.cutoff.date(),
        len(snap.features),
        run_id,
        origin,
        settings.data_path,
    )
    if snap.timezone != settings.default_timezone:
        log.warning(
            "snapshot of run %s has item times in %s, default_timezone is %s",
            run_id,
            snap.timezone,
            settings.default_timezone,
        )
    return snap
