"""A boolean command-line flag that also takes a value, for MLflow Projects.

``--force`` alone means yes (as before), and ``--force true`` / ``--force false`` (what an
MLproject command line ``--force {force}`` renders) say it explicitly; MLflow has no boolean
parameter type, so its entry points pass the flag's value as a word.
"""

from __future__ import annotations

import argparse

__all__ = ["add_flag", "truth"]

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
