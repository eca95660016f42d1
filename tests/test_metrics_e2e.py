"""The service's Prometheus metrics, served by two `bentoml serve` processes on one host.

Each server has its own BentoML home (``tools.serve.Server``), so its own multiprocess
folder: server A's decisions, cap refusals, dispatch failures and retrain jobs move A's
counters and never show in B's ``/metrics``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tools.serve import Server, free_port

pytestmark = pytest.mark.e2e

NOW = datetime(2011, 9, 6, 10, 0, tzinfo=ZoneInfo("Europe/London"))


def scrape(srv: Server) -> dict[tuple[str, tuple], float]:
    """Every sample of the server's /metrics: (name, sorted labels) -> value."""
    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.fixture(scope="module")
def servers(service_env, tmp_path_factory):
    """Servers A and B, started together; every channel of A sends to a closed local port."""
    folder = tmp_path_factory.mktemp("metrics")
    dead = f"http://127.0.0.1:{free_port()}/send"  # nothing listens: every send fails
    channels = ("SMS", "EMAIL", "WECHAT", "APP_PUSH")
    failing = {f"REVIVAL_CHANNELS__{c}__PROVIDER_URL": dead for c in channels} | {
        f"REVIVAL_CHANNELS__{c}__PROVIDER_MAX_RETRIES": "0" for c in channels
    }
    a_dir, b_dir = folder / "a", folder / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = Server(service_env(a_dir) | failing, folder / "a.log")
    b = Server(service_env(b_dir), folder / "b.log")
    errors: list[BaseException] = []

    def start(srv: Server) -> None:
        try:
            srv.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield a, b
    finally:
        a.stop()
        b.stop()


def _asleep(srv: Server, n: int) -> list[str]:
    body = {"decisions": False, "limit": 1000, "now": NOW.isoformat()}
    rows = srv.post("/decide_batch", body).json()["rows"]
    return [r["customer_id"] for r in rows if r["stage"] in ("sleeping", "lost")][:n]


def test_metrics_move_on_one_server_only(servers):
    a, b = servers
    first, second = _asleep(a, 2)
    now = NOW.isoformat()
    assert a.post("/decide", {"customer_id": first, "now": now}).json()["channel"] == "email"
    capped = a.post("/decide", {"customer_id": first, "now": now}).json()
    assert "email:cap_channel_day" in capped["reasons"]["channel"]
    made = a.post("/decide", {"customer_id": second, "now": now, "decision_id": "m-1"}).json()
    sent = a.post(
        "/decide",
        {"customer_id": second, "now": made["send_at"], "decision_id": "m-1", "dispatch": True},
    ).json()
    assert sent["dispatch"]["status"] == "failed", sent["dispatch"]
    job = a.post("/retrain", {"attribution_only": True}).json()
    assert b.post("/decide", {"customer_id": first, "now": now}).status_code == 200

    ma, mb = scrape(a), scrape(b)
    assert total(ma, "revival_decisions_total") == 4  # two, one recorded, its replay
    assert total(mb, "revival_decisions_total") == 1  # B's own only
    assert total(ma, "revival_cap_refusals_total", cap="channel_day", channel="email") == 1
    assert total(mb, "revival_cap_refusals_total") == 0
    assert total(ma, "revival_dispatch_failures_total", channel="email") == 1
    assert total(mb, "revival_dispatch_failures_total") == 0
    assert total(ma, "revival_retrain_jobs_total", status="started") == 1
    assert total(mb, "revival_retrain_jobs_total") == 0

    # the job's end is counted when a poll sees it
    deadline = time.monotonic() + 150
    status = job
    while status["status"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
        status = a.post("/retrain_status", {"job_id": job["job_id"]}).json()
    assert status["status"] != "running", status["log_tail"]
    assert total(scrape(a), "revival_retrain_jobs_total", status=status["status"]) == 1


def test_served_versions_and_snapshot_age(servers):
    a, _ = servers
    versions = a.post("/reload", {}).json()["model_versions"]
    samples = scrape(a)
    for model, version in versions.items():
        assert total(samples, "revival_model_version", model=model, version=str(version)) == 1
    assert total(samples, "revival_model_version") == len(versions)  # nothing else at 1
    cutoff = total(samples, "revival_snapshot_timestamp_seconds")
    assert datetime(2011, 1, 1).timestamp() < cutoff < datetime(2012, 1, 1).timestamp()
    age = total(samples, "revival_snapshot_age_seconds")
    time.sleep(1.1)
    later = total(scrape(a), "revival_snapshot_age_seconds")
    assert age == pytest.approx(time.time() - cutoff, abs=60) and later > age  # set on scrape
