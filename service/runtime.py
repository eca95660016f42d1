"""The serving runtime: champions, the feature snapshot, item histories and the store.

:class:`Runtime` is what the BentoML service (and the benchmark, in-process) call. At start-up
it loads the three champions (``models:/<name>@<alias>``, versions reported), builds the
point-in-time feature snapshot and lifecycle from the configured transaction log
(``Settings.data_path``, cut at the day after its last transaction), scores every customer
once, and keeps each customer's purchase/return item history. The optional
``offer_uplift`` champion is loaded too; if it applies to this brand's offers and snapshot
(:func:`service.decision.offer_model_status`) its uplift per (customer, offer) is predicted
once with the other scores and chooses the offers, else the rules do. :meth:`Runtime.reload` switches
to the current champions (and optionally a fresh snapshot) without a restart; requests in
flight keep the state they started with (the state is swapped as one object).

Per request it reads the customer's contact history, consents and engagement from the store
(population engagement is cached: :meth:`Runtime.population`), calls the decision engine,
records the decision (reserving the contact under the frequency caps atomically) and, if
asked, dispatches the message through the channel's provider.

Live purchases posted to ``events`` update an in-process overlay (last purchase time and
items bought) used by the next decision; the store keeps the events, and purchases since the
snapshot are re-read from it at start-up. Items of such purchases live only in memory (the
event log has no item column): after a restart the transaction log is the source again.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.env import tracking_uri as env_tracking_uri
from core.store import (
    CapSpec,
    ContactStore,
    CustomerHistory,
    DecisionRecord,
    DispatchInProgress,
    Engagement,
    EventRecord,
    InvalidRecord,
    UnknownDecision,
    open_store,
)
from features.lifecycle import LifecycleRules, assign_lifecycle
from features.loaders import CleaningReport, load_transactions
from features.snapshot import build_features
from service.channels import ChannelProvider, LogProvider, OutboundMessage, WebhookProvider
from service.channels import dispatch as dispatch_message
from service.config import CHANNELS, OFFER_TYPES, Settings
from service.decision import (
    ASLEEP_STAGES,
    DEFAULT_PARAMS,
    NO_OFFER_MODEL,
    ContactHistory,
    CustomerView,
    Decision,
    DispatchOut,
    ModelScores,
    OfferModel,
    PolicyParams,
    Prepared,
    PriorityInputs,
    Profile,
    UnknownCampaign,
    campaign_by_id,
    caps_for,
    decide_data,
    encode_decision,
    holdout_draw,
    offer_model_status,
    predicted_value,
    rank_inputs,
    regulars,
)
from service.messages import load_templates
from service.report import BadReportRequest, CampaignReport, campaign_report
from service.schemas import (
    BatchRequest,
    BatchResponse,
    BatchRow,
    ConsentIn,
    CustomerResponse,
    DecideRequest,
    EventIn,
    EventsResponse,
    ProfileIn,
    RecommendedItem,
    RecommendResponse,
    ReloadResponse,
    ReportRequest,
)

__all__ = [
    "Conflict",
    "ModelsUnavailable",
    "POPULATION_INLINE_S",
    "POPULATION_TTL_S",
    "Rejected",
    "Runtime",
    "UnknownCustomer",
    "tracking_uri",
]

log = logging.getLogger(__name__)

POPULATION_TTL_S = 30.0
POPULATION_INLINE_S = 0.02  # a population refresh that took longer runs in the background
ROLES = ("churn", "next_purchase", "cross_sell")
_SCHEDULE_SLACK = timedelta(seconds=60)
REGULARS_KEPT = 50  # own items kept per customer, most bought first
_FUNNEL_EVENTS = ("delivered", "opened", "clicked", "converted")  # follow a send


class UnknownCustomer(LookupError):
    """The customer is not in the snapshot (HTTP 404)."""


class Rejected(ValueError):
    """A well-formed request the service cannot act on (HTTP 422); nothing was written."""


class Conflict(RuntimeError):
    """The request conflicts with the stored state (HTTP 409); nothing was written."""


class ModelsUnavailable(RuntimeError):
    """A champion is missing or cannot be loaded (start-up / reload failure)."""


_NO_PROFILE = Profile()  # immutable: shared by every request without a profile


def tracking_uri(settings: Settings) -> str:
    """The MLflow store to load champions from (:func:`core.env.tracking_uri`'s rule)."""
    return env_tracking_uri(settings.mlflow_tracking_uri)


def _aware(dt: datetime | None, settings: Settings, default: datetime | None = None) -> datetime:
    """A request time as aware UTC (naive = the configured default time zone)."""
    if dt is None:
        return default if default is not None else datetime.now(UTC)
    return settings.to_utc(dt)


def _epoch(ts: pd.Series, zone: str) -> np.ndarray:
    """Naive wall-clock times of the log (in ``zone``) as epoch seconds UTC."""
    local = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    fallback = ts.astype("datetime64[ns]").astype("int64") / 1e9
    secs = local.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    out = secs.astype("int64").to_numpy() / 1e9
    return np.where(local.isna().to_numpy(), fallback.to_numpy(), out)


@dataclass
class Snapshot:
    """Everything derived from the transaction log at start-up (or on a data reload)."""

    cutoff: pd.Timestamp
    at: datetime
    features: pd.DataFrame
    positions: dict[str, int]
    columns: list[str]
    values: np.ndarray  # features as a float matrix (row lookups without pandas)
    bought: dict[str, dict[str, tuple[float, int]]]
    returned: dict[str, dict[str, float]]
    regulars: dict[str, list[str]]
    item_names: dict[str, str]
    report: CleaningReport
    seconds: float
    column_index: dict[str, int] = field(init=False)  # feature name -> column of ``values``

    def __post_init__(self) -> None:
        self.column_index = {name: i for i, name in enumerate(self.columns)}


class FeatureRow(Mapping[str, float]):
    """One customer's row of :attr:`Snapshot.values`, read by feature name. A decision reads
    a handful of columns: building a dict of all of them cost more than the reads."""

    __slots__ = ("_index", "_row")

    def __init__(self, index: Mapping[str, int], row: np.ndarray) -> None:
        self._index = index
        self._row = row

    def __getitem__(self, name: str) -> float:
        return float(self._row[self._index[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass
class Models:
    """The champions and their registry versions."""

    churn: Any
    next_purchase: Any
    recommender: Any
    item_names: dict[str, str]
    versions: dict[str, str]
    uri: str
    offer_uplift: Any = None  # the offer_uplift champion (OfferUplift), when one loads
    offer_meta: dict[str, Any] = field(default_factory=dict)  # version, arms, columns, …


@dataclass
class State:
    """Snapshot × models: scores, lifecycle and the arrays the batch ranking reads."""

    snapshot: Snapshot
    models: Models
    scores: pd.DataFrame
    lifecycle: pd.DataFrame
    inputs: PriorityInputs
    prepared: Prepared  # per-customer static terms of a decision, from ``inputs``
    stage: np.ndarray
    tier: np.ndarray
    score_values: np.ndarray  # p_churn, p_buy_30d, expected_days, predicted_value
    value_score: np.ndarray
    candidates: dict[str, list[str]] = field(default_factory=dict)  # ALS cache
    holdout_draws: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    offer_model: OfferModel = NO_OFFER_MODEL  # does the offer-uplift champion choose offers?


@dataclass
class _Overlay:
    last_purchase: datetime | None = None
    items: dict[str, float] = field(default_factory=dict)


def load_snapshot(settings: Settings) -> Snapshot:
    """Load the configured log and build the snapshot at the day after its last transaction."""
    t0 = time.perf_counter()
    loaded = load_transactions(settings.data_path)
    tx = loaded.transactions
    if tx.empty:
        raise ValueError(f"{settings.data_path}: no usable transactions")
    cutoff = tx["ts"].max().normalize() + pd.Timedelta(days=1)
    feats = build_features(tx, cutoff)
    at = cutoff.tz_localize(settings.default_timezone).tz_convert("UTC").to_pydatetime()
    bought: dict[str, dict[str, tuple[float, int]]] = {}
    returned: dict[str, dict[str, float]] = {}
    if "item_id" in tx.columns and tx["item_id"].notna().any():
        lines = tx.loc[tx["item_id"].notna(), ["customer_id", "item_id", "ts", "quantity"]]
        lines = lines.assign(epoch=_epoch(lines["ts"], settings.default_timezone))
        buy = (
            lines[lines["quantity"] > 0]
            .groupby(["customer_id", "item_id"], sort=False)["epoch"]
            .agg(["max", "size"])
        )
        for (cid, item), last, n in zip(
            buy.index, buy["max"].to_numpy(), buy["size"].to_numpy(), strict=True
        ):
            bought.setdefault(cid, {})[item] = (float(last), int(n))
        ret = (
            lines[lines["quantity"] < 0].groupby(["customer_id", "item_id"], sort=False)["epoch"]
        ).max()
        for (cid, item), last in zip(ret.index, ret.to_numpy(), strict=True):
            returned.setdefault(cid, {})[item] = float(last)
    names = {}
    if len(loaded.items):
        names = dict(
            zip(loaded.items["item_id"].astype(str), loaded.items["name"].astype(str), strict=True)
        )
    return Snapshot(
        cutoff=cutoff,
        at=at,
        features=feats,
        positions={c: i for i, c in enumerate(feats.index.astype(str))},
        columns=[str(c) for c in feats.columns],
        values=feats.to_numpy(dtype=float),
        bought=bought,
        returned=returned,
        regulars={c: regulars(items, REGULARS_KEPT) for c, items in bought.items()},
        item_names=names,
        report=loaded.report,
        seconds=time.perf_counter() - t0,
    )


def load_models(settings: Settings) -> Models:
    """Load ``models:/<name>@<alias>`` for every role (by the version the alias points at)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import mlflow

    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    alias = settings.model_alias
    names = settings.model_names
    loaded: dict[str, Any] = {}
    versions: dict[str, str] = {}
    item_names: dict[str, str] = {}
    for role in ROLES:
        name = getattr(names, role)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            raise ModelsUnavailable(
                f"no '{alias}' version of model {name!r} in {uri}: train first "
                f"(python -m training --if-missing) [{str(exc).splitlines()[0][:200]}]"
            ) from None
        try:
            model = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
        except Exception as exc:  # a broken artifact must stop start-up with its name
            raise ModelsUnavailable(f"cannot load models:/{name}/{mv.version}: {exc}") from exc
        inner = model.unwrap_python_model()
        loaded[role] = getattr(inner, "model", inner)
        versions[name] = str(mv.version)
        if role == "cross_sell":
            item_names = dict(getattr(inner, "names", {}) or {})
    offer, meta = _load_offer_uplift(client, names.offer_uplift, alias)
    if "version" in meta:
        versions[names.offer_uplift] = meta["version"]
    return Models(
        churn=loaded["churn"],
        next_purchase=loaded["next_purchase"],
        recommender=loaded["cross_sell"],
        item_names=item_names,
        versions=versions,
        uri=uri,
        offer_uplift=offer,
        offer_meta=meta,
    )


def _load_offer_uplift(client: Any, name: str, alias: str) -> tuple[Any, dict[str, Any]]:
    """The optional ``offer_uplift`` champion and what it covers (arms, feature columns,
    what it was trained on). Missing or unloadable: ``(None, {"error": why})`` and the
    rules choose offers — an optional model never stops start-up."""
    from mlflow.exceptions import MlflowException

    import mlflow

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, {"error": f"no '{alias}' version of model {name!r}"}
    version = str(mv.version)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        inner = loaded.unwrap_python_model()
        model = getattr(inner, "model", inner)
        arms, columns = list(model.arms), list(model.input_columns)
    except Exception as exc:  # optional model: report, serve with the rules
        log.warning("cannot load models:/%s/%s (offer rules used): %s", name, version, exc)
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


PRECOMPUTE_CANDIDATES_UP_TO = 200_000  # customers; above, ALS items are computed on demand


def score_snapshot(
    snapshot: Snapshot, models: Models, settings: Settings, params: PolicyParams = DEFAULT_PARAMS
) -> State:
    """Score every customer once (churn, next purchase, ALS candidates); lifecycle tiers use
    historic and predicted value."""
    feats = snapshot.features
    p_churn = np.asarray(models.churn.predict(feats), float)
    nxt = models.next_purchase.predict(feats)
    pv = predicted_value(feats, p_churn)
    scores = pd.DataFrame(
        {
            "p_churn": p_churn,
            "p_buy_30d": nxt["p_buy_30d"].to_numpy(float),
            "expected_days": nxt["expected_days"].to_numpy(float),
            "predicted_value": pv,
        },
        index=feats.index,
    )
    rules = LifecycleRules(
        high_quantile=settings.value_tiers.high_quantile,
        low_quantile=settings.value_tiers.low_quantile,
    )
    lc = assign_lifecycle(feats, rules, predicted_value=pd.Series(pv, index=feats.index))
    frame = feats.assign(stage=lc["stage"].astype(str))
    offer_model, tau = offer_scores(snapshot, models, settings)
    k = params.candidate_items
    candidates: dict[str, list[str]] = {}
    if len(feats) <= PRECOMPUTE_CANDIDATES_UP_TO:
        ids = [str(c) for c in feats.index]
        found = models.recommender.recommend(ids, k=k, exclude_seen=True)
        candidates = {f"{c}\x1f{k}": list(found.get(c, [])) for c in ids}
    inputs = PriorityInputs.from_frames(frame, scores, offer_uplift=tau)
    return State(
        snapshot=snapshot,
        models=models,
        scores=scores,
        lifecycle=lc,
        inputs=inputs,
        prepared=Prepared.build(inputs, params),
        stage=lc["stage"].astype(str).to_numpy(),
        tier=lc["tier"].astype(str).to_numpy(),
        score_values=scores[["p_churn", "p_buy_30d", "expected_days", "predicted_value"]]
        .to_numpy(float)
        .copy(),
        value_score=lc["value_score"].to_numpy(float),
        candidates=candidates,
        offer_model=offer_model,
    )


class Runtime:
    """Models + snapshot + store + policy: the plain-Python core behind every endpoint."""

    def __init__(
        self,
        settings: Settings,
        store: ContactStore | None = None,
        params: PolicyParams = DEFAULT_PARAMS,
        providers: dict[str, ChannelProvider] | None = None,
    ):
        self.settings = settings
        self.params = params
        self.store = store if store is not None else open_store(settings.store_url)
        self._reload_lock = threading.Lock()
        self._overlay_lock = threading.Lock()
        self._overlay: dict[str, _Overlay] = {}
        # population engagement: (computed at, value, events generation it saw); see population()
        self._population: tuple[float, dict[str, Engagement] | None, int] = (-math.inf, None, 0)
        self._events_batches = itertools.count(1)  # numbers every batch of recorded events
        self._population_gen = 0  # the latest batch's number
        self._population_seconds = 0.0  # how long the last refresh took
        self._population_busy = threading.Lock()  # one refresh at a time
        self.providers = providers if providers is not None else self._providers()
        t0 = time.perf_counter()
        try:
            load_templates()  # parse and validate the message templates now, not on a request
            snapshot = load_snapshot(settings)
            models = load_models(settings)
            self._state = score_snapshot(snapshot, models, settings, params)
            self._load_live_purchases()
            self._first_population()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - t0
        log.info(
            "runtime ready: %d customers at %s, models %s (%.1f s)",
            len(snapshot.features),
            snapshot.cutoff.date(),
            models.versions,
            self.startup_seconds,
        )

    # ----------------------------------------------------------------- set-up

    def _providers(self) -> dict[str, ChannelProvider]:
        out: dict[str, ChannelProvider] = {}
        fallback = LogProvider()
        for name, policy in self.settings.channels.items():
            if policy.provider_url is not None:
                out[name] = WebhookProvider(
                    str(policy.provider_url),
                    timeout_s=policy.provider_timeout_s,
                    max_retries=policy.provider_max_retries,
                )
            else:
                out[name] = fallback
        return out

    def _first_population(self) -> None:
        """The first population aggregate now rather than on a request; like the purchases
        below, a store that cannot answer yet does not stop start-up (the first decision
        tries again)."""
        try:
            self.population()
        except Exception as exc:
            log.warning("could not read the population engagement at start-up: %s", exc)

    def _load_live_purchases(self) -> None:
        snap = self._state.snapshot
        try:
            ev = self.store.events_between(
                snap.at, datetime(9999, 1, 1, tzinfo=UTC), event="purchase"
            )
        except Exception as exc:  # the store may be shared and large; never block start-up
            log.warning("could not read purchase events since the snapshot: %s", exc)
            return
        for cid, ts in zip(ev["customer_id"], ev["ts"], strict=True):
            self._note_purchase(str(cid), ts.to_pydatetime(), [])

    def close(self) -> None:
        """Release the store and provider connections."""
        for provider in {id(p): p for p in self.providers.values()}.values():
            provider.close()
        self.store.close()

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> State:
        return self._state

    @property
    def model_versions(self) -> dict[str, str]:
        return dict(self._state.models.versions)

    def reload(self, data: bool = False) -> ReloadResponse:
        """Switch to the current champions (and a fresh snapshot if ``data``)."""
        t0 = time.perf_counter()
        with self._reload_lock:
            old = self._state
            models = load_models(self.settings)
            snapshot = load_snapshot(self.settings) if data else old.snapshot
            self._state = score_snapshot(snapshot, models, self.settings, self.params)
        new = self._state
        return ReloadResponse(
            model_versions=new.models.versions,
            previous_versions=old.models.versions,
            changed=new.models.versions != old.models.versions or data,
            snapshot_at=new.snapshot.at,
            customers=len(new.snapshot.features),
            seconds=round(time.perf_counter() - t0, 3),
            offer_choice=new.offer_model.label,
        )

    def position(self, customer_id: str, state: State | None = None) -> int:
        state = state or self._state
        pos = state.snapshot.positions.get(customer_id)
        if pos is None:
            raise UnknownCustomer(
                f"customer {customer_id!r} is not in the snapshot of {state.snapshot.cutoff.date()} "
                f"({len(state.snapshot.positions):,} customers)"
            )
        return pos

    # ----------------------------------------------------------------- perception

    def _note_purchase(self, customer_id: str, ts: datetime, items: Sequence[str]) -> None:
        with self._overlay_lock:
            ov = self._overlay.setdefault(customer_id, _Overlay())
            if ov.last_purchase is None or ts > ov.last_purchase:
                ov.last_purchase = ts
            for item in items:
                ov.items[item] = max(ov.items.get(item, -math.inf), ts.timestamp())

    def view(self, customer_id: str, profile: ProfileIn | None, state: State) -> CustomerView:
        pos = self.position(customer_id, state)
        snap = state.snapshot
        row = FeatureRow(snap.column_index, snap.values[pos])
        bought = snap.bought.get(customer_id, {})
        ov = self._overlay.get(customer_id)
        if ov is not None and ov.items:
            bought = dict(bought)
            for item, ts in ov.items.items():
                last, n = bought.get(item, (-math.inf, 0))
                bought[item] = (max(last, ts), n + 1)
        prof = _NO_PROFILE
        if profile is not None:
            prof = Profile(
                locale=profile.locale,
                timezone=profile.timezone,
                name=profile.name,
                identifiers=dict(profile.identifiers),
                consents=dict(profile.consents),
            )
        return CustomerView(
            customer_id=customer_id,
            features=row,
            stage=str(state.stage[pos]),
            tier=str(state.tier[pos]),
            value_score=float(state.value_score[pos]),
            snapshot_at=snap.at,
            bought=bought,
            returned=snap.returned.get(customer_id, {}),
            last_purchase_at=ov.last_purchase if ov is not None else None,
            profile=prof,
            regulars=snap.regulars.get(customer_id, ()),
        )

    @staticmethod
    def model_scores(pos: int, state: State) -> ModelScores:
        p_churn, p_buy, days, value = state.score_values[pos].tolist()
        tau = state.inputs.offer_uplift
        return ModelScores(
            p_churn=p_churn,
            p_buy_30d=p_buy,
            expected_days=days,
            predicted_value=value,
            offer_uplift=None if tau is None else tuple(tau[pos].tolist()),
            offer_model=state.offer_model,
        )

    def candidates(self, customer_id: str, k: int, state: State) -> list[str]:
        """ALS items the customer has not bought or returned (cached per model state)."""
        key = f"{customer_id}\x1f{k}"
        hit = state.candidates.get(key)
        if hit is None:
            rec = state.models.recommender
            hit = list(rec.recommend([customer_id], k=k, exclude_seen=True).get(customer_id, []))
            state.candidates[key] = hit
        return hit

    def prefetch_candidates(self, customer_ids: Sequence[str], k: int, state: State) -> None:
        """Fill the ALS cache for many customers in one vectorised call (batch pages)."""
        missing = [c for c in customer_ids if f"{c}\x1f{k}" not in state.candidates]
        if not missing:
            return
        found = state.models.recommender.recommend(missing, k=k, exclude_seen=True)
        for c in missing:
            state.candidates[f"{c}\x1f{k}"] = list(found.get(c, []))

    def population(self) -> dict[str, Engagement]:
        """Every channel's engagement over all customers (the priors of channel learning).

        The aggregate reads every message event, so it is cached and refreshed when older
        than ``POPULATION_TTL_S`` or when events were recorded since. A refresh that last
        took at most ``POPULATION_INLINE_S`` runs inline (a small store sees new events at
        once, deterministically); a slower one runs in a background thread while decisions
        keep the previous value, so no decision (and on SQLite, no request on the event
        loop) waits for a full scan of a large event log. Only the first value is always
        computed inline. A customer's own engagement is read fresh on every decision.
        """
        stamp, value, gen = self._population
        fresh = gen == self._population_gen and time.monotonic() - stamp <= POPULATION_TTL_S
        if value is not None and fresh:
            return value
        if value is None or self._population_seconds <= POPULATION_INLINE_S:
            with self._population_busy:
                return self._refresh_population()
        if self._population_busy.acquire(blocking=False):
            threading.Thread(
                target=self._refresh_population_in_background, name="population", daemon=True
            ).start()
        return value

    def _refresh_population(self) -> dict[str, Engagement]:
        """Recompute :meth:`population` (the caller holds ``_population_busy``)."""
        gen, t0 = self._population_gen, time.perf_counter()
        value = self.store.population_engagement()
        self._population_seconds = time.perf_counter() - t0
        self._population = (time.monotonic(), value, gen)
        return value

    def _refresh_population_in_background(self) -> None:
        """The background refresh: releases ``_population_busy`` when done; on failure logs
        it and keeps serving the previous value for another ``POPULATION_TTL_S``."""
        try:
            self._refresh_population()
        except Exception:
            log.warning("population engagement refresh failed", exc_info=True)
            _, value, _ = self._population
            self._population = (time.monotonic(), value, self._population_gen)
        finally:
            self._population_busy.release()

    def history_since(self, now: datetime) -> datetime:
        """How far back a decision reads contacts: the ``forgotten`` horizon, and at least
        the frequency caps' week before ``now``."""
        return now - timedelta(days=max(self.params.forgotten_days, 8.0))

    def _contact_history(self, found: CustomerHistory) -> ContactHistory:
        return ContactHistory(
            contacts=found.contacts,
            consents=found.consents,
            engagement=found.engagement,
            population=self.population(),
            shadows=found.shadows,
        )

    def history(self, customer_id: str, now: datetime) -> ContactHistory:
        """The customer's contacts, consents and engagement as one decision reads them."""
        return self._contact_history(
            self.store.customer_history(customer_id, self.history_since(now))
        )

    # ----------------------------------------------------------------- decide

    def _decide_once(
        self,
        customer_id: str,
        now: datetime,
        campaign_id: str,
        channels: Sequence[str] | None,
        profile: ProfileIn | None,
        state: State,
        decision_id: str | None,
        unavailable: dict[str, str],
        explore: bool | None,
        history: ContactHistory,
    ) -> dict[str, Any]:
        pos = self.position(customer_id, state)
        view = self.view(customer_id, profile, state)
        return decide_data(
            view,
            self.model_scores(pos, state),
            self.candidates(customer_id, self.params.candidate_items, state),
            history,
            self.settings,
            now,
            campaign_id=campaign_id,
            channels=channels,
            item_names=state.models.item_names or state.snapshot.item_names,
            model_versions=state.models.versions,
            params=self.params,
            decision_id=decision_id,
            unavailable=unavailable,
            explore=explore,
            prepared=state.prepared.row(pos),
        )

    @staticmethod
    def _as_record(data: Mapping[str, Any], payload: str) -> DecisionRecord:
        """The store's record of a decision (:func:`decide_data`) whose JSON is ``payload``."""
        offer = data["offer"]
        return DecisionRecord(
            decision_id=data["decision_id"],
            customer_id=data["customer_id"],
            campaign_id=data["campaign_id"],
            ts=data["decided_at"],
            channel=data["channel"],
            send_at=data["send_at"],
            intent=data["intent"],
            offer_type=offer["type"] if offer else "none",
            holdout=data["holdout"],
            revive=data["revive"],
            priority=data["priority"],
            payload=payload,
            model_versions=data["model_versions"],
        )

    def _decide_and_record(
        self,
        customer_id: str,
        now: datetime,
        campaign_id: str,
        channels: Sequence[str] | None,
        profile: ProfileIn | None,
        state: State,
        decision_id: str | None,
        record: bool,
        explore: bool | None = None,
    ) -> tuple[dict[str, Any], bytes | None]:
        """The decision (plain data, :func:`decide_data`) and, when recorded, its JSON (the
        stored payload)."""
        unavailable: dict[str, str] = {}
        once = functools.partial(
            self._decide_once,
            customer_id,
            now,
            campaign_id,
            channels,
            profile,
            state,
            decision_id,
            unavailable,
            explore,
        )
        if not record:
            return once(self.history(customer_id, now)), None
        made: list[tuple[dict[str, Any], bytes]] = []

        def make(found: CustomerHistory) -> tuple[DecisionRecord, CapSpec | None]:
            data = once(self._contact_history(found))
            encoded = encode_decision(data)
            made.append((data, encoded))
            channel = data["channel"]
            caps = caps_for(self.settings, channel) if data["revive"] and channel else None
            return self._as_record(data, encoded.decode()), caps

        # History, decision and cap check run in one store transaction, so the caps are
        # counted on exactly what the engine saw; a refusal can only come from a store cap
        # the engine does not model, and then that channel is ruled out and we decide again.
        for _ in range(len(CHANNELS) + 1):
            rec, reason = self.store.decide_and_reserve(customer_id, self.history_since(now), make)
            if reason is None:
                return made[-1]
            unavailable[str(rec.channel)] = f"{reason} (at reservation)"
        raise RuntimeError("could not reserve a contact after trying every channel")

    def decide(self, req: DecideRequest) -> Decision:
        """Decide for one customer; record it (unless ``dry_run``); dispatch if asked."""
        return Decision.model_validate(self.decide_encoded(req)[0])

    def decide_encoded(self, req: DecideRequest) -> tuple[dict[str, Any], bytes]:
        """:meth:`decide` as plain data (:func:`decide_data`) and its JSON, the response
        body: a recorded decision's is its stored payload (encoded once, not validated
        again); a replayed or dispatched one goes through the :class:`Decision` model."""
        state = self._state
        now = _aware(req.now, self.settings)
        self.position(req.customer_id, state)  # 404 before anything else
        campaign_by_id(self.settings, req.campaign_id)  # UnknownCampaign -> 422
        if req.dispatch and req.dry_run:
            raise Rejected("dispatch needs a recorded decision: drop dry_run to dispatch")
        decision: Decision | None = None
        if req.decision_id is not None:
            existing = self.store.get_decision(req.decision_id)
            if existing is not None:
                if existing.customer_id != req.customer_id:
                    raise Conflict(
                        f"decision {req.decision_id!r} belongs to customer "
                        f"{existing.customer_id!r}, not {req.customer_id!r}"
                    )
                decision = Decision.model_validate(existing.payload)
        if decision is None:
            data, encoded = self._decide_and_record(
                req.customer_id,
                now,
                req.campaign_id,
                req.channels,
                req.profile,
                state,
                req.decision_id,
                record=not req.dry_run,
                explore=req.explore,
            )
            if not req.dispatch:
                return data, encoded or encode_decision(data)
            decision = Decision.model_validate(data)
        if req.dispatch:
            decision.dispatch = self._dispatch(decision, req.profile, now)
        return decision.model_dump(), decision.model_dump_json().encode()

    def _dispatch(
        self, decision: Decision, profile: ProfileIn | None, now: datetime
    ) -> DispatchOut:
        if decision.holdout:
            return DispatchOut(status="skipped", error="holdout: control group, never sent")
        if not decision.contact or decision.channel is None or decision.message is None:
            return DispatchOut(status="skipped", error="decision does not contact the customer")
        if decision.send_at is not None and decision.send_at > now + _SCHEDULE_SLACK:
            return DispatchOut(
                status="scheduled",
                error=f"send_at {decision.send_at.isoformat()}: call again with this "
                "decision_id at or after it",
            )
        ident = self.settings.channel(decision.channel).identifier
        to = (profile.identifiers.get(ident) if profile else None) or decision.customer_id
        message = OutboundMessage(
            decision_id=decision.decision_id,
            customer_id=decision.customer_id,
            channel=decision.channel,
            to=to,
            subject=decision.message.subject,
            body=decision.message.body,
        )
        try:
            result = dispatch_message(self.store, self.providers[decision.channel], message)
        except UnknownDecision:
            raise Rejected("dispatch needs a recorded decision") from None
        except DispatchInProgress as exc:
            raise Conflict(str(exc)) from None
        return DispatchOut(
            status="duplicate" if result.duplicate else result.status,
            attempts=result.attempts,
            error=result.error,
            provider_message_id=result.provider_message_id,
            status_code=result.status_code,
        )

    # ----------------------------------------------------------------- batch

    def _holdout_draws(self, state: State, campaign_id: str) -> np.ndarray:
        key = (campaign_id, self.settings.holdout_salt)
        draws = state.holdout_draws.get(key)
        if draws is None:
            draws = np.array(
                [
                    holdout_draw(c, campaign_id, self.settings.holdout_salt)
                    for c in state.inputs.index
                ]
            )
            state.holdout_draws[key] = draws
        return draws

    def decide_batch(self, req: BatchRequest) -> BatchResponse:
        """Rank customers by priority (vectorised), cut at budget/count, decide the page."""
        t0 = time.perf_counter()
        state = self._state
        now = _aware(req.now, self.settings)
        campaign = campaign_by_id(self.settings, req.campaign_id)
        unknown: list[str] = []
        if req.customer_ids is not None:
            pos_map = state.snapshot.positions
            found = []
            for c in dict.fromkeys(req.customer_ids):
                p = pos_map.get(c)
                if p is None:
                    unknown.append(c)
                else:
                    found.append(p)
            rows = np.asarray(found, np.int64)
        else:
            rows = np.arange(len(state.inputs))
        mask = np.ones(len(rows), bool)
        if req.stages is not None:
            mask &= np.isin(state.stage[rows], req.stages)
        if req.tiers is not None:
            mask &= np.isin(state.tier[rows], req.tiers)
        rows = rows[mask]
        ok = None
        if req.channels is not None:
            ok = np.array([c in req.channels for c in CHANNELS]) & self._default_ok()
        pr = rank_inputs(state.inputs.take(rows), self.settings, self.params, channel_ok=ok)
        eligible = np.flatnonzero(pr.revive)
        order = eligible[np.argsort(-pr.priority[eligible], kind="stable")]
        holdout = self._holdout_draws(state, campaign.id)[rows[order]] < self.settings.holdout_share
        cost = np.where(holdout, 0.0, pr.cost[order])
        cum = np.cumsum(cost)
        keep = len(order)
        if req.max_customers is not None:
            keep = min(keep, req.max_customers)
        if req.budget is not None:
            keep = min(keep, int(np.searchsorted(cum, req.budget, side="right")))
        page = np.arange(req.offset, min(keep, req.offset + req.limit))
        if req.decisions and len(page):
            ids = [str(state.inputs.index[int(rows[order[r]])]) for r in page]
            self.prefetch_candidates(ids, self.params.candidate_items, state)
        out_rows: list[BatchRow] = []
        for rank in page:
            i = order[rank]
            pos = int(rows[i])
            cid = str(state.inputs.index[pos])
            decision = None
            if req.decisions:
                decision, _ = self._decide_and_record(
                    cid, now, campaign.id, req.channels, None, state, None, record=req.record
                )
            out_rows.append(
                BatchRow(
                    rank=int(rank) + 1,
                    customer_id=cid,
                    stage=str(state.stage[pos]),
                    tier=str(state.tier[pos]),
                    priority=round(float(pr.priority[i]), 4),
                    expected_cost=round(float(cost[rank]), 4),
                    cumulative_cost=round(float(cum[rank]), 4),
                    offer=OFFER_TYPES[pr.offer[i]] if pr.offer[i] >= 0 else None,
                    channel=CHANNELS[pr.channel[i]] if pr.channel[i] >= 0 else None,
                    holdout=bool(holdout[rank]),
                    decision=decision,
                )
            )
        end = req.offset + len(page)
        return BatchResponse(
            campaign_id=campaign.id,
            currency=self.settings.currency,
            candidates=len(rows),
            eligible=len(eligible),
            selected=keep,
            selected_cost=round(float(cum[keep - 1]) if keep else 0.0, 4),
            selected_priority=round(float(pr.priority[order[:keep]].sum()), 4),
            offset=req.offset,
            limit=req.limit,
            next_offset=end if end < keep else None,
            unknown_customer_ids=unknown[:1000],
            rows=out_rows,
            seconds=round(time.perf_counter() - t0, 4),
        )

    def _default_ok(self) -> np.ndarray:
        s = self.settings
        return np.array(
            [
                c in s.channels
                and s.channels[c].enabled
                and c in s.implied_consent
                and s.channels[c].identifier in s.account_identifiers
                for c in CHANNELS
            ]
        )

    # ----------------------------------------------------------------- other endpoints

    def _filtered_items(
        self, view: CustomerView, items: Sequence[str], now: datetime, k: int
    ) -> tuple[list[str], int, int]:
        now_s = now.timestamp()
        ret_cut = now_s - self.params.return_block_days * 86400.0
        rec_cut = now_s - self.params.recent_purchase_days * 86400.0
        blocked = {i for i, ts in view.returned.items() if ts >= ret_cut}
        recent = {i for i, (ts, _) in view.bought.items() if ts >= rec_cut}
        out: list[str] = []
        n_ret = n_rec = 0
        for item in items:
            if item in blocked:
                n_ret += 1
            elif item in recent:
                n_rec += 1
            elif item not in out:
                out.append(item)
                if len(out) == k:
                    break
        return out, n_ret, n_rec

    def recommend(self, customer_id: str, k: int, now: datetime | None) -> RecommendResponse:
        state = self._state
        at = _aware(now, self.settings, default=max(datetime.now(UTC), state.snapshot.at))
        view = self.view(customer_id, None, state)
        pool = self.candidates(customer_id, k + self.params.candidate_items, state)
        items, n_ret, n_rec = self._filtered_items(view, pool, at, k)
        names = state.models.item_names or state.snapshot.item_names
        return RecommendResponse(
            customer_id=customer_id,
            items=[
                RecommendedItem(item_id=i, name=names.get(i), rank=r + 1)
                for r, i in enumerate(items)
            ],
            excluded_returned=n_ret,
            excluded_recent=n_rec,
            model_version=state.models.versions.get(self.settings.model_names.cross_sell),
        )

    def customer(self, customer_id: str, now: datetime | None) -> CustomerResponse:
        state = self._state
        at = _aware(now, self.settings, default=datetime.now(UTC))
        pos = self.position(customer_id, state)
        view = self.view(customer_id, None, state)
        hist = self.history(customer_id, at)
        consents = {}
        for ch in self.settings.channels:
            stored = hist.consents.get(ch)
            consents[ch] = stored if stored is not None else ch in self.settings.implied_consent
        names = state.models.item_names or state.snapshot.item_names
        top = sorted(view.bought.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:10]
        cut = at.timestamp() - self.params.return_block_days * 86400.0
        latest = self.store.latest_decision(customer_id)
        return CustomerResponse(
            customer_id=customer_id,
            snapshot_at=state.snapshot.at,
            stage=view.stage,
            tier=view.tier,
            value_score=round(view.value_score, 2),
            features={
                k: (None if not math.isfinite(float(v)) else round(float(v), 6))
                for k, v in view.features.items()
            },
            scores={k: round(float(v), 6) for k, v in state.scores.iloc[pos].to_dict().items()},
            consents=consents,
            engagement={ch: e.__dict__ for ch, e in hist.engagement.items()},
            recent_contacts=[
                {
                    "ts": c.ts,
                    "channel": c.channel,
                    "source": c.source,
                    "decision_id": c.decision_id,
                    "campaign_id": c.campaign_id,
                }
                for c in hist.contacts
            ],
            latest_decision=None
            if latest is None
            else {
                "decision_id": latest.decision_id,
                "ts": latest.ts,
                "campaign_id": latest.campaign_id,
                "revive": latest.revive,
                "holdout": latest.holdout,
                "channel": latest.channel,
                "send_at": latest.send_at,
                "offer_type": latest.offer_type,
                "priority": latest.priority,
            },
            top_items=[
                {
                    "item_id": i,
                    "name": names.get(i),
                    "purchases": n,
                    "last_bought": datetime.fromtimestamp(ts, UTC),
                }
                for i, (ts, n) in top
            ],
            returned_items_90d=sorted(i for i, ts in view.returned.items() if ts >= cut),
            live_purchase_at=view.last_purchase_at,
            model_versions=state.models.versions,
        )

    def record(self, events: Sequence[EventIn], consents: Sequence[ConsentIn]) -> EventsResponse:
        """Validate everything first, then append events (one transaction) and consents."""
        now = datetime.now(UTC)
        records: list[EventRecord] = []
        try:
            for i, e in enumerate(events):
                if e.item_ids and e.event != "purchase":
                    raise Rejected(f"events[{i}]: item_ids are only allowed on purchase events")
                records.append(
                    EventRecord(
                        customer_id=e.customer_id,
                        ts=_aware(e.ts, self.settings, default=now),
                        event=e.event,
                        channel=e.channel,
                        campaign_id=e.campaign_id,
                        decision_id=e.decision_id,
                        value=e.value,
                        dedup_key=e.dedup_key,
                    )
                )
            pairs, repeated = self._checked_events(events, records)
            consent_rows = [
                (
                    c.customer_id,
                    c.channel,
                    c.granted,
                    _aware(c.ts, self.settings, default=now),
                    c.source,
                )
                for c in consents
            ]
        except InvalidRecord as exc:
            raise Rejected(str(exc)) from None
        records = [rec for _, rec in pairs]
        inserted, duplicates = self.store.record_events(records) if records else (0, 0)
        for row in consent_rows:
            self.store.set_consent(*row)
        for e, rec in pairs:
            if e.event == "purchase":
                self._note_purchase(e.customer_id, rec.ts, e.item_ids)
        if records:
            self._population_gen = next(self._events_batches)  # population() refreshes
        return EventsResponse(
            inserted=inserted, duplicates=duplicates + repeated, consents=len(consent_rows)
        )

    def _checked_events(
        self, events: Sequence[EventIn], records: Sequence[EventRecord]
    ) -> tuple[list[tuple[EventIn, EventRecord]], int]:
        """Check a batch against the stored decisions; drop events repeated in the batch.

        Rejected (naming ``events[i].field``): an unknown campaign (not configured and not the
        campaign of the referenced decision); a ``decision_id`` of another customer or
        campaign, or of a hold-out decision for a message event (never sent); an event before
        the decision it references was made; ``delivered/opened/clicked/converted`` before
        the decision's first ``sent`` (stored or in this batch). Decision ids the store does
        not know (sends made elsewhere) are accepted. Returns the kept pairs and how many
        identical repeats were dropped.
        """
        known = self.store.get_decisions(r.decision_id for r in records if r.decision_id)
        first_sent: dict[str, datetime] = {}
        seen: set[tuple] = set()
        kept: list[tuple[int, EventIn, EventRecord]] = []
        for i, (e, r) in enumerate(zip(events, records, strict=True)):
            d = known.get(r.decision_id) if r.decision_id is not None else None
            if r.campaign_id is not None and (d is None or d.campaign_id != r.campaign_id):
                try:
                    campaign_by_id(self.settings, r.campaign_id)
                except UnknownCampaign as exc:
                    raise UnknownCampaign(f"events[{i}].campaign_id: {exc.args[0]}") from None
            if d is not None:
                where = f"events[{i}]"
                if d.customer_id != r.customer_id:
                    raise Rejected(
                        f"{where}.decision_id: decision {d.decision_id!r} is for customer "
                        f"{d.customer_id!r}, not {r.customer_id!r}"
                    )
                if r.campaign_id is not None and r.campaign_id != d.campaign_id:
                    raise Rejected(
                        f"{where}.campaign_id: {r.campaign_id!r} but decision "
                        f"{d.decision_id!r} belongs to campaign {d.campaign_id!r}"
                    )
                if d.holdout and r.event in ("sent", *_FUNNEL_EVENTS):
                    raise Rejected(
                        f"{where}.decision_id: decision {d.decision_id!r} is a hold-out "
                        f"(control group, never sent): it cannot have a {r.event!r} event"
                    )
                if r.ts < d.ts:
                    raise Rejected(
                        f"{where}.ts: {r.event} at {r.ts.isoformat()} is before decision "
                        f"{d.decision_id!r} was made ({d.ts.isoformat()}): events out of order"
                    )
            if r.decision_id is not None and r.event == "sent":
                prev = first_sent.get(r.decision_id)
                first_sent[r.decision_id] = r.ts if prev is None else min(prev, r.ts)
            key = (r, tuple(e.item_ids))
            if key in seen:
                continue
            seen.add(key)
            kept.append((i, e, r))
        funnel = [(i, r) for i, _, r in kept if r.decision_id and r.event in _FUNNEL_EVENTS]
        stored = self.store.first_sends(r.decision_id for _, r in funnel) if funnel else {}
        for i, r in funnel:
            sends = (stored.get((r.customer_id, r.decision_id)), first_sent.get(r.decision_id))
            candidates = [t for t in sends if t]
            if candidates and r.ts < min(candidates):
                raise Rejected(
                    f"events[{i}].ts: {r.event} at {r.ts.isoformat()} is before decision "
                    f"{r.decision_id!r} was sent ({min(candidates).isoformat()}): "
                    "events out of order"
                )
        return [(e, r) for _, e, r in kept], len(events) - len(kept)

    def report(self, req: ReportRequest) -> CampaignReport:
        """The campaign report (:func:`service.report.campaign_report`) on the store's
        decisions and ``purchase`` events; an inconsistent request is :class:`Rejected`."""
        try:
            return campaign_report(
                self.store, req.campaign_id, req.start, req.end, settings=self.settings
            )
        except BadReportRequest as exc:
            raise Rejected(str(exc)) from None

    # convenience for the benchmark and scripts
    def asleep_high_value(self) -> list[str]:
        state = self._state
        sel = np.isin(state.stage, ASLEEP_STAGES) & (state.tier == "high")
        return [str(c) for c in state.inputs.index[sel]]
