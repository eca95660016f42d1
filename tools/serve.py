"""A ``bentoml serve`` process on a free local port: end-to-end tests, benchmarks, simulators."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from core.env import PROJECT_ROOT

__all__ = ["BOOTSTRAP_ENV", "READY_TIMEOUT_S", "SERVICE", "Server", "free_port"]

BOOTSTRAP_ENV = "REVIVAL_API__BOOTSTRAP_KEY"

READY_TIMEOUT_S = 180
SERVICE = "service.service:RevivalService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``bentoml serve`` process (its own process group, so stop() ends its workers).

    ``key``: the admin key the service creates on a first start (``api.bootstrap_key``):
    taken from ``env`` if set there, else a new random one; :meth:`post` and :attr:`auth`
    use it. On a store that already has keys, pass one of them in ``env`` instead.

    Each server gets its own ``BENTOML_HOME`` (a temporary folder, removed by :meth:`stop`)
    unless ``env`` names one: BentoML keeps the Prometheus multiprocess files of ``/metrics``
    in ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that folder when a server
    starts, so two servers sharing a home would mix (and wipe) each other's counters.
    ``cwd``: where ``bentoml serve`` runs (the project root by default).
    """

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        target: str = SERVICE,
        timeout_s: float = READY_TIMEOUT_S,
        cwd: Path = PROJECT_ROOT,
    ):
        self.env = {**os.environ, **env}
        self._own_home = "BENTOML_HOME" not in env  # one per server (and per start)
        self._home: str | None = None
        self.key = self.env.setdefault(BOOTSTRAP_ENV, f"rvk_{secrets.token_urlsafe(32)}")
        self.cwd = cwd
        self.log = log
        self.target = target
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Server:
        if self._own_home:
            self._home = tempfile.mkdtemp(prefix="revival-bentoml-home-")
            self.env["BENTOML_HOME"] = self._home
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"not ready in {self.timeout_s:.0f} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    @property
    def auth(self) -> dict[str, str]:
        """The ``Authorization`` header with :attr:`key`."""
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, path: str, body: object = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.auth, timeout=60)
