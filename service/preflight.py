"""The start-up check of a served process: every setting valid, or one line saying which is not.

``bentoml serve`` runs :func:`check_deployment` in its main process (the service's
``@bentoml.on_deployment`` hook) before it spawns a worker, so a bad setting ends the command
with a non-zero status and one line naming the setting, instead of a traceback in a worker
that BentoML restarts again and again. In a built bento (its code sits in ``<bento>/src``
beside ``bento.yaml``) the MLflow store and the contact store must be given explicitly: their
source-tree defaults would be files inside the bento, a throw-away store no replica shares.
Importing this module changes nothing; the check only reads the environment and the files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.config import PROJECT_ROOT, ConfigError, Settings, load_settings

__all__ = [
    "REQUIRED_IN_BENTO",
    "DeploymentError",
    "check_champions",
    "check_deployment",
    "in_built_bento",
]

REQUIRED_IN_BENTO: dict[str, str] = {
    "REVIVAL_MLFLOW_TRACKING_URI": "the MLflow server or store holding the champions",
    "REVIVAL_STORE_URL": "the contact-store database the replicas share",
}
_STORE_BACKENDS = ("sqlite", "postgresql")
_TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class DeploymentError(ValueError):
    """A setting makes the service unable to start; the message is one line naming it."""


def in_built_bento(root: Path = PROJECT_ROOT) -> bool:
    """Whether the code runs from a built bento: BentoML puts the sources in ``<bento>/src``
    next to the bento's ``bento.yaml`` (also inside the containerised image), which a source
    checkout never has."""
    return (root.parent / "bento.yaml").is_file()


def check_deployment(
    environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT
) -> Settings:
    """The validated settings, or :class:`DeploymentError` naming the first bad setting.

    Checks, in order: the settings required in a built bento are set and non-empty (a
    containerised bento turns an unset build argument into an empty variable), the policy
    file and every ``REVIVAL_*`` value validate (:func:`service.config.load_settings`), the
    store URL names a supported database and the tracking URI a known scheme.
    """
    env = os.environ if environ is None else environ
    if in_built_bento(root):
        for name, what in REQUIRED_IN_BENTO.items():
            if not env.get(name, "").strip():
                raise DeploymentError(
                    f"revival: setting {name} is required when serving a built bento ({what}; "
                    "the source-tree default would be a file inside the bento)"
                )
    try:
        settings = load_settings()
    except ConfigError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        head, *keys = lines or ["invalid configuration"]
        raise DeploymentError(f"revival: {head.rstrip(':')}: {'; '.join(keys)}") from None
    _check_store_url(settings.store_url)
    _check_tracking_uri(settings.mlflow_tracking_uri)
    return settings


def check_champions(settings: Settings) -> None:
    """:class:`DeploymentError` naming the first required model the registry cannot serve:
    the versions every replica serves (the store's served-versions log), else the alias.
    A worker would otherwise fail on it and be restarted again and again."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from core.env import tracking_uri
    from core.store import open_store

    store = open_store(settings.store_url)
    try:
        served = store.serving.current()
    finally:
        store.close()
    uri = tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(uri)
    names = settings.model_names
    for name in (names.churn, names.next_purchase, names.cross_sell):
        try:
            if served is not None and name in served.versions:
                client.get_model_version(name, served.versions[name])
            else:
                client.get_model_version_by_alias(name, settings.model_alias)
        except MlflowException as exc:
            which = (
                f"version {served.versions[name]} (served by the replicas) is missing"
                if served is not None and name in served.versions
                else f"no '{settings.model_alias}' version"
            )
            raise DeploymentError(
                f"revival: model {name!r}: {which} in REVIVAL_MLFLOW_TRACKING_URI ({uri}); "
                f"train first (mlflow run mlflow -e train) [{str(exc).splitlines()[0][:120]}]"
            ) from None


def _check_store_url(url: str) -> None:
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise DeploymentError(
            f"revival: setting REVIVAL_STORE_URL (store_url) is not a database URL: {exc}"
        ) from None
    if backend not in _STORE_BACKENDS:
        raise DeploymentError(
            f"revival: setting REVIVAL_STORE_URL (store_url) uses {backend!r}; supported: "
            f"{', '.join(_STORE_BACKENDS)}"
        )


def _check_tracking_uri(uri: str) -> None:
    match = _SCHEME.match(uri)
    scheme = match[1].split("+")[0].lower() if match else ""
    if scheme not in _TRACKING_SCHEMES and not uri.startswith("/"):
        raise DeploymentError(
            "revival: setting REVIVAL_MLFLOW_TRACKING_URI (mlflow_tracking_uri) must be an "
            f"absolute path or a URI with one of the schemes {', '.join(_TRACKING_SCHEMES)}; "
            f"got {uri[:80]!r}"
        )
