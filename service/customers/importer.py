"""Profile import from a CSV or Parquet export through a column mapping.

The mapping names, for each profile field, the file's column (a YAML file or ``--map
field=column``; unmapped fields whose name is a column map to themselves). Fields:
``customer_id`` (required), ``source``, the identifiers ``phone``, ``email``,
``wechat_openid``, ``wechat_unionid``, ``member_id``, the facts ``locale``, ``timezone``,
``country``, ``birthday``, ``name``, and per channel ``consent_<channel>`` (yes/no, true/false,
1/0; empty: not stated) with ``consent_ts`` and ``consent_source``. Rows are validated like
``/customers`` (:class:`service.customers.CustomerIn`); a bad value drops its row, counted per
field with the first line numbers — or stops the import before anything is stored
(``strict``). Rows are stored in pages, each one upsert (and stitching) in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from core.store import ProfileRecord
from features.contracts import BOOL_WORDS
from service.config import CHANNELS, Settings
from service.customers.desk import CustomerDesk, RowError, to_record
from service.customers.models import CustomerIn

__all__ = ["FIELDS", "ImportReport", "import_profiles", "import_with_progress", "read_mapping"]

IDENTIFIER_FIELDS = ("phone", "email", "wechat_openid", "wechat_unionid", "member_id")
FACT_FIELDS = ("locale", "timezone", "country", "birthday", "name")
CONSENT_FIELDS = tuple(f"consent_{ch}" for ch in CHANNELS)
FIELDS = (
    "customer_id",
    "source",
    *IDENTIFIER_FIELDS,
    *FACT_FIELDS,
    *CONSENT_FIELDS,
    "consent_ts",
    "consent_source",
)
PAGE = 5_000
_SAMPLE = 5  # line numbers kept per error field


@dataclass
class ImportReport:
    """What an import read, stored and refused (per field, with the first line numbers)."""

    source: str
    rows_in: int = 0
    rows_stored: int = 0
    created: int = 0
    updated: int = 0
    merges: int = 0
    consents_recorded: int = 0
    over_shared: dict[str, int] = field(default_factory=dict)  # "kind value" -> profiles
    refused: dict[str, list[int]] = field(default_factory=dict)  # field -> line numbers
    refused_rows: int = 0

    def to_text(self) -> str:
        lines = [
            f"file        {self.source}",
            f"rows in     {self.rows_in:>9,}",
            f"stored      {self.rows_stored:>9,}  ({self.created:,} new, {self.updated:,} updated)",
            f"refused     {self.refused_rows:>9,}",
        ]
        for name, rows in sorted(self.refused.items()):
            lines.append(f"  {name:<28} e.g. lines {rows[:_SAMPLE]}")
        lines += [
            f"merges      {self.merges:>9,}",
            f"consents    {self.consents_recorded:>9,}",
            f"over-shared {len(self.over_shared):>9,}  (joined nobody)",
        ]
        return "\n".join(lines)


def read_mapping(path: str | Path | None, pairs: list[str], columns: list[str]) -> dict[str, str]:
    """Field → column: the YAML file's, then ``field=column`` pairs, then same-named
    columns. Unknown fields and columns missing from the file are errors naming them."""
    import yaml

    mapping: dict[str, str] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a mapping must be 'field: column' pairs")
        mapping |= {str(k): str(v) for k, v in loaded.items()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--map {pair!r}: expected field=column")
        mapping[key.strip()] = value.strip()
    if unknown := sorted(set(mapping) - set(FIELDS)):
        raise ValueError(f"mapping: unknown field(s) {unknown}; fields: {list(FIELDS)}")
    if missing := sorted(c for c in mapping.values() if c not in columns):
        raise ValueError(f"mapping: column(s) {missing} not in the file (columns: {columns})")
    mapping |= {f: f for f in FIELDS if f in columns and f not in mapping}
    if "customer_id" not in mapping:
        raise ValueError(f"mapping: customer_id needs a column (columns: {columns})")
    return mapping


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype("string")
    return pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])


def _row(rec: Mapping[str, Any], default_source: str | None) -> dict[str, Any]:
    """One file row (mapped field → text or None) as a :class:`CustomerIn` payload."""

    def text(name: str) -> str | None:
        v = rec.get(name)
        return None if v is None or pd.isna(v) or not str(v).strip() else str(v).strip()

    out: dict[str, Any] = {"customer_id": text("customer_id") or ""}
    if src := text("source") or default_source:
        out["source"] = src
    out["identifiers"] = {k: v for k in IDENTIFIER_FIELDS if (v := text(k)) is not None}
    out |= {k: v for k in FACT_FIELDS if (v := text(k)) is not None}
    consents = {}
    for ch in CHANNELS:
        v = text(f"consent_{ch}")
        if v is None:
            continue
        if v.lower() not in BOOL_WORDS:
            raise RowError(f"consent_{ch}", f"not yes/no: {v!r}")
        given: dict[str, Any] = {"granted": BOOL_WORDS[v.lower()]}
        if ts := text("consent_ts"):
            given["ts"] = ts
        if src := text("consent_source"):
            given["source"] = src
        consents[ch] = given
    out["consents"] = consents
    return out


def _pages(frame: pd.DataFrame, mapping: Mapping[str, str]) -> Iterator[tuple[int, list[dict]]]:
    renamed = frame[list(mapping.values())].set_axis(list(mapping), axis=1)
    for start in range(0, len(renamed), PAGE):
        yield start, renamed.iloc[start : start + PAGE].to_dict("records")


def import_profiles(
    path: str | Path,
    desk: CustomerDesk,
    settings: Settings,
    *,
    mapping_file: str | Path | None = None,
    pairs: Sequence[str] = (),
    source: str | None = None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the profiles of ``path`` (module docstring); returns the report."""
    path = Path(path)
    frame = _read(path)
    mapping = read_mapping(mapping_file, list(pairs), [str(c) for c in frame.columns])
    report = ImportReport(source=str(path), rows_in=len(frame))
    checked = [
        _check_page(start, rows, source, settings, report) for start, rows in _pages(frame, mapping)
    ]
    checked = [(n, _without_erased(rows, desk, report)) for n, rows in checked]
    if strict and report.refused_rows:
        raise ValueError(
            f"{path}: {report.refused_rows} bad row(s), nothing stored\n{report.to_text()}"
        )
    now = datetime.now(UTC)
    for n, rows in checked:
        if rows:
            records, customers = [r for _, r, _ in rows], [c for _, _, c in rows]
            out = desk.store_records(records, customers, now)
            report.rows_stored += len(records)
            report.created += out.created
            report.updated += out.updated
            report.merges += len(out.merges)
            report.consents_recorded += out.consents_recorded
            report.over_shared |= {f"{s.kind} {s.value}": s.profiles for s in out.over_shared}
        if progress is not None:
            progress(n)
    return report


