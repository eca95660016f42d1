"""Command-line options shared by the training entry points.

:func:`add_source_options`: further transaction sources and the identity store.

A boolean command-line flag that also takes a value, for MLflow Projects.

``--force`` alone means yes (as before), and ``--force true`` / ``--force false`` (what an
MLproject command line ``--force {force}`` renders) say it explicitly; MLflow has no boolean
parameter type, so its entry points pass the flag's value as a word.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_flag", "add_source_options", "source_pairs", "truth"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def truth(value: str) -> bool:
    """``true/1/yes/on`` -> True, ``false/0/no/off`` or empty -> False (any case)."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """Add ``name`` as a flag: absent -> False, bare -> True, or followed by true/false."""
    parser.add_argument(name, nargs="?", const=True, default=False, type=truth, help=help)


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--source NAME=PATH`` (repeatable), ``--primary-source`` and ``--identities``."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a further transaction log (e.g. pos=data/pos.csv); its ids become NAME:id",
    )
    parser.add_argument(
        "--primary-source", default="shop", help="name of the --data log's source (shop)"
    )
    parser.add_argument(
        "--identities",
        default="",
        metavar="STORE_URL",
        help="contact store whose stitched profiles unify customers and whose erasures "
        "are left out (default: none)",
    )


def source_pairs(values: list[str]) -> tuple[tuple[str, Path], ...]:
    """``["pos=data/pos.csv"]`` -> ``(("pos", Path("data/pos.csv")),)``; ValueError naming
    a malformed one."""
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--source {value!r}: expected NAME=PATH")
        if not Path(path).exists():
            raise ValueError(f"--source {value!r}: no such file {path}")
        out.append((name, Path(path)))
    return tuple(out)
