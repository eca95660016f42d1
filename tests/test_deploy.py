"""deploy/: the compose topology and the nginx proxy, validated by their own tools.

No Docker daemon runs here, so ``docker-compose config`` (Debian's docker-compose, which
needs none) checks the file against the Compose schema and resolves it; the resolved
topology is then checked for what the deployment relies on. ``nginx -t`` checks the proxy
configuration (on a copy naming 127.0.0.1 for the replicas, whose names exist only inside
the compose network). Both tools are installed by .ci/run; a missing one fails the test.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from core.env import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
REPLICAS = ("revival-1", "revival-2")


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install -y {package} (.ci/run does)", False)
    return found


@pytest.fixture(scope="module")
def topology() -> dict:
    """deploy/compose.yaml as docker-compose resolves it with deploy/env.example."""
    exe = tool("docker-compose", "docker-compose")
    base = [exe, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / "env.example")]
    quiet = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    out = subprocess.run([*base, "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_services_and_start_order(topology):
    services = topology["services"]
    assert set(services) == {"postgres", "mlflow", "trainer", *REPLICAS, "journey-agent", "proxy"}
    agent = services["journey-agent"]
    assert agent["entrypoint"] == ["python", "-m", "service.journeys"]
    assert agent["environment"] == services[REPLICAS[0]]["environment"]
    assert agent["depends_on"] == services[REPLICAS[0]]["depends_on"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    server = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql" in server and "--serve-artifacts" in server
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "mlflow run mlflow --entry-point=train" in " ".join(services["trainer"]["command"])
    assert services["trainer"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for name in REPLICAS:
        replica = services[name]
        assert replica["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "mlflow": {"condition": "service_healthy"},
            "trainer": {"condition": "service_completed_successfully"},
        }
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
        env = replica["environment"]
        assert env["REVIVAL_STORE_URL"].startswith("postgresql+psycopg://revival:change-me@")
        assert env["REVIVAL_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["REVIVAL_API__BOOTSTRAP_KEY"].startswith("rvk_")
        assert any(v.endswith(":/data:ro") for v in replica["volumes"])
    proxy = services["proxy"]
    assert {d["condition"] for d in proxy["depends_on"].values()} == {"service_healthy"}


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    exe = tool("docker-compose", "docker-compose")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = subprocess.run(
        [exe, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "set POSTGRES_PASSWORD in deploy/.env" in out.stderr


def test_nginx_round_robins_over_both_replicas(tmp_path):
    exe = tool("nginx", "nginx-light")
    text = (DEPLOY / "nginx.conf").read_text()
    assert all(f"server {name}:3000" in text for name in REPLICAS)
    assert "least_conn" not in text and "ip_hash" not in text  # round robin
    copy = tmp_path / "nginx.conf"
    for name in REPLICAS:
        text = text.replace(f"{name}:3000", "127.0.0.1:3000")
    copy.write_text(text)
    out = subprocess.run(
        [exe, "-t", "-p", str(tmp_path), "-c", str(copy), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "test is successful" in out.stderr, out.stderr
