"""The columnar item history (features.history.ItemHistory) on hand-made pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import ItemHistory
from features.stored import _history, _history_table
from service.engine import regulars

# customer, item, last, times — out of order on purpose
PAIRS = [
    ("b", "Z", 50.0, 1),
    ("a", "Y", 30.0, 2),
    ("a", "X", 10.0, 2),
    ("c", "X", 70.0, 1),
    ("a", "W", 90.0, 1),
    ("a", "V", 30.0, 2),
]
WANT = {
    "a": {"Y": (30.0, 2), "X": (10.0, 2), "W": (90.0, 1), "V": (30.0, 2)},
    "b": {"Z": (50.0, 1)},
    "c": {"X": (70.0, 1)},
}


def bought() -> ItemHistory:
    c, i, last, times = zip(*PAIRS, strict=True)
    return ItemHistory.from_pairs(pd.Index(c), pd.Index(i), np.array(last), np.array(times))


def test_it_reads_as_the_nested_mapping():
    h = bought()
    assert h == WANT and dict(h) == WANT
    assert list(h) == ["a", "b", "c"] and len(h) == 3 and h.pairs == 6
    assert h["b"] == {"Z": (50.0, 1)} and h.get("nobody", {}) == {}
    assert "a" in h and "nobody" not in h and 7 not in h


def test_a_customers_rows_are_in_regulars_order():
    """Most bought first, then most recent, then item id: V and Y tie on both, V first."""
    h = bought()
    assert h.head("a", 10) == ["V", "Y", "X", "W"] == regulars(WANT["a"])
    assert h.head("a", 2) == ["V", "Y"] and h.head("nobody", 3) == []


def test_a_returns_history_has_no_times():
    h = ItemHistory.from_pairs(pd.Index(["a", "a"]), pd.Index(["X", "Y"]), np.array([5.0, 9.0]))
    assert h == {"a": {"X": 5.0, "Y": 9.0}} and h.times is None
    assert h.head("a", 5) == ["Y", "X"]  # most recent first


def test_without_drops_whole_customers_and_keeps_the_rest_exact():
    h = bought()
    assert h.without(["a", "nobody"]) == {"b": WANT["b"], "c": WANT["c"]}
    assert h.without(["b"]) == {"a": WANT["a"], "c": WANT["c"]}
    assert h.without([]) is h and h == WANT  # nothing dropped: the same object, unchanged


def test_empty_histories():
    assert ItemHistory.empty(times=True) == {} and ItemHistory.empty(times=False).pairs == 0
    assert ItemHistory.empty(times=True).head("a", 3) == []


def test_stored_as_dictionary_ids_and_read_back_from_either_format(tmp_path: Path):
    h = bought()
    pq.write_table(_history_table(h), tmp_path / "new.parquet")
    table = pq.read_table(tmp_path / "new.parquet")
    assert pa.types.is_dictionary(table.column("customer_id").type)
    assert _history(table, times=True) == WANT
    c, i, last, times = zip(*PAIRS, strict=True)  # an older snapshot: plain strings, any order
    plain = pa.table({"customer_id": c, "item_id": i, "last": last, "times": times})
    pq.write_table(plain, tmp_path / "old.parquet")
    back = _history(pq.read_table(tmp_path / "old.parquet"), times=True)
    assert back == WANT and back.head("a", 4) == ["V", "Y", "X", "W"]
