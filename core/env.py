"""Project paths, the MLflow tracking-URI rule and the process environment of entry points.

One place decides where the data, the MLflow store and BentoML's home live.
:func:`configure_environment` sets the variables that must be set before heavy libraries are
imported (``OPENBLAS_NUM_THREADS=1`` makes implicit's ALS ~10x faster on small machines); every
entry point (``python -m training``, the BentoML service when it starts, the benchmarks, the tests'
``conftest``) calls it first. Importing this module changes nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "DEFAULT_DATA",
    "HILLSTROM_DATA",
    "PROJECT_ROOT",
    "configure_environment",
    "LOCAL_TRACKING_URI",
    "default_tracking_uri",
    "project_path",
    "resolve_sqlite_url",
    "tracking_uri",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "online_retail_II.csv.gz"
HILLSTROM_DATA = SHARED_DATA / "hillstrom.csv.gz"


LOCAL_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"
_RELATIVE_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)([^?]+)(\?.*)?$", re.I)
_SERVICE_TRACKING_ENV = "REVIVAL_MLFLOW_TRACKING_URI"


def project_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, relative paths taken from the project root, normalised."""
    return Path(os.path.normpath(PROJECT_ROOT / Path(path).expanduser()))


def resolve_sqlite_url(url: str, root: Path = PROJECT_ROOT) -> str:
    """Make a relative ``sqlite:///path`` absolute against ``root``; keep other URLs as they are."""
    match = _RELATIVE_SQLITE.match(url.strip())
    if match is None:
        return url
    prefix, path, query = match.groups()
    return f"{prefix}{os.path.normpath(root / path)}{query or ''}"


def default_tracking_uri() -> str:
    """The local SQLite MLflow store under ``mlflow/`` (env ``MLFLOW_TRACKING_URI`` wins)."""
    return os.environ.get("MLFLOW_TRACKING_URI", LOCAL_TRACKING_URI)


def tracking_uri(configured: str | None = None) -> str:
    """The MLflow store the decision service loads champions from (and retrains into).

    ``configured`` is the service's setting (``Settings.mlflow_tracking_uri``: env
    ``REVIVAL_MLFLOW_TRACKING_URI``, else the policy file); None reads the env variable
    itself. It wins when ``REVIVAL_MLFLOW_TRACKING_URI`` is set or it is not the default
    local store; otherwise :func:`default_tracking_uri` (``MLFLOW_TRACKING_URI``, else the
    local store), as training does.
    """
    if configured is None and _SERVICE_TRACKING_ENV in os.environ:
        configured = resolve_sqlite_url(os.environ[_SERVICE_TRACKING_ENV])
    if configured is not None and (
        _SERVICE_TRACKING_ENV in os.environ or configured != LOCAL_TRACKING_URI
    ):
        return configured
    return default_tracking_uri()


def configure_environment() -> None:
    """Set thread counts, telemetry opt-outs and project-local homes (idempotent)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("BENTOML_HOME", str(PROJECT_ROOT / "bentoml_home"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
