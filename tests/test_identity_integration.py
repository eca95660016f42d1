"""Acceptance of #17 on real data: one customer across identifiers and sources.

A seeded sample of real customers of the champions' slice of Online Retail II is split in
two: half of each one's orders move to a second source (a store POS export in the contract
format, under a new id), and a profile import (the CLI, as a user runs it) gives both ids
one e-mail. After the import, each split customer's features, stage, scores and decisions
equal those of the unsplit customer (whose one profile carries the same e-mail), whichever
id or identifier names them; an over-shared phone joins nobody; decisions made through three
identifiers of one person never pass a cap; UK customers get English messages by default
and a stored zh-CN profile wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.env import PROJECT_ROOT
from features.loaders import load_online_retail
from service.config import IdentitySettings, TransactionSource, load_settings
from service.runtime import Runtime
from service.schemas import DecideRequest

pytestmark = pytest.mark.integration

NOW = datetime(2011, 9, 20, 10, tzinfo=UTC)
SAMPLE = 40
SHARED_PHONE = "+44 7700 900555"


def _split(slice_csv: Path, folder: Path) -> SimpleNamespace:
    """The shop log without half the orders of a seeded sample, the POS log with them."""
    raw = pd.read_csv(slice_csv, dtype=str)
    tx = load_online_retail(slice_csv).transactions
    orders = tx.groupby("customer_id")["order_id"].unique()
    eligible = sorted(c for c, o in orders.items() if len(o) >= 2)
    rng = np.random.default_rng(17)
    sample = sorted(rng.choice(eligible, SAMPLE, replace=False).tolist())
    moved = {o for c in sample for o in sorted(orders[c])[::2]}  # every other order
    raw[~raw["Invoice"].isin(moved)].to_csv(folder / "shop.csv", index=False)
    pos = tx[tx["order_id"].isin(moved)].copy()
    pos["customer_id"] = "p" + pos["customer_id"].astype(str)
    pos["ts"] = pos["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    cols = ["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price", "country"]
    pos[cols].to_csv(folder / "pos.csv", index=False)
    others = [c for c in eligible if c not in sample]
    return SimpleNamespace(sample=sample, moved=moved, others=others)


def _profiles(split: SimpleNamespace, folder: Path, both: bool) -> Path:
    """The CRM export: each sampled customer's e-mail (on the POS id too when ``both``),
    one phone on three other customers (over-shared), a zh-CN profile."""
    rows = []
    for c in split.sample:
        rows.append({"id": c, "src": "", "mail": f" Buyer.{c}@Example.com", "tel": ""})
        if both:
            rows.append({"id": f"p{c}", "src": "pos", "mail": f"buyer.{c}@example.com", "tel": ""})
    for c in split.others[:3]:
        rows.append({"id": c, "src": "", "mail": "", "tel": SHARED_PHONE})
    path = folder / ("profiles_split.csv" if both else "profiles_one.csv")
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _import(path: Path, store_url: str) -> str:
    env = {**os.environ, "REVIVAL_STORE_URL": store_url}
    out = subprocess.run(
        [sys.executable, "-m", "service.customers", "import", str(path)]
        + ["--map", "customer_id=id", "--map", "source=src", "--map", "email=mail"]
        + ["--map", "phone=tel"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def world(champions, tmp_path_factory):
    slice_csv, uri = champions
    folder = tmp_path_factory.mktemp("identity")
    split = _split(slice_csv, folder)
    base = load_settings().model_copy(
        update={"mlflow_tracking_uri": uri, "snapshot": "data", "holdout_share": 0.0}
    )
    one_url = f"sqlite:///{folder / 'one.db'}"
    two_url = f"sqlite:///{folder / 'two.db'}"
    report_one = _import(_profiles(split, folder, both=False), one_url)
    report_two = _import(_profiles(split, folder, both=True), two_url)
    one = Runtime(base.model_copy(update={"data_path": slice_csv, "store_url": one_url}))
    ident = IdentitySettings(sources=[TransactionSource(name="pos", path=folder / "pos.csv")])
    two = Runtime(
        base.model_copy(
            update={"data_path": folder / "shop.csv", "store_url": two_url, "identity": ident}
        )
    )
    yield SimpleNamespace(split=split, one=one, two=two, reports=(report_one, report_two))
    one.close()
    two.close()


def _decision(runtime: Runtime, ref: str) -> dict:
    d = runtime.decide(DecideRequest(customer_id=ref, now=NOW, dry_run=True)).model_dump()
    d.pop("decision_id")
    return d


def test_the_import_merged_each_split_pair_and_nobody_on_the_shared_phone(world):
    _, two = world.reports
    assert f"merges      {SAMPLE:>9,}" in two, two
    assert "over-shared         1" in two, two
    assert world.two.store.profiles.identity_map() == {f"pos:p{c}": c for c in world.split.sample}
    shared = [s.profiles for s in world.two.store.profiles.over_shared()]
    assert shared == [3]


def test_the_cleaning_report_counts_rows_per_source(world):
    report = world.two.state.snapshot.report
    assert set(report.per_source) == {"shop", "pos"}
    assert report.per_source["pos"]["customers"] == SAMPLE
    assert report.customers == world.one.state.snapshot.report.customers


def test_split_customers_equal_the_unsplit_ones_in_features_stage_scores_and_decisions(world):
    one, two = world.one, world.two
    for c in world.split.sample:
        a, b = one.customer(c, NOW), two.customer(f"pos:p{c}", NOW)
        assert b.customer_id == c
        assert a.features == b.features, c
        assert (a.stage, a.tier, a.scores) == (b.stage, b.tier, b.scores), c
        want = _decision(one, c)
        assert _decision(two, c) == want, c
        assert _decision(two, f"email:buyer.{c}@EXAMPLE.com") == want, c
        assert _decision(two, f"pos:p{c}") == want, c


def test_every_other_customer_is_unchanged_by_the_split(world):
    one, two = world.one.state, world.two.state
    assert set(one.snapshot.positions) == set(two.snapshot.positions)
    others = world.split.others[:50]
    rows_one = one.snapshot.features.loc[others]
    rows_two = two.snapshot.features.loc[others]
    pd.testing.assert_frame_equal(rows_one, rows_two)


def test_caps_hold_across_three_identifiers_of_one_person(world):
    rt = world.two
    c = world.split.others[10]
    person = _record(c, email="three@example.com", phone="+447700900123", member_id="M-1")
    rt.store.profiles.upsert([person], limit=3, sources=["shop", "pos"])
    refs = ["email:Three@example.com", "phone:07700 900123", "member_id:M-1"]
    made = []
    for i in range(12):  # four rounds through the three identifiers, over two days
        at = NOW + timedelta(hours=4 * i)
        d = rt.decide(DecideRequest(customer_id=refs[i % 3], now=at, campaign_id="lifecycle"))
        assert d.customer_id == c
        if d.contact:
            made.append((d.send_at or at, d.channel))
    settings = rt.settings
    per_day = Counter((ts.date(), ch) for ts, ch in made)
    assert made, "no contact at all: the test would prove nothing"
    assert len(made) < 12  # the caps refused some: one person, not three
    for (_, ch), n in per_day.items():
        assert n <= settings.channel(ch).per_day_cap, (ch, per_day)
    assert len(made) <= settings.global_weekly_cap


def _record(pid: str, **ids: str):
    from core.identity import normalise
    from core.store import ProfileRecord

    return ProfileRecord(
        profile_id=pid,
        source="shop",
        identifiers=tuple((k, normalise(k, v)) for k, v in ids.items()),
    )


def test_uk_customers_get_english_by_default_and_a_stored_zh_cn_profile_wins(world):
    rt = world.one
    assert rt.settings.default_locale == "zh-CN"  # the brand's default is not what UK gets
    snap = rt.state.snapshot
    uk = sorted(
        c
        for c, country in snap.countries.items()
        if country == "United Kingdom" and c in snap.positions
    )
    assert len(uk) > 300
    seen = Counter()
    for c in uk:
        d = rt.decide(DecideRequest(customer_id=c, now=NOW, dry_run=True))
        assert d.timezone == "Europe/London", c
        if d.message is not None:
            seen[d.message.locale] += 1
    assert seen["en"] > 100 and set(seen) == {"en"}, seen
    chosen = next(
        c
        for c in uk
        if (m := rt.decide(DecideRequest(customer_id=c, now=NOW, dry_run=True)).message)
    )
    rt.store.profiles.upsert([_zh(chosen)], limit=3, sources=["shop"], now=datetime.now(UTC))
    d = rt.decide(DecideRequest(customer_id=chosen, now=NOW, dry_run=True))
    assert d.message is not None and d.message.locale == "zh-CN"
    assert m.locale == "en"


def _zh(pid: str):
    from core.store import ProfileRecord

    return ProfileRecord(profile_id=pid, source="shop", locale="zh-CN")


def test_every_uk_customer_of_the_whole_log_defaults_to_english():
    from core.env import DEFAULT_DATA
    from features.loaders import load_transactions
    from features.serving import usual_country
    from service.runtime.views import combine_profile

    countries = usual_country(load_transactions(DEFAULT_DATA).transactions)
    uk = [c for c, country in countries.items() if country == "United Kingdom"]
    assert len(uk) == 4797
    assert {combine_profile(None, None, countries[c]).locale for c in uk} == {"en"}
    assert {combine_profile(None, None, countries[c]).timezone for c in uk} == {"Europe/London"}
    print(json.dumps({"uk_customers": len(uk)}))
