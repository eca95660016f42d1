"""The deployment topology without containers: what ``deploy/compose.yaml`` runs, as processes.

A throw-away PostgreSQL cluster holds the contact store and the MLflow backend; an ``mlflow
server`` process serves the registry and the artifacts; the models are trained by ``mlflow
run`` of the project's ``train`` entry point against that server; two ``bentoml serve``
processes of the built bento (each with a BentoML home of its own, started outside the
repository) are the replicas. Checked: ``/reload`` on replica A is served by replica B within
``replica_sync_seconds`` plus a model load; a retraining job started on A is visible on B and
survives a restart of A; a purchase posted to A is seen by B's next decision.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.env import PROJECT_ROOT
from tools.serve import Server, free_port

pytestmark = pytest.mark.e2e

SYNC_S = 1.0  # replica_sync_seconds of the replicas
NOW = datetime(2011, 12, 12, 10, 0, tzinfo=UTC)  # just after the slice's snapshot


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server not healthy in {timeout:.0f} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server(pg_server, tmp_path_factory) -> Iterator[str]:
    """``mlflow server`` on PostgreSQL with a served artifact store; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
           str(port), "--backend-store-uri", pg_server.create_database("mlflow"),
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
           "--workers", "1"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def trained(mlflow_server, champions, tmp_path_factory) -> tuple[str, Path]:
    """Champions trained by ``mlflow run`` of the train entry point against the server."""
    data, _ = champions  # the 10 % slice of the real log the session's champions use
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = mlflow_server
    # --env-manager local runs the entry point's `python` from PATH: this interpreter's
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mlflow", "run", "mlflow", "-e", "train", "--env-manager",
           "local", "--experiment-name", "revival", "-P", f"data={data}", "-P",
           "max_cutoffs=4", "-P", "als_grid=small", "-P", "force=true"]  # fmt: skip
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return mlflow_server, data


@pytest.fixture(scope="module")
def replicas(trained, bento, pg_server, tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    """Two replicas of the built bento on one PostgreSQL store and the MLflow server."""
    from auth import API_ENV

    uri, data = trained
    _, _, folder = bento
    root = tmp_path_factory.mktemp("replicas")
    env = {
        "REVIVAL_STORE_URL": pg_server.create_database("store"),
        "REVIVAL_MLFLOW_TRACKING_URI": uri,
        "REVIVAL_DATA_PATH": str(data),
        "REVIVAL_HOLDOUT_SHARE": "0",
        "REVIVAL_REPLICA_SYNC_SECONDS": str(SYNC_S),
        **API_ENV,
    }
    a = Server(env, root / "a.log", target=str(folder), cwd=root)
    b = Server({**env, "REVIVAL_API__BOOTSTRAP_KEY": a.key}, root / "b.log",
               target=str(folder), cwd=root)  # fmt: skip
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _decide(server: Server, customer_id: str) -> dict:
    body = {"customer_id": customer_id, "now": NOW.isoformat(), "dry_run": True}
    r = server.post("/decide", body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_reload_on_one_replica_is_served_by_the_other(replicas, trained) -> None:
    from mlflow.tracking import MlflowClient

    a, b = replicas
    uri, _ = trained
    cid = b.post("/decide_batch", {"now": NOW.isoformat(), "limit": 1, "decisions": False})
    cid = cid.json()["rows"][0]["customer_id"]
    before = _decide(b, cid)["model_versions"]
    client = MlflowClient(uri)
    new = client.copy_model_version(f"models:/churn/{before['churn']}", "churn")
    client.set_registered_model_alias("churn", "champion", new.version)
    assert _decide(b, cid)["model_versions"] == before  # nothing moves before a reload
    out = a.post("/reload", {}).json()
    assert out["model_versions"]["churn"] == str(new.version), out
    t0 = time.monotonic()
    while _decide(b, cid)["model_versions"]["churn"] != str(new.version):
        assert time.monotonic() - t0 < SYNC_S + 30, "replica B did not follow the reload"
        time.sleep(0.1)
    followed = time.monotonic() - t0
    print(f"\nreplica B served the reloaded champion {followed:.2f} s after A's reload")
    assert _decide(b, cid)["model_versions"] == out["model_versions"]


def test_a_purchase_posted_to_one_replica_is_seen_by_the_other(replicas) -> None:
    a, b = replicas
    rows = b.post("/decide_batch", {"now": NOW.isoformat(), "limit": 50, "decisions": False})
    cid = next(
        r["customer_id"] for r in rows.json()["rows"] if _decide(b, r["customer_id"])["revive"]
    )
    ts = (NOW - timedelta(days=1)).isoformat()
    event = {"customer_id": cid, "event": "purchase", "order_id": f"topo-{cid}", "ts": ts,
             "value": 20.0, "item_ids": ["85123A"]}  # fmt: skip
    assert a.post("/events", {"events": [event]}).json()["inserted"] == 1
    after = _decide(b, cid)
    assert not after["revive"] and "purchased_since_snapshot" in after["reasons"]["who"]


def test_a_retrain_job_is_seen_by_every_replica_and_survives_a_restart(replicas) -> None:
    a, b = replicas
    job = a.post("/retrain", {"attribution_only": True}).json()
    assert job["status"] == "running", job
    seen = b.post("/retrain_status", {"job_id": job["job_id"]}).json()
    assert seen["job_id"] == job["job_id"] and seen["host"] == job["host"]
    running_at_stop = seen["status"] == "running"
    a.stop()  # the replica that started the job goes away …
    during = b.post("/retrain_status", {"job_id": job["job_id"]}).json()
    a.start()  # … and comes back
    deadline = time.monotonic() + 300  # a guard against hanging, not a timed assertion
    status = a.post("/retrain_status", {"job_id": job["job_id"]}).json()
    while status["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = a.post("/retrain_status", {"job_id": job["job_id"]}).json()
    assert status["status"] == "succeeded", status["log_tail"]
    assert status["result"]["run_id"] is None  # attribution only: nothing trained
    assert status == b.post("/retrain_status", {"job_id": job["job_id"]}).json()
    assert running_at_stop or during["status"] == "succeeded"
    again = a.post("/retrain", {"attribution_only": True})
    assert again.status_code == 200, again.text  # the finished job blocks nothing
    busy = b.post("/retrain", {"attribution_only": True})
    assert busy.status_code == 409, busy.text  # one job at a time across replicas
    assert again.json()["job_id"] in busy.json()["detail"]
    while (
        b.post("/retrain_status", {"job_id": again.json()["job_id"]}).json()["status"] == "running"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.5)
