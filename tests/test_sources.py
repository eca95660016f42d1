"""Several transaction sources on unified customers (features.sources, training.load_log),
on hand-made logs with known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.identity import erasure_hash
from core.store import ProfileRecord, SqlContactStore
from features.sources import Source, drop_erased, load_sources, unify
from training.pipeline import TrainConfig, load_log

COLUMNS = ["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price", "country"]


def _log(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


@pytest.fixture
def logs(tmp_path):
    shop = _log(
        tmp_path / "shop.csv",
        [
            ("1", "o1", "2011-01-05 10:00", "A", 2, 5.0, "United Kingdom"),
            ("1", "o2", "2011-03-01 10:00", "B", 1, 7.5, "United Kingdom"),
            ("2", "o3", "2011-02-01 09:00", "A", 1, 5.0, "France"),
        ],
    )
    pos = _log(
        tmp_path / "pos.csv",
        [
            ("77", "o1", "2011-02-10 12:00", "C", 3, 2.0, "United Kingdom"),  # same order no.
            ("88", "o9", "2011-01-20 12:00", "A", 1, 5.0, "United Kingdom"),
        ],
    )
    return shop, pos


def test_sources_are_qualified_concatenated_in_time_order_and_unified(logs):
    shop, pos = logs
    loaded = load_sources(Source("shop", shop), [Source("pos", pos)], {"pos:77": "1"})
    tx = loaded.transactions
    assert tx["ts"].is_monotonic_increasing
    assert tx["customer_id"].tolist() == ["1", "pos:88", "2", "1", "1"]
    # the POS order "o1" is not the shop's order "o1"
    assert sorted(tx["order_id"].unique()) == ["o1", "o2", "o3", "pos:o1", "pos:o9"]
    r = loaded.report
    assert r.per_source["shop"]["rows_kept"] == 3 and r.per_source["pos"]["customers"] == 2
    assert (r.customers, r.linked_customers, r.rows_kept) == (3, 1, 5)
    assert "source    pos" in r.to_text()


def test_one_source_without_a_map_is_the_plain_loader(logs):
    shop, _ = logs
    loaded = load_sources(Source("shop", shop))
    assert loaded.report.per_source == {} and len(loaded.transactions) == 3


def test_erased_customers_are_left_out_before_and_after_unifying(logs):
    shop, pos = logs
    loaded = load_sources(
        Source("shop", shop),
        [Source("pos", pos)],
        {"pos:77": "1"},
        erased={erasure_hash("1")},
    )
    assert sorted(loaded.transactions["customer_id"].unique()) == ["2", "pos:88"]
    assert loaded.report.dropped["erased customer (right to erasure)"] == 3


def test_unify_and_drop_erased_on_a_frame():
    tx = pd.DataFrame({"customer_id": ["a", "b", "c"], "x": [1, 2, 3]})
    assert unify(tx, {"b": "a"})["customer_id"].tolist() == ["a", "a", "c"]
    assert unify(tx, {}) is tx
    kept, n = drop_erased(tx, {erasure_hash("c")})
    assert (kept["customer_id"].tolist(), n) == (["a", "b"], 1)


def test_training_reads_the_sources_and_the_identity_store(logs, tmp_path):
    shop, pos = logs
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with SqlContactStore(url) as store:
        store.profiles.upsert(
            [
                ProfileRecord(profile_id="1", source="shop", identifiers=(("email", "a@x.com"),)),
                ProfileRecord(
                    profile_id="pos:77", source="pos", identifiers=(("email", "a@x.com"),)
                ),
            ],
            limit=3,
            sources=["shop", "pos"],
        )
    cfg = TrainConfig(data=shop, sources=(("pos", pos),), identities=url, snapshot_timezone=None)
    loaded = load_log(cfg)
    assert loaded.report.linked_customers == 1
    assert (loaded.transactions["customer_id"] == "1").sum() == 3
    # without the store the POS customer stays apart
    apart = load_log(TrainConfig(data=shop, sources=(("pos", pos),), snapshot_timezone=None))
    assert apart.report.linked_customers == 0 and "pos:77" in set(apart.transactions["customer_id"])
