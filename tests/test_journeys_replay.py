"""Journeys on the real log (issue #16's acceptance): the last 90 days of the champions'
slice replayed as a live feed with a simulated clock driving the agent.

Checked on every run: no cap exceeded in any window, no message after the purchase that
should have ended its journey, no step or dispatch twice, every first cart reminder the same
local day unless quiet hours moved it (or a reason is recorded). Then: the agent killed with
SIGKILL mid-replay and restarted ends with exactly the uninterrupted run's step runs, and two
agents ticking at once on one PostgreSQL store (the last 30 days) keep every rule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.env import PROJECT_ROOT
from core.store import SqlContactStore
from tools.journey_replay import (
    build_feed,
    channel_table,
    check_replay,
    journey_table,
    prepare,
    replay,
)

pytestmark = pytest.mark.integration

SEED = 0
LOST_CARTS = 2.0  # per day, on the slice's ~500 customers


@pytest.fixture(scope="module")
def replayed(champions, tmp_path_factory):
    """The slice's last 90 days replayed in process: ``(runtime, agent, feed, folder)``."""
    from service.config import load_settings
    from service.journeys import Agent, load_journeys
    from service.runtime import Runtime

    data, uri = champions
    folder = tmp_path_factory.mktemp("replay")
    before, start_local = prepare(data, folder, 90)
    env = _env(uri, before, f"sqlite:///{folder / 'store.db'}")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        settings = load_settings()
        runtime = Runtime(settings)
        agent = Agent(runtime, load_journeys(settings=settings), worker="replay")
        customers = list(runtime.state.snapshot.positions)
        feed = build_feed(data, start_local, settings.zone, customers, SEED, 0.3, LOST_CARTS)
        totals = replay(runtime, agent, feed, timedelta(hours=1), progress=False)
        yield runtime, agent, feed, folder, totals
        runtime.close()


def _env(uri: str, before, store_url: str) -> dict[str, str]:
    return {
        "REVIVAL_DATA_PATH": str(before),
        "REVIVAL_SNAPSHOT": "data",
        "REVIVAL_MLFLOW_TRACKING_URI": uri,
        "REVIVAL_STORE_URL": store_url,
        "REVIVAL_HOLDOUT_SHARE": "0",
    }


def _steps(store_url: str) -> set[tuple]:
    store = SqlContactStore(store_url)
    try:
        return {
            (r.enrolment_id, r.step_id, r.ran_at, r.outcome, r.decision_id, r.channel, r.send_at)
            for r in store.journeys.step_runs()
        }
    finally:
        store.close()


def _replay_cmd(data, folder, store_url: str, worker: str, days: int = 90) -> list[str]:
    return [
        sys.executable, "-m", "tools.journey_replay", "--folder", str(folder), "--data",
        str(data), "--seed", str(SEED), "--lost-carts", str(LOST_CARTS), "--store", store_url,
        "--worker", worker, "--days", str(days),
    ]  # fmt: skip


def test_the_replay_keeps_every_rule(replayed):
    runtime, agent, feed, _, totals = replayed
    checks = check_replay(runtime.store, runtime.settings, agent.journeys, feed.start, feed.end)
    assert checks == {"caps": [], "after_purchase": [], "twice": [], "cart_late": []}
    table = journey_table(runtime.store).set_index("journey")
    # the feed's carts and orders started journeys, messages went out, purchases ended some
    assert table.loc["cart_recovery", "enrolled"] > 0.5 * feed.carts_before_orders
    assert table.loc["post_purchase", "enrolled"] > 0.5 * feed.orders
    assert table.loc["cart_recovery", "exited"] > 0
    assert table["messages"].sum() == totals["messages"] > 0
    # the journeys' own hold-outs got no message
    held = [r for r in runtime.store.journeys.step_runs() if r.outcome == "held_out"]
    assert held and all(r.decision_id is None for r in held)
    # the report's multi-touch table over the journeys' messages and the replayed orders
    channels = channel_table(runtime.store, runtime.settings, feed)
    assert len(channels) > 0 and channels["touches"].sum() > 0
    assert channels["last_touch"].sum() > 0


def test_a_killed_agent_restarted_ends_with_the_same_step_runs(replayed, champions, tmp_path):
    """kill -9 mid-replay, restart: the step runs equal an uninterrupted run's (both replay
    the last 30 days, in processes of their own)."""
    runtime, _, _, folder, _ = replayed
    data, uri = champions
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, **_env(uri, folder / "before.csv", url)}
    whole = f"sqlite:///{tmp_path / 'whole' / 'store.db'}"
    ref = subprocess.run(
        _replay_cmd(data, tmp_path / "whole", whole, "steady", days=30),
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    cmd = _replay_cmd(data, tmp_path, url, "crashy", days=30)
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                with engine.connect() as conn:
                    n = conn.scalar(sa.text("select count(*) from journey_steps"))
            except sa.exc.OperationalError:
                continue
            if n and n > 200:
                break
        assert proc.poll() is None, "the replay ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        engine.dispose()
    partial = _steps(url)
    assert partial, "nothing ran before the kill"
    done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _steps(whole)
    assert len(expected) > len(partial)
    got = _steps(url)
    diff = [f"missing {r}" for r in sorted(expected - got, key=str)]
    diff += [f"extra {r}" for r in sorted(got - expected, key=str)]
    assert not diff, f"{len(partial)} step runs before the kill; " + "\n".join(diff[:20])


def test_two_agents_on_one_postgresql_store_keep_every_rule(replayed, champions, pg_url, tmp_path):
    """Two agents replay the last 30 days at once (a month is enough to race on every
    journey's steps; the rules are checked over the whole window)."""
    runtime, agent, feed, folder, _ = replayed
    data, uri = champions
    env = {**os.environ, **_env(uri, folder / "before.csv", pg_url)}
    procs = [
        subprocess.Popen(
            _replay_cmd(data, tmp_path / name, pg_url, name, days=30),
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("agent-a", "agent-b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    store = SqlContactStore(pg_url)
    try:
        checks = check_replay(store, runtime.settings, agent.journeys, feed.start, feed.end)
        assert checks == {"caps": [], "after_purchase": [], "twice": [], "cart_late": []}
        runs = store.journeys.step_runs()
        assert len({(r.enrolment_id, r.step_id) for r in runs}) == len(runs) > 0
        assert {r.worker for r in runs} == {"agent-a", "agent-b"}  # both did work
    finally:
        store.close()
