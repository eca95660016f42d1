"""The served models: the champions from the MLflow registry and the offer-uplift scores.

Each champion is loaded as ``models:/<name>@<alias>`` (by the version the alias points at),
unwrapped from its pyfunc once (:func:`_served_model`) and checked against the protocol the
service needs of it (:mod:`core.protocols`), so a model that does not fit stops start-up with
its name rather than failing on the first request. The ``offer_uplift`` champion is optional:
missing, unloadable or not applicable, the offer rules choose offers and serving goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from core.env import tracking_uri as env_tracking_uri
from core.protocols import (
    CROSS_SELL_SKIPPED,
    ChurnScorer,
    CrossSellRecommender,
    NextPurchaseScorer,
    OfferUpliftScorer,
)
from service.config import OFFER_TYPES, Settings
from service.engine import NO_OFFER_MODEL, OfferModel, offer_model_status
from service.runtime.errors import ModelsUnavailable
from service.runtime.snapshot import Snapshot

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel, PythonModel
    from mlflow.tracking import MlflowClient

__all__ = ["Models", "load_models", "offer_scores", "tracking_uri"]

log = logging.getLogger(__name__)

M = TypeVar("M")


def tracking_uri(settings: Settings) -> str:
    """The MLflow store to load champions from (:func:`core.env.tracking_uri`'s rule)."""
    return env_tracking_uri(settings.mlflow_tracking_uri)


@dataclass
class Models:
    """The champions and their registry versions."""

    churn: ChurnScorer
    next_purchase: NextPurchaseScorer
    recommender: CrossSellRecommender | None  # None: trained on a log without items
    item_names: dict[str, str]
    versions: dict[str, str]
    uri: str
    offer_uplift: OfferUpliftScorer | None = None  # the offer_uplift champion, when one loads
    offer_meta: dict[str, Any] = field(default_factory=dict)  # version, arms, columns, …


def _served_model(loaded: PyFuncModel, uri: str, protocol: type[M]) -> tuple[M, PythonModel]:
    """The model a registered pyfunc serves, checked against ``protocol``, and its python
    model. Training's pyfunc wrappers keep the model in their ``model`` attribute; a python
    model without one is taken to be the model itself."""
    inner = loaded.unwrap_python_model()
    model = getattr(inner, "model", inner)
    if not isinstance(model, protocol):
        missing = [m for m in vars(protocol) if not m.startswith("_") and not hasattr(model, m)]
        raise ModelsUnavailable(
            f"{uri} serves a {type(model).__module__}.{type(model).__qualname__}, which does "
            f"not fit core.protocols.{protocol.__name__} (missing: {', '.join(missing)})"
        )
    return model, inner


def _version(client: MlflowClient, name: str, alias: str, pinned: dict[str, str] | None) -> str:
    """The version to serve: the pinned one (what every replica serves), else the alias's."""
    if pinned is not None:
        if name not in pinned:
            raise LookupError(f"no version of model {name!r} among the served ones {pinned}")
        return pinned[name]
    return str(client.get_model_version_by_alias(name, alias).version)


def _load_champion(
    client: MlflowClient,
    name: str,
    alias: str,
    uri: str,
    protocol: type[M],
    pinned: dict[str, str] | None,
) -> tuple[M, PythonModel, str]:
    """One required champion, its python model and its version; :class:`ModelsUnavailable`
    naming the model when it is missing, cannot be loaded or does not fit ``protocol``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = _version(client, name, alias, pinned)
    except (MlflowException, LookupError) as exc:
        raise ModelsUnavailable(
            f"no '{alias}' version of model {name!r} in {uri}: train first "
            f"(python -m training --if-missing) [{str(exc).splitlines()[0][:200]}]"
        ) from None
    model_uri = f"models:/{name}/{version}"
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # a broken artifact must stop start-up with its name
        raise ModelsUnavailable(f"cannot load {model_uri}: {exc}") from exc
    model, inner = _served_model(loaded, model_uri, protocol)
    return model, inner, version


def load_models(settings: Settings, pinned: dict[str, str] | None = None) -> Models:
    """Load ``models:/<name>@<alias>`` for every role (by the version the alias points at),
    or exactly the ``pinned`` versions (name -> version: what every replica serves,
    :mod:`core.store.serving`)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    alias, names = settings.model_alias, settings.model_names
    churn, _, v_churn = _load_champion(client, names.churn, alias, uri, ChurnScorer, pinned)
    nxt, _, v_next = _load_champion(
        client, names.next_purchase, alias, uri, NextPurchaseScorer, pinned
    )
    versions = {names.churn: v_churn, names.next_purchase: v_next}
    rec, item_names = None, {}
    skipped = client.get_model_version(names.churn, v_churn).tags.get(CROSS_SELL_SKIPPED)
    if skipped is None:
        rec, rec_inner, versions[names.cross_sell] = _load_champion(
            client, names.cross_sell, alias, uri, CrossSellRecommender, pinned
        )
        item_names = dict(getattr(rec_inner, "names", {}) or {})  # the wrapper's item names
    else:
        log.warning("serving without item recommendations: %s (%s)", skipped, CROSS_SELL_SKIPPED)
    offer, meta = _load_offer_uplift(client, names.offer_uplift, alias, pinned)
    if "version" in meta:
        versions[names.offer_uplift] = meta["version"]
    return Models(
        churn=churn,
        next_purchase=nxt,
        recommender=rec,
        item_names=item_names,
        versions=versions,
        uri=uri,
        offer_uplift=offer,
        offer_meta=meta,
    )


def _load_offer_uplift(
    client: MlflowClient, name: str, alias: str, pinned: dict[str, str] | None
) -> tuple[OfferUpliftScorer | None, dict[str, Any]]:
    """The optional ``offer_uplift`` champion and what it covers (arms, feature columns,
    what it was trained on). Missing (or not among the ``pinned`` versions) or unloadable:
    ``(None, {"error": why})`` and the rules choose offers — an optional model never stops
    start-up."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = _version(client, name, alias, pinned)
    except (MlflowException, LookupError):
        return None, {"error": f"no '{alias}' version of model {name!r}"}
    model_uri = f"models:/{name}/{version}"
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
        model, _ = _served_model(loaded, model_uri, OfferUpliftScorer)
        arms, columns = list(model.arms), list(model.input_columns)
    except Exception as exc:  # optional model: report, serve with the rules
        log.warning("cannot load %s (offer rules used): %s", model_uri, exc)
        return None, {"version": version, "error": f"cannot load v{version}: {exc}"[:300]}
    custom = (loaded.metadata.metadata or {}) if loaded.metadata is not None else {}
    return model, {
        "version": version,
        "arms": arms,
        "columns": columns,
        "trained_on": str(custom.get("trained_on", "unknown")),
    }


def offer_scores(
    snapshot: Snapshot, models: Models, settings: Settings
) -> tuple[OfferModel, np.ndarray | None]:
    """Whether the offer-uplift champion applies to this snapshot and, if so, its predicted
    uplift per (customer, offer) — n × ``OFFER_TYPES``, NaN where it has no arm — computed
    once per snapshot like the other scores."""
    meta = models.offer_meta
    if models.offer_uplift is None:
        if "version" in meta:  # registered but did not load
            return OfferModel(False, f"offer_rules: {meta['error']}", meta["version"]), None
        return NO_OFFER_MODEL, None
    status = offer_model_status(
        meta["version"],
        meta["arms"],
        meta["columns"],
        settings,
        snapshot.columns,
        meta.get("trained_on"),
    )
    if not status.applies:
        return status, None
    feats = snapshot.features
    try:
        pred = models.offer_uplift.predict(feats)
        tau = np.full((len(feats), len(OFFER_TYPES)), np.nan)
        for arm in status.arms:
            tau[:, OFFER_TYPES.index(arm)] = pred[f"uplift_{arm}"].to_numpy(float)
    except Exception as exc:  # a model that cannot score the snapshot must not stop serving
        log.warning("offer_uplift v%s cannot score the snapshot: %s", status.version, exc)
        label = f"offer_rules: offer_uplift champion v{status.version} failed on the snapshot"
        return OfferModel(False, label, status.version, status.arms, status.columns), None
    return status, tau
