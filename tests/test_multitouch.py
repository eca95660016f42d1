"""Multi-touch channel attribution (core.multitouch): hand-made paths with known answers,
and a seeded simulation in which the Markov removal effect recovers the true order of the
channels while last touch credits a planted closing channel that does nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.multitouch import MODELS, build_paths, channel_attribution, removal_effects

T0 = datetime(2024, 5, 1, tzinfo=UTC)
D = timedelta(days=1)


def _touches(*rows: tuple[str, float, str]) -> pd.DataFrame:
    return pd.DataFrame([{"customer_id": c, "ts": T0 + d * D, "channel": ch} for c, d, ch in rows])


def _conversions(*rows: tuple[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"customer_id": c, "ts": T0 + d * D} for c, d in rows])


def test_paths_split_at_conversions_and_respect_the_lookback() -> None:
    touches = _touches(
        ("a", 0, "wechat"), ("a", 5, "email"), ("a", 6, "sms"), ("a", 9, "email"),
        ("b", 1, "sms"),
    )  # fmt: skip
    paths = build_paths(touches, _conversions(("a", 7), ("b", 30)), lookback=3 * D)
    assert [(p.channels, p.converted) for p in paths] == [
        (("email", "sms"), True),  # wechat is older than the 3-day lookback
        (("email",), False),  # after a's conversion, no purchase
    ]  # b's sms is 29 days before its purchase: out of the lookback, no path
    assert paths[0].ages == pytest.approx((2 * 86400, 86400))
    with pytest.raises(ValueError, match="missing column"):
        build_paths(touches.drop(columns="channel"), _conversions(), 3 * D)


def test_every_rule_on_two_hand_made_paths() -> None:
    """Paths A → B → buy and A → no buy. Markov: start→A (1), A→B ½, A→null ½, B→buy 1:
    P(buy) = ½; without A or without B it is 0, so both removal effects are 1."""
    touches = _touches(("x", 0, "A"), ("x", 1, "B"), ("y", 0, "A"))
    table = channel_attribution(touches, _conversions(("x", 2)), lookback=10 * D, half_life=D)
    assert table.loc["B", "last_touch"] == 1 and table.loc["A", "last_touch"] == 0
    assert table.loc["A", "first_touch"] == 1 and table.loc["B", "first_touch"] == 0
    assert table.loc["A", "linear"] == table.loc["B", "linear"] == 0.5
    # ages 2 d and 1 d, half-life 1 d: weights ¼ and ½ → ⅓ and ⅔
    assert table.loc["A", "time_decay"] == pytest.approx(1 / 3)
    assert table.loc["B", "time_decay"] == pytest.approx(2 / 3)
    assert table.loc["A", "removal_effect"] == table.loc["B", "removal_effect"] == 1.0
    assert table.loc["A", "markov"] == table.loc["B", "markov"] == 0.5
    assert table.loc["A", "touches"] == 2 and table.loc["B", "touches"] == 1
    assert list(table.columns) == ["touches", *MODELS, "removal_effect"]
    assert table[list(MODELS)].sum().tolist() == pytest.approx([1.0] * len(MODELS))


def test_removal_effect_of_a_channel_on_half_the_converting_paths() -> None:
    """Two converting paths, A → buy and B → buy, and one unconverting C: removing A loses
    the half of the conversion probability that passes through it."""
    paths = build_paths(
        _touches(("x", 0, "A"), ("y", 0, "B"), ("z", 0, "C")),
        _conversions(("x", 1), ("y", 1)),
        lookback=5 * D,
    )
    effects = removal_effects(paths)
    assert effects == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.0})


def _simulated(seed: int, n: int = 6000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers touched by each channel independently (probability ½ each), in the funnel
    order wechat → email → search; the chance to buy rises with wechat (+0.45) and email
    (+0.10), not with search. Search, when present, is the last touch (the customer searches
    just before buying, or not buying): the planted closer that last touch over-credits."""
    rng = np.random.default_rng(seed)
    effect = {"wechat": 0.45, "email": 0.10, "search": 0.0}
    touches, conversions = [], []
    for i in range(n):
        cid = f"c{i}"
        chosen = [ch for ch in ("wechat", "email") if rng.random() < 0.5]
        if rng.random() < 0.5:
            chosen.append("search")
        if not chosen:
            continue
        for k, ch in enumerate(chosen):
            touches.append({"customer_id": cid, "ts": T0 + k * D, "channel": ch})
        p = 0.02 + sum(effect[ch] for ch in chosen)
        if rng.random() < p:
            conversions.append({"customer_id": cid, "ts": T0 + (len(chosen) + 0.5) * D})
    return pd.DataFrame(touches), pd.DataFrame(conversions)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_markov_recovers_the_true_channel_order_and_last_touch_does_not(seed: int) -> None:
    touches, conversions = _simulated(seed)
    table = channel_attribution(touches, conversions, lookback=30 * D)
    assert list(table.index) == ["wechat", "email", "search"]  # sorted by Markov credit
    effects = table["removal_effect"]
    assert effects["wechat"] > effects["email"] > effects["search"]
    last = table["last_touch"]  # the closer takes the most credit, the opener the least
    assert last["search"] > last["email"] > last["wechat"]
    assert table["markov"].sum() == pytest.approx(len(conversions))
