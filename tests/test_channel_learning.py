"""Channel learning: Beta-Binomial engagement posteriors, recency weights, Thompson sampling
(unit tests on hand-made histories with known answers), and the simulator against the
service's ASGI app on the real log (simulated customers answering through ``/events``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from auth import AUTH

from core.store import Engagement, EventRecord, SqlContactStore
from service.config import CHANNELS, load_settings
from service.engine import (
    DEFAULT_PARAMS,
    ContactHistory,
    CustomerView,
    ModelScores,
    PolicyParams,
    Profile,
    decide,
    engagement_posterior,
    recency_weight,
)

LONDON = ZoneInfo("Europe/London")
SNAPSHOT = datetime(2011, 9, 1, tzinfo=LONDON).astimezone(UTC)
NOW = datetime(2011, 9, 5, 10, 0, tzinfo=LONDON).astimezone(UTC)
DAY = timedelta(days=1)
ALL = Profile(
    identifiers={"phone": "+447700900000", "wechat_openid": "o1", "email": "a@b.c"},
    consents={ch: True for ch in CHANNELS},
)


@pytest.fixture(scope="module")
def settings():
    return load_settings().model_copy(update={"holdout_share": 0.0})


def messages(*spec: tuple[float, bool]) -> tuple[tuple[float, bool], ...]:
    """(age in days at NOW, engaged) -> Engagement.messages."""
    return tuple(sorted(((NOW - d * DAY).timestamp(), hit) for d, hit in spec))


def engagement(*spec: tuple[float, bool]) -> Engagement:
    msgs = messages(*spec)
    return Engagement(sends=len(msgs), engaged=sum(h for _, h in msgs), messages=msgs)


def one(settings, history: ContactHistory, *, explore=None, decision_id=None, now=NOW, s=None):
    view = CustomerView(
        customer_id="C1",
        features={
            "recency_days": 100.0,
            "tenure_days": 700.0,
            "purchase_days": 8.0,
            "basket_value": 100.0,
            "monetary_all": 800.0,
            "price_index": 1.0,
            "top_family_share": 0.3,
            "usual_hour": math.nan,
            "gap_shrunk": 20.0,
        },
        stage="sleeping",
        tier="high",
        value_score=500.0,
        snapshot_at=SNAPSHOT,
        profile=ALL,
    )
    scores = ModelScores(p_churn=0.7, p_buy_30d=0.05, expected_days=40.0, predicted_value=300)
    return decide(
        view,
        scores,
        ["85123A"],
        history,
        s or settings,
        now,
        explore=explore,
        decision_id=decision_id,
    )


# --------------------------------------------------------------------------- posterior


def test_recency_weight_halves_every_half_life():
    assert recency_weight(0, 90) == 1.0
    assert recency_weight(90, 90) == 0.5
    assert recency_weight(180, 90) == 0.25
    assert recency_weight(-3, 90) == 1.0  # an outcome after "now" is not up-weighted


def test_posterior_parameters_known_answer():
    # population: 30 engaged of 100 -> m = (30 + 200 * 0.12) / (100 + 200) = 0.18
    pop = Engagement(sends=100, engaged=30)
    own = engagement((0, True), (90, False), (180, True))  # weights 1, 0.5, 0.25
    k10 = PolicyParams(engagement_prior_weight=10.0, population_prior_weight=200.0)
    post = engagement_posterior(own, pop, 0.12, NOW, 90.0, k10)
    assert post.prior == pytest.approx(0.18)
    assert post.trials == pytest.approx(1.75) and post.successes == pytest.approx(1.25)
    assert post.a == pytest.approx(10 * 0.18 + 1.25)  # k * m + weighted engaged
    assert post.b == pytest.approx(10 * 0.82 + 0.5)  # k * (1 - m) + weighted not engaged
    assert post.mean == pytest.approx(3.05 / 11.75)
    # no evidence: the prior itself; counts without message times weigh 1
    assert engagement_posterior(Engagement(), pop, 0.12, NOW, 90.0).mean == pytest.approx(0.18)
    counts = engagement_posterior(Engagement(sends=4, engaged=1), Engagement(), 0.1, NOW, 90.0, k10)
    assert (counts.a, counts.b) == pytest.approx((1.0 + 1, 9.0 + 3))
    k = DEFAULT_PARAMS.engagement_prior_weight  # the default prior: Beta(k m, k (1 - m))
    default = engagement_posterior(Engagement(), Engagement(), 0.1, NOW, 90.0)
    assert (default.a, default.b) == pytest.approx((k * 0.1, k * 0.9))


def test_prior_only_posterior_is_the_posterior_without_messages():
    """The shortcut for customers without messages on a channel is the posterior without
    evidence, and a new population aggregate (the runtime refreshes it) is not served stale."""
    from service.engine import prior_posterior

    k10 = PolicyParams(engagement_prior_weight=10.0, population_prior_weight=200.0)
    pop = Engagement(sends=100, engaged=30)
    expected = engagement_posterior(Engagement(), pop, 0.12, NOW, 90.0, k10)
    assert prior_posterior(pop, 0.12, 90.0, k10) == expected
    assert prior_posterior(pop, 0.12, 90.0, k10) is prior_posterior(pop, 0.12, 90.0, k10)
    later = Engagement(sends=100, engaged=60)
    assert prior_posterior(later, 0.12, 90.0, k10).prior == pytest.approx(84 / 300)
    assert prior_posterior(pop, 0.2, 90.0, k10) == engagement_posterior(
        Engagement(), pop, 0.2, NOW, 90.0, k10
    )


def test_recent_behaviour_dominates(settings):
    pop = Engagement()
    old_good = engagement(*[(400, True)] * 5, *[(4, False)] * 5)
    old_bad = engagement(*[(400, False)] * 5, *[(4, True)] * 5)
    a = engagement_posterior(old_good, pop, 0.12, NOW, 90.0)
    b = engagement_posterior(old_bad, pop, 0.12, NOW, 90.0)
    w_old, w_new = 0.5 ** (400 / 90), 0.5 ** (4 / 90)
    assert a.successes == pytest.approx(5 * w_old) and b.successes == pytest.approx(5 * w_new)
    assert a.mean < 0.12 < b.mean
    # the same counts unweighted (a very long half-life) cannot tell them apart
    flat = [engagement_posterior(e, pop, 0.12, NOW, 1e9).mean for e in (old_good, old_bad)]
    assert flat[0] == pytest.approx(flat[1])


def test_old_unopened_sends_are_not_fatigue(settings):
    old = ContactHistory(engagement={"email": engagement(*[(700 + i, False) for i in range(8)])})
    new = ContactHistory(engagement={"email": engagement(*[(5 + i, False) for i in range(8)])})
    assert one(settings, old).why_asleep.primary != "message_fatigue"
    assert one(settings, new).why_asleep.primary == "message_fatigue"


def test_store_counts_a_click_without_an_open_and_weights_by_send_time(tmp_path):
    t = datetime(2024, 3, 1, 12, tzinfo=UTC)
    h = timedelta(hours=1)
    with SqlContactStore(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.record_events(
            [
                EventRecord(customer_id="c", ts=t, event="sent", channel="sms", decision_id="d1"),
                EventRecord(  # a click, the open never recorded: engaged
                    customer_id="c", ts=t + 3 * h, event="clicked", channel="sms", decision_id="d1"
                ),
                EventRecord(
                    customer_id="c", ts=t + h, event="sent", channel="sms", decision_id="d2"
                ),
                EventRecord(customer_id="c", ts=t + 2 * h, event="opened", channel="email"),
                EventRecord(customer_id="c", ts=t + 4 * h, event="sent", channel="email"),
                EventRecord(customer_id="c", ts=t + 5 * h, event="opened", channel="email"),
                EventRecord(customer_id="c", ts=t + 6 * h, event="clicked", channel="email"),
            ]
        )
        got = store.engagement("c")
        population = store.population_engagement()
    sms = got["sms"]
    assert (sms.sends, sms.opens, sms.clicks, sms.engaged) == (2, 0, 1, 1)
    assert sms.messages == ((t.timestamp(), True), ((t + h).timestamp(), False))
    # without decisions: an open before any send is a message of its own; the open and the
    # click after the send belong to that send
    email = got["email"]
    assert email.messages == (((t + 2 * h).timestamp(), True), ((t + 4 * h).timestamp(), True))
    assert (email.sends, email.engaged, email.trials) == (1, 2, 2)
    assert population["sms"].engaged == 1 and population["sms"].trials == 2


# --------------------------------------------------------------------------- choice


def test_mean_rule_is_deterministic_and_reasons_show_the_posterior(settings):
    hist = ContactHistory(
        engagement={"wechat": engagement(*[(3 * i, i % 2 == 0) for i in range(10)])}
    )
    d = one(settings, hist, explore=False)
    assert d.channel == "wechat"
    options = {o.channel: o for o in d.channel_options}
    post = engagement_posterior(hist.engagement["wechat"], Engagement(), 0.10, NOW, 90.0)
    assert options["wechat"].posterior_a == pytest.approx(post.a, abs=1e-4)
    assert options["wechat"].posterior_b == pytest.approx(post.b, abs=1e-4)
    assert options["wechat"].engagement == pytest.approx(post.mean, abs=1e-4)
    assert all(o.sample is None for o in d.channel_options)
    assert d.reasons["channel"][0].startswith("wechat: best posterior mean of Beta(a=")
    assert "rule:mean (request explore=False)" in d.reasons["channel"]
    assert any(r.startswith("posterior:sms mean=0.060") for r in d.reasons["channel"])
    assert [one(settings, hist, now=NOW + k * DAY).channel for k in range(5)] == ["wechat"] * 5


def test_thompson_reproducible_and_follows_the_setting(settings):
    hist = ContactHistory()
    a = one(settings, hist, explore=True, decision_id="dec-1")
    b = one(settings, hist, explore=True, decision_id="dec-1")
    assert a.channel == b.channel
    assert [o.sample for o in a.channel_options] == [o.sample for o in b.channel_options]
    assert all(o.sample is not None and 0 < o.sample < 1 for o in a.channel_options)
    assert "rule:thompson (request explore=True)" in a.reasons["channel"]
    assert "thompson sample" in a.reasons["channel"][0]
    thompson = settings.model_copy(update={"channel_selection": "thompson"})
    c = one(settings, hist, s=thompson, decision_id="dec-1")
    assert "rule:thompson (setting channel_selection)" in c.reasons["channel"]
    assert c.channel == a.channel
    assert (
        "rule:mean (request explore=False)"
        in one(settings, hist, s=thompson, explore=False).reasons["channel"]
    )
    # without a decision id the seed is (customer, campaign, now): different draws per call
    draws = {one(settings, hist, explore=True, now=NOW + k * DAY).channel for k in range(40)}
    assert len(draws) >= 2


def test_thompson_picks_the_clearly_better_channel_almost_always(settings):
    good = ContactHistory(
        engagement={"email": engagement(*[(2 * i, i % 2 == 0) for i in range(40)])}
    )  # 50% engaged over 40 recent messages; the others unexplored (priors 0.04-0.10)
    picks = [one(settings, good, explore=True, decision_id=f"g{k}").channel for k in range(300)]
    assert picks.count("email") >= 270  # the untried ones still get an occasional look
    assert picks.count("email") < 300
    assert one(settings, good, explore=False).channel == "email"


def test_thompson_explores_an_untried_channel_the_mean_rule_never_tries(settings):
    # e-mail tried 40 times, 1 in 10 engaged (mean ~0.10); WeChat untried: prior mean 0.10
    # with the uncertainty of 10 pseudo-messages. SMS and push priced / rated out.
    poor = ContactHistory(
        engagement={"email": engagement(*[(2 * i, i % 10 == 0) for i in range(40)])}
    )
    channels = {"email", "wechat"}
    mean_picks = {one(settings, poor, explore=False, now=NOW + k * DAY).channel for k in range(20)}
    assert len(mean_picks) == 1
    picks = [
        decide_restricted(settings, poor, sorted(channels), f"p{k}").channel for k in range(300)
    ]
    tried = picks.count("wechat")
    assert 30 <= tried <= 270  # explored often, not always
    assert picks.count("email") + tried == 300


def decide_restricted(settings, history, channels, decision_id):
    view = CustomerView(
        customer_id="C1",
        features={"recency_days": 100.0, "basket_value": 100.0, "purchase_days": 8.0},
        stage="sleeping",
        tier="high",
        value_score=500.0,
        snapshot_at=SNAPSHOT,
        profile=ALL,
    )
    scores = ModelScores(p_churn=0.7, p_buy_30d=0.05, expected_days=40.0, predicted_value=300)
    return decide(
        view,
        scores,
        [],
        history,
        settings,
        NOW,
        channels=channels,
        explore=True,
        decision_id=decision_id,
    )


# --------------------------------------------------------------------------- simulator


@pytest.mark.integration
def test_simulated_customers_learn_their_best_channel(service_env, tmp_path):
    """40 real customers x 40 rounds through the ASGI app, Thompson sampling per request.

    Learning needs rounds more than customers: 40 x 40 is the same number of requests as
    60 x 25 and takes ~20-30 s on 2 cores.
    """
    from starlette.testclient import TestClient

    from tools.simulate import (
        make_customers,
        pick_customers,
        simulate,
        snapshot_at,
        start_after_blackouts,
    )

    n, rounds, step = 40, 40, 4.0
    with pytest.MonkeyPatch.context() as mp:
        for key, value in service_env(tmp_path).items():
            mp.setenv(key, value)
        from service.service import RevivalService

        with TestClient(RevivalService.to_asgi(), headers=AUTH) as client:
            s = load_settings()
            start = start_after_blackouts(
                s, snapshot_at(client) + 5 * DAY, timedelta(days=step * (rounds + 1))
            )
            costs = {ch: s.channel(ch).cost for ch in CHANNELS}
            customers = make_customers(pick_customers(client, n, start, costs), seed=0)
            assert {c.best for c in customers} == set(CHANNELS)
            res = simulate(client, customers, rounds, start, step_days=step, explore=True)
    assert res.contacted == [n] * rounds  # every customer contacted every round
    acc, with_history = res.accuracy(customers, min_history=10)
    assert with_history == n and acc >= 0.9, (acc, res.final)
    third = rounds // 3
    early, late = sum(res.regret[:third]), sum(res.regret[-third:])
    assert late < early / 2, res.regret  # cumulative regret grows sub-linearly
    first, last = sum(res.regret[:5]) / 5, sum(res.regret[-5:]) / 5
    assert last < 0.5 * first, res.regret


def test_population_refresh_never_makes_a_decision_wait_for_a_slow_scan(
    service_env, tmp_path, monkeypatch
):
    """Recorded events reach the population priors at once while the aggregate is cheap;
    once a scan is slow it runs in one background thread and decisions keep the previous
    value meanwhile; a failed background refresh keeps the old value and is tried again."""
    import threading
    import time

    from service.runtime import Runtime
    from service.runtime import population as runtime_mod
    from service.schemas import DecideRequest, EventIn

    for key, value in service_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    runtime = Runtime(load_settings())
    try:
        cid = str(runtime.state.inputs.index[0])
        now = runtime.state.snapshot.at + timedelta(days=2)

        hours = [0]  # every call reports new messages (a repeat at the same time is a duplicate)

        def record(n: int) -> None:
            events = [
                EventIn(
                    customer_id=cid,
                    event=kind,
                    channel="sms",
                    ts=now + timedelta(hours=hours[0] + i),
                )
                for i in range(n)
                for kind in ("sent", "opened")
            ]
            hours[0] += n
            runtime.record(events, [])

        assert "sms" not in runtime.population()
        record(1)
        first = runtime.population()  # cheap: refreshed inline, already counts the send
        assert first["sms"].sends == 1 and first["sms"].engaged == 1

        real = runtime.store.population_engagement
        gate, calls, fail = threading.Event(), [], []

        def slow(*args, **kwargs):
            calls.append(threading.current_thread().name)
            gate.wait(10)
            if fail:
                raise RuntimeError("store went away")
            return real(*args, **kwargs)

        monkeypatch.setattr(runtime.store, "population_engagement", slow)
        monkeypatch.setattr(runtime_mod, "POPULATION_INLINE_S", -1.0)  # every scan is slow
        record(2)
        t0 = time.perf_counter()
        assert runtime.population() is first  # the previous value, at once
        decision = runtime.decide(DecideRequest(customer_id=cid, now=now, dry_run=True))
        assert runtime.population() is first and time.perf_counter() - t0 < 5
        assert decision.customer_id == cid and calls == ["population"]  # one refresh thread
        gate.set()
        deadline = time.monotonic() + 10
        while runtime.population()["sms"].sends != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.population()["sms"].sends == 3 and len(calls) == 1

        gate.clear()
        fail.append(True)
        record(1)
        assert runtime.population()["sms"].sends == 3  # stale while the refresh runs
        gate.set()
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the failure is logged and the lock released
        for _ in range(20):  # the failed value is served for a TTL, not retried per call
            assert runtime.population()["sms"].sends == 3
        assert len(calls) == 2
        fail.clear()
        monkeypatch.setattr(runtime_mod, "POPULATION_TTL_S", 0.0)  # the TTL has passed
        deadline = time.monotonic() + 10
        while runtime.population()["sms"].sends != 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.population()["sms"].sends == 4 and len(calls) >= 3
    finally:
        runtime.close()
