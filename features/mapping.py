"""How any shop's transaction export maps onto the transactions contract: a small YAML file.

A mapping names, for each contract column, the export's column (``columns:``), how its
dates are written (``date_format:``, a ``strftime`` pattern, or ``dayfirst: true``), and how
returns are marked (``returns:``):

* ``negative`` (default): a negative quantity or amount is a return;
* ``drop``: rows with a negative quantity or amount are dropped (and counted);
* ``{column: Type, values: [R, Return]}``: rows whose ``Type`` is one of the values are
  returns, whatever the sign of their quantity or amount.

Required columns: ``customer_id`` and ``ts``, and either ``amount`` (an order or line value)
or both ``quantity`` and ``unit_price``. Optional: ``order_id`` (default: one order per
customer and timestamp), ``item_id`` (without it only churn and next purchase train),
``item_name``, ``channel``, ``country``. ``examples/mappings/`` holds two examples.
Errors name the file and the key.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAPPABLE", "LogMapping", "add_mapping_option", "read_log_mapping"]

# contract columns an export may map (``item_name`` feeds the item index)
MAPPABLE = (
    "customer_id",
    "ts",
    "order_id",
    "item_id",
    "item_name",
    "quantity",
    "unit_price",
    "amount",
    "channel",
    "country",
)
_KEYS = {"columns", "date_format", "dayfirst", "returns"}


@dataclass(frozen=True)
class LogMapping:
    """A validated mapping (module docstring). ``return_column``/``return_values`` are set
    for a flag-column returns rule, ``returns`` is then ``"flag"``."""

    columns: Mapping[str, str]
    date_format: str | None = None
    dayfirst: bool = False
    returns: str = "negative"
    return_column: str | None = None
    return_values: tuple[str, ...] = field(default_factory=tuple)
    source: str = "mapping"

    def __post_init__(self) -> None:
        where = f"{self.source}: columns"
        unknown = sorted(set(self.columns) - set(MAPPABLE))
        if unknown:
            raise ValueError(f"{where}: unknown contract column(s) {unknown}; allowed {MAPPABLE}")
        for req in ("customer_id", "ts"):
            if req not in self.columns:
                raise ValueError(f"{where}: '{req}' is required")
        if "amount" not in self.columns and not {"quantity", "unit_price"} <= set(self.columns):
            raise ValueError(f"{where}: give 'amount', or both 'quantity' and 'unit_price'")
        if self.date_format and self.dayfirst:
            raise ValueError(f"{self.source}: give date_format or dayfirst, not both")
        if self.returns not in ("negative", "drop", "flag"):
            raise ValueError(f"{self.source}: returns must be negative, drop or a flag column")

    @property
    def used_columns(self) -> list[str]:
        """The export's columns the mapping reads (the loader reads no others)."""
        cols = list(dict.fromkeys(self.columns.values()))
        if self.return_column and self.return_column not in cols:
            cols.append(self.return_column)
        return cols


def _returns(value: Any, source: str) -> dict[str, Any]:
    if value is None or value in ("negative", "drop"):
        return {"returns": value or "negative"}
    if isinstance(value, Mapping) and set(value) == {"column", "values"}:
        values = value["values"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{source}: returns.values must be a non-empty list")
        return {
            "returns": "flag",
            "return_column": str(value["column"]),
            "return_values": tuple(str(v) for v in values),
        }
    raise ValueError(
        f"{source}: returns must be 'negative', 'drop' or {{column: NAME, values: [...]}}, "
        f"got {value!r}"
    )


def read_log_mapping(path: str | Path) -> LogMapping:
    """The mapping in the YAML file ``path`` (ValueError naming the file and the key)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the mapping ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("columns"), Mapping):
        raise ValueError(f"{path}: expected a 'columns:' block of contract column: export column")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; allowed {sorted(_KEYS)}")
    fmt = data.get("date_format")
    if fmt is not None and not isinstance(fmt, str):
        raise ValueError(f"{path}: date_format must be a strftime pattern such as '%d/%m/%Y'")
    return LogMapping(
        columns={str(k): str(v) for k, v in data["columns"].items()},
        date_format=fmt,
        dayfirst=bool(data.get("dayfirst", False)),
        source=str(path),
        **_returns(data.get("returns"), str(path)),
    )


def add_mapping_option(parser: argparse.ArgumentParser) -> None:
    """``--mapping FILE.yaml``: read ``--data`` through a column mapping (a
    :class:`LogMapping`; the option's value is parsed, so a bad file is a usage error).
    An empty value (MLproject's default) means no mapping."""

    def parse(value: str) -> LogMapping | None:
        if not value:
            return None
        try:
            return read_log_mapping(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--mapping",
        type=parse,
        default=None,
        metavar="FILE.yaml",
        help="read --data through this column mapping (any shop's export; see examples/mappings/)",
    )