def _without_erased(
    rows: list[tuple[int, ProfileRecord, CustomerIn]], desk: CustomerDesk, report: ImportReport
) -> list[tuple[int, ProfileRecord, CustomerIn]]:
    """``rows`` but those whose id was erased (an erased id is not reused; refused)."""
    gone = desk.store.profiles.erased([r.profile_id for _, r, _ in rows])
    for line, r, _ in rows:
        if r.profile_id in gone:
            report.refused.setdefault("customer_id (erased)", []).append(line)
            report.refused_rows += 1
    return [row for row in rows if row[1].profile_id not in gone]


def _check_page(
    start: int, rows: list[dict], source: str | None, settings: Settings, report: ImportReport
) -> tuple[int, list[tuple[int, ProfileRecord, CustomerIn]]]:
    """The page's valid rows as (line, record, payload); bad ones counted in ``report``."""
    good = []
    for i, rec in enumerate(rows):
        line = start + i + 2  # 1-based, after the header
        try:
            c = CustomerIn.model_validate(_row(rec, source), strict=False)
            good.append((line, to_record(c, settings), c))
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"][:2])
            report.refused.setdefault(where, []).append(line)
            report.refused_rows += 1
        except RowError as exc:
            report.refused.setdefault(exc.field.removeprefix("customer."), []).append(line)
            report.refused_rows += 1
    return len(rows), good


def import_with_progress(
    path: str | Path, desk: CustomerDesk, settings: Settings, **kw: Any
) -> ImportReport:
    """:func:`import_profiles` with a tqdm bar over the rows."""
    with tqdm(desc="profiles", unit="row", mininterval=1.0) as bar:
        return import_profiles(path, desk, settings, progress=bar.update, **kw)
