"""Property: a feature snapshot at cutoff t depends only on rows strictly before t.

For random small logs, random cutoffs and random extra rows dated at or after the cutoff
(purchases and returns, for known and for new customers, in new and in existing orders,
inserted anywhere in the frame), ``build_features(..., t)`` must be byte-identical. The
same holds for message events dated at or after the cutoff.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from features.contracts import validate_events, validate_transactions
from features.snapshot import build_features

START = pd.Timestamp("2020-01-01")
SPAN_MINUTES = 2 * 365 * 24 * 60  # logs cover two years, to the minute
CUSTOMERS = ["c0", "c1", "c2", "c3"]
NEW_CUSTOMERS = ["n0", "n1"]
ITEMS = ["85123A", "85123B", "22423", "15056BL", "APPLE", None]

minutes = st.integers(0, SPAN_MINUTES)
quantity = st.sampled_from([-2.0, -1.0, 1.0, 2.0, 3.0, 12.0])
price = st.sampled_from([0.0, 0.42, 1.25, 2.55, 10.0])


def row(customers, orders, ts_minutes):
    return st.tuples(
        st.sampled_from(customers),
        st.sampled_from(orders),
        ts_minutes,
        st.sampled_from(ITEMS),
        quantity,
        price,
    )


def frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "m", "item_id", "quantity", "unit_price"]
    )
    df["ts"] = START + pd.to_timedelta(df["m"].astype("int64"), unit="min")
    return validate_transactions(df.drop(columns="m"))


@st.composite
def scenario(draw):
    base = draw(
        st.lists(row(CUSTOMERS, [f"o{i}" for i in range(8)], minutes), min_size=1, max_size=25)
    )
    cut = draw(minutes)
    # later rows: at the cutoff or after it; existing and new customers and orders
    later = draw(
        st.lists(
            row(
                CUSTOMERS + NEW_CUSTOMERS,
                [f"o{i}" for i in range(8)] + ["x0", "x1"],
                st.one_of(st.just(cut), st.integers(cut, cut + 400 * 24 * 60)),
            ),
            min_size=1,
            max_size=12,
        )
    )
    # where each later row goes among the base rows (base rows keep their order)
    slots = draw(st.lists(st.integers(0, len(base)), min_size=len(later), max_size=len(later)))

    def events(when):
        return st.lists(
            st.tuples(
                st.sampled_from(CUSTOMERS + NEW_CUSTOMERS),
                when,
                st.sampled_from(["email", "sms"]),
                st.sampled_from(["sent", "opened", "clicked"]),
            ),
            max_size=5,
        )

    ev_before = draw(events(st.integers(cut - 120 * 24 * 60, cut - 1)))
    ev_later = draw(events(st.one_of(st.just(cut), st.integers(cut, cut + 30 * 24 * 60))))
    return base, cut, later, slots, ev_before, ev_later


def interleave(base: list, later: list, slots: list[int]) -> list:
    out = list(base)
    for pos, r in sorted(zip(slots, later, strict=True), key=lambda p: p[0], reverse=True):
        out.insert(pos, r)
    return out


def event_frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "m", "channel", "event"])
    df["ts"] = START + pd.to_timedelta(df["m"].astype("int64"), unit="min")
    df["campaign_id"] = "cmp"
    return validate_events(df.drop(columns="m"))


def assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.array_equal(
        pd.util.hash_pandas_object(a).to_numpy(), pd.util.hash_pandas_object(b).to_numpy()
    )
    assert a.to_numpy().tobytes() == b.to_numpy().tobytes()


# no shrink phase: shrinking a failure here can take minutes; the raw example is enough
@settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario())
def test_rows_at_or_after_cutoff_never_change_features(data):
    base, cut, later, slots, ev_before, ev_later = data
    cutoff = START + pd.Timedelta(minutes=cut)
    tx = frame(base)
    tx_more = frame(interleave(base, later, slots))
    assert len(tx_more) == len(tx) + len(later)
    before = build_features(tx, cutoff)
    after = build_features(tx_more, cutoff)
    assert_identical(before, after)
    # no customer appears whose first purchase is at or after the cutoff
    early_buyers = set(tx.loc[(tx["ts"] < cutoff) & (tx["quantity"] > 0), "customer_id"])
    assert set(after.index) == early_buyers

    if ev_before or ev_later:
        with_ev = build_features(tx, cutoff, events=event_frame(ev_before))
        with_more_ev = build_features(tx_more, cutoff, events=event_frame(ev_before + ev_later))
        assert_identical(with_ev, with_more_ev)
