"""The built bento: what ``bentoml build`` packages, and ``bentoml serve <tag>`` of it.

One build into a temporary BentoML home serves every test here: the bento holds only the
service's code and policy, its build-time ``envs`` reach ``bento.yaml`` and the generated
Dockerfile, it serves ``/decide`` from a folder outside the repository with its champions
from the MLflow registry, and it refuses to start, fast and in one line, without a contact
store URL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib

import pytest
import yaml

from core.env import PROJECT_ROOT
from tools.serve import Server, free_port

pytestmark = pytest.mark.e2e

BUILD_ENVS = {
    "OPENBLAS_NUM_THREADS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "MPLBACKEND": "Agg",
}


def test_bento_holds_the_service_only_and_its_envs(bento):
    _, _, folder = bento
    spec = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert spec["python"]["packages"] == project["dependencies"]
    src = folder / "src"
    for path in ("service/service.py", "service/policy.yaml", "service/templates/messages.yaml"):
        assert (src / path).is_file(), path
    assert (src / "features" / "snapshot.py").is_file() and (src / "core" / "env.py").is_file()
    packaged = {p.relative_to(src).parts[0] for p in src.rglob("*") if p.is_file()}
    allowed = {"core", "features", "servable", "training", "service", "bentofile.yaml"}
    assert packaged <= allowed, packaged  # no tools, tests, benchmarks, docs (BentoML adds
    # the bentofile); training/ runs the /retrain jobs
    assert not list(src.rglob("__pycache__"))
    info = yaml.safe_load((folder / "bento.yaml").read_text())
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert BUILD_ENVS.items() <= envs.items()
    dockerfile = (folder / "env" / "docker" / "Dockerfile").read_text()
    for name, value in BUILD_ENVS.items():
        assert re.search(rf"^ARG {name}={value}$", dockerfile, re.M), name
        assert f"ENV {name}=${name}" in dockerfile
    assert "bentoml==1.4.39" in (folder / "env" / "python" / "requirements.txt").read_text()


def test_bento_serves_decide_from_outside_the_repo(bento, service_env, tmp_path):
    home, tag, _ = bento
    env = service_env(tmp_path) | {"BENTOML_HOME": str(home)}
    srv = Server(env, tmp_path / "serve.log", target=tag, cwd=tmp_path).start()
    try:
        rows = srv.post("/decide_batch", {"decisions": False, "limit": 5}).json()["rows"]
        r = srv.post("/decide", {"customer_id": rows[0]["customer_id"]})
        assert r.status_code == 200, r.text
        assert set(r.json()["model_versions"]) >= {"churn", "next_purchase", "cross_sell"}
    finally:
        srv.stop()
    assert (tmp_path / "store.db").is_file()  # the store the setting named, not one in the bento
    assert not list(home.joinpath("bentos").rglob("*.db"))


def test_bento_without_store_url_exits_at_once_naming_it(bento, service_env, tmp_path):
    home, tag, _ = bento
    env = {**os.environ, **service_env(tmp_path), "BENTOML_HOME": str(home)}
    del env["REVIVAL_STORE_URL"]
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    seconds = time.monotonic() - t0
    said = out.stdout + out.stderr
    assert out.returncode != 0 and seconds < 10, (seconds, said[-2000:])
    assert "setting REVIVAL_STORE_URL is required when serving a built bento" in said
    assert "Traceback" not in said


def test_bento_without_champions_exits_at_once_naming_the_model(bento, service_env, tmp_path):
    """A registry without the champions ends `bentoml serve` in the main process (no worker
    restart loop), naming the model and how to train it."""
    home, tag, _ = bento
    empty = f"sqlite:///{tmp_path / 'empty-mlflow.db'}"
    env = {**os.environ, **service_env(tmp_path), "BENTOML_HOME": str(home)}
    env["REVIVAL_MLFLOW_TRACKING_URI"] = empty
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - t0
    said = out.stdout + out.stderr
    assert out.returncode != 0 and seconds < 10, (seconds, said[-2000:])
    assert "model 'churn': no 'champion' version in REVIVAL_MLFLOW_TRACKING_URI" in said
    assert "Traceback" not in said
