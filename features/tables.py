"""Reading a table: a CSV file (gzipped or not) or a Parquet dataset, as a raw frame.

The loaders (:mod:`features.loaders`) turn the raw frame into the transactions contract;
this module only reads. A CSV is parsed from its (gunzipping) stream in chunks of lines,
its text columns asked for as ``category`` kept as categoricals (issue #19: the file is
never held as one string per cell); a Parquet dataset (a ``.parquet`` file or a folder of
them, hive-partitioned too) reads only the asked-for columns. Rows are indexed by line
(CSV) or 1-based row number (Parquet), so errors can name them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from pandas.api.types import union_categoricals

from features.contracts import DataContractError

__all__ = ["CSV_CHUNK_LINES", "file_sha256", "is_parquet", "read_table", "table_columns"]


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes (the data fingerprint logged with every training run); for
    a folder (a Parquet dataset), of every file's relative path and bytes in path order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def is_parquet(path: str | Path) -> bool:
    """A Parquet dataset: a ``.parquet`` file or a folder (of Parquet files)."""
    path = Path(path)
    return path.is_dir() or path.suffix == ".parquet"


def _parquet_dataset(path: Path):  # -> pyarrow.dataset.Dataset (pyarrow imported here only)
    import pyarrow.dataset as ds

    if not path.exists():
        raise DataContractError(str(path), None, "file not found")
    try:
        return ds.dataset(path, format="parquet", partitioning="hive")
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError, …
        raise DataContractError(str(path), None, f"unreadable Parquet dataset: {exc}") from None


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV's header or a Parquet dataset's schema."""
    path = Path(path)
    if is_parquet(path):
        return list(_parquet_dataset(path).schema.names)
    if not path.exists():
        raise DataContractError(str(path), None, "file not found")
    with _open_stream(path) as f:
        raw = f.read(4096).decode("utf-8", errors="replace")
    return [h.strip() for h in raw.splitlines()[0].split(",")] if raw else []


#: lines parsed at a time when reading a CSV (a chunk's text is held as strings only
#: until it is encoded as categoricals)
CSV_CHUNK_LINES = 1_000_000


def read_table(
    path: str | Path,
    dtype: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Only ``columns`` (those present; ``None``: every column) of a CSV (:func:`_read_csv`)
    or a Parquet dataset, indexed by line (CSV) or row number (Parquet); ``dtype``'s
    ``category`` columns come back as categoricals of their text (numbers written as text)
    with missing values missing, either way."""
    path = Path(path)
    if not is_parquet(path):
        return _read_csv(path, dtype, columns)
    dataset = _parquet_dataset(path)
    names = [c for c in (columns or dataset.schema.names) if c in dataset.schema.names]
    df = dataset.to_table(columns=names).to_pandas()
    for col, kind in (dtype or {}).items():
        if kind == "category" and col in df.columns:
            df[col] = df[col].astype("str").astype("category")
    df.index = pd.RangeIndex(1, len(df) + 1)
    return df


def _open_stream(path: Path) -> BinaryIO:
    """The file's bytes as a stream, gunzipped when it starts with the gzip magic (whatever
    its name): a log is never held in memory as one blob."""
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def _read_csv(
    path: str | Path,
    dtype: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a (possibly gzipped) UTF-8 CSV; index rows by their line number in the file.

    Parsed straight from the (decompressing) stream in chunks of lines, keeping only
    ``columns`` (those present; ``None``: all); ``category`` columns are read as text and
    each chunk's turned into a categorical at once, so the whole file is never held as
    strings (pandas would infer numbers for a categorical's values: "00042" is an id, not
    42). Only when the file is not valid UTF-8 is it read again, line by line, to name the
    lines and the column."""
    path = Path(path)
    if not path.exists():
        raise DataContractError(str(path), None, "file not found")
    wanted = None if columns is None else set(columns).__contains__
    kinds = dict(dtype or {})
    text = [c for c, kind in kinds.items() if kind == "category"]
    kinds.update(dict.fromkeys(text, "str"))
    try:
        with (
            _open_stream(path) as f,
            pd.read_csv(
                f, dtype=kinds, usecols=wanted, encoding="utf-8", chunksize=CSV_CHUNK_LINES
            ) as reader,
        ):
            parts = [part.astype({c: "category" for c in text if c in part}) for part in reader]
    except UnicodeDecodeError:
        raise _undecodable(path) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataContractError(str(path), None, f"unreadable CSV: {exc}") from None
    df = _concat_parts(parts) if parts else _header_only(path, kinds, wanted)
    df.index = pd.RangeIndex(2, len(df) + 2)  # header is line 1
    return df


def _concat_parts(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The chunks of one CSV as one frame (emptied: a column at a time moves into it, so the
    file is not held twice); a categorical column's categories are united (a plain concat
    would turn chunks with different categories back into strings)."""
    columns = {}
    for col in list(parts[0].columns):
        pieces = [p.pop(col) for p in parts]  # the chunks' column, freed once joined
        if isinstance(pieces[0].dtype, pd.CategoricalDtype):
            columns[col] = pd.Series(union_categoricals(pieces, ignore_order=True))
        else:
            columns[col] = pd.concat(pieces, ignore_index=True)
    return pd.DataFrame(columns, copy=False)


def _header_only(path: Path, kinds: Mapping[str, str], wanted: Callable | None) -> pd.DataFrame:
    """The empty frame of a CSV with a header and no lines (its chunks are none at all)."""
    with _open_stream(path) as f:
        return pd.read_csv(f, dtype=dict(kinds), usecols=wanted, nrows=0, encoding="utf-8")


def _undecodable(path: Path) -> DataContractError:
    """The error for a CSV that is not UTF-8: every undecodable line, the first one's column."""
    with _open_stream(path) as f:
        lines = f.read().split(b"\n")
    bad = []
    for lineno, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(lineno)
    column = _undecodable_column(lines, bad[0]) if bad else None
    return DataContractError(str(path), column, "not valid UTF-8 text", bad)


def _undecodable_column(lines: list[bytes], lineno: int) -> str | None:
    """The header name of the field holding the first undecodable byte of line ``lineno``."""
    if lineno < 2:
        return None
    header = next(csv.reader([lines[0].decode("utf-8", "replace").rstrip("\r")]), [])
    fields = next(csv.reader([lines[lineno - 1].decode("utf-8", "surrogateescape")]), [])
    for i, value in enumerate(fields):
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            return header[i].strip() if i < len(header) else None
    return None
