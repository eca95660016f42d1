"""A PostgreSQL server for tests: the one named by ``REVIVAL_TEST_PG_URL``, or a throw-away cluster.

The throw-away cluster is made with ``initdb`` + ``pg_ctl`` (found on ``PATH`` or under
``/usr/lib/postgresql/*/bin``) in a temp dir, listens on a free localhost port with its unix
socket in the same dir, runs with ``fsync=off`` (a test cluster never needs to survive a
power cut) and, when the tests run as root, as the ``postgres`` system user (PostgreSQL
refuses to run as root). Each test gets its own database (:meth:`PgServer.create_database`),
so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from tools.serve import free_port

__all__ = ["ENV_URL", "INSTALL_HINT", "PgServer", "find_pg_bin", "start_pg"]

ENV_URL = "REVIVAL_TEST_PG_URL"
INSTALL_HINT = (
    "PostgreSQL is needed for the PostgreSQL store tests: install PostgreSQL "
    "(apt-get install -y postgresql), or set REVIVAL_TEST_PG_URL to a server URL such as "
    "postgresql+psycopg://user:password@host:5432/postgres (a role allowed to CREATE DATABASE)"
)
_SERVICE_USER = "postgres"
_START_TIMEOUT_S = 60


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on ``PATH``, else the newest Debian one."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    versions = sorted(found, key=lambda p: int(re.sub(r"\D", "", Path(p).parts[-3]) or 0))
    return Path(versions[-1]).parent if versions else None


class PgServer:
    """A reachable PostgreSQL server; ``admin_url`` connects to a maintenance database."""

    def __init__(
        self, admin_url: str, cluster: Path | None = None, pg_ctl: list[str] | None = None
    ):
        self.admin_url: URL = make_url(admin_url).set(drivername="postgresql+psycopg")
        self.cluster = cluster  # the temp dir of a throw-away cluster (None: external server)
        self._pg_ctl = pg_ctl
        self._admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self._databases: list[str] = []

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (password included)."""
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, prefix: str = "revival_test") -> str:
        """A new, empty database with a unique name; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database` (open sessions are ended)."""
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._databases:
            self._databases.remove(name)

    def stop(self) -> None:
        """Drop what this run created; stop and delete a throw-away cluster."""
        try:
            for name in list(self._databases):
                self.drop_database(self.url(name))
        finally:
            self._admin.dispose()
            if self.cluster is not None and self._pg_ctl is not None:
                subprocess.run(
                    [*self._pg_ctl, "stop", "-D", str(self.cluster / "data"), "-m", "immediate"],
                    capture_output=True,
                    timeout=60,
                    cwd=self.cluster,
                )
                shutil.rmtree(self.cluster, ignore_errors=True)


def _as_service_user(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root but runuser(1) is missing: cannot start PostgreSQL")
    return [runuser, "-u", _SERVICE_USER, "--", *cmd]


def _start_cluster(bindir: Path) -> PgServer:
    root = Path(tempfile.mkdtemp(prefix="revival-pg-"))
    if os.geteuid() == 0:
        try:
            shutil.chown(root, user=_SERVICE_USER, group=None)
        except LookupError:
            shutil.rmtree(root)
            raise RuntimeError(
                f"running as root and there is no {_SERVICE_USER!r} user to run PostgreSQL as; "
                + INSTALL_HINT
            ) from None
    data, log = root / "data", root / "server.log"
    initdb = _as_service_user(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        + ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    )
    out = subprocess.run(initdb, capture_output=True, text=True, timeout=120, cwd=root)
    if out.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {out.stdout[-1500:]}{out.stderr[-1500:]}")
    pg_ctl = _as_service_user([str(bindir / "pg_ctl")])
    for _ in range(5):  # the free port may be taken between choosing and binding it
        port = free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        start = [*pg_ctl, "start", "-D", str(data), "-l", str(log), "-w"]
        out = subprocess.run(
            [*start, "-t", str(_START_TIMEOUT_S), "-o", options],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            cwd=root,
        )
        if out.returncode == 0:
            return PgServer(
                f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", root, pg_ctl
            )
    text = log.read_text()[-3000:] if log.is_file() else out.stderr
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start ({bindir}): {text}")


def start_pg() -> PgServer:
    """The server of ``REVIVAL_TEST_PG_URL``, or a fresh throw-away cluster.

    Raises ``RuntimeError`` with :data:`INSTALL_HINT` when neither is available: the
    PostgreSQL tests are part of the suite, so a missing server is a failure, not a skip.
    """
    external = os.environ.get(ENV_URL)
    if external:
        server = PgServer(external)
        try:
            with server._admin.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            server._admin.dispose()
            raise RuntimeError(f"{ENV_URL} is set but the server is unreachable: {exc}") from exc
        return server
    bindir = find_pg_bin()
    if bindir is None:
        raise RuntimeError(
            f"no initdb/pg_ctl found on PATH or under /usr/lib/postgresql. {INSTALL_HINT}"
        )
    return _start_cluster(bindir)
