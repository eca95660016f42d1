"""The training run: backtest every model against its baselines, refit, register, gate.

Protocol (issues #3 and #18, on top of :mod:`features.labels`): a rolling-origin backtest
(:mod:`training.protocol`, :mod:`training.rolling`) — at each origin, the newest being the
day after the log's last day minus ``horizon``, models are fitted on stacked cutoffs whose
label windows end by the origin and evaluated after it, against baselines, on the same
customers, for two populations: ``all`` (every customer seen before the origin) and
``active_365d`` (ordered in the 365 days before it). The same recipe is then refitted on
cutoffs whose labels end at the end of the log, and *that* model is registered with the mean
backtest metrics of its recipe as tags (it is what the service will serve). One MLflow
parent run per training, a child run per model (:mod:`training.publish`); the champion gate
(:mod:`training.registry`) decides whether aliases move.
At its end a run that read its own log also logs a scoring run holding the serving snapshot
of the log (:func:`training.score.log_snapshot_run`), which service replicas load at
start-up; a retraining on an outcome-augmented log (:mod:`training.retrain`) logs none: the
service's snapshot is of the data file, the purchases since come from its store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.env import DEFAULT_DATA, default_tracking_uri
from core.memory import release_free_memory
from core.protocols import CROSS_SELL_SKIPPED
from core.store import open_store
from features.cutoff import in_time_order, parse_cutoff
from features.labels import LocalFrames, backtest_cutoff, training_cutoffs
from features.loaders import Loaded
from features.mapping import LogMapping
from features.serving import DEFAULT_TIMEZONE
from features.snapshot import coded_ids
from features.sources import Source, load_sources
from servable.propensity import LOCAL, BoosterTrainer
from training.backtest import backtest_markdown
from training.crosssell import VALIDATION_USERS, fit_final, no_items_reason
from training.protocol import Origin, choose_protocol, cutoff_kw, plan_origins
from training.publish import Fitted, log_run
from training.registry import (
    GateDecision,
    champion_version,
    use_store,
)
from training.rolling import (
    GATE_METRICS,
    FeatureFrames,
    RollingResult,
    fit_propensity,
    rolling_backtest,
    rolling_markdown,
)
from training.score import log_snapshot_run
from training.stages import Measurement, StageLog

__all__ = [
    "ENGINES",
    "TrainConfig",
    "TrainResult",
    "champions_or_explain",
    "missing_champions",
    "train",
]

#: where boosters are fitted (``TrainConfig.engine``, ``python -m training --engine``)
ENGINES = ("local", "dask")


@dataclass
class TrainConfig:
    """Everything a training run needs; the CLI and MLproject fill it."""

    data: Path = DEFAULT_DATA
    horizon: int = 90
    cutoff: pd.Timestamp | None = None  # backtest cutoff (default: features.labels.backtest_cutoff)
    tracking_uri: str = field(default_factory=default_tracking_uri)
    experiment: str = "revival"
    force: bool = False
    force_first: bool = False  # promote regardless of the gate where no champion exists yet
    step_days: int = 30
    max_cutoffs: int = 12
    min_history_days: int = 180
    origins: int = 4  # rolling-origin backtest: origins one horizon apart (training.protocol)
    als_grid: str = "default"  # "small" for quick runs (tests)
    # cross-sell tuning scores each grid point on a stable sample of at most this many
    # validation customers (training.crosssell.evaluation.sample_customers); None: all
    validation_users: int | None = VALIDATION_USERS
    register: bool = True
    # zone of the log's wall-clock times for the stored snapshot (the service's
    # default_timezone); None: log no snapshot run
    snapshot_timezone: str | None = DEFAULT_TIMEZONE
    # several sources (features.sources): further logs as (name, path); ``data`` is the
    # primary source's. ``identities``: a contact-store URL whose identity map (stitched
    # profiles) and erasures apply — logged with the run, never implied.
    sources: tuple[tuple[str, Path], ...] = ()
    primary_source: str = "shop"
    identities: str | None = None
    # ``data`` read through a column mapping (features.mapping); None: a known format
    mapping: LogMapping | None = None
    # where the snapshots and training frames are built and the boosters fitted: "local"
    # (this process) or "dask" (features.distributed.ClusterFrames, training.dask_engine, on
    # the cluster at ``scheduler``: an address, or "local" for a LocalCluster for the run)
    engine: str = "local"
    scheduler: str = "local"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine: one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.validation_users is not None and self.validation_users < 1:
            raise ValueError(
                f"validation_users: at least 1, or None for every customer; "
                f"got {self.validation_users!r}"
            )
        if self.cutoff is not None:  # a date string from MLproject or a caller: parsed once
            self.cutoff = parse_cutoff(self.cutoff)
        if self.snapshot_timezone:  # checked now, not after the training
            try:
                ZoneInfo(self.snapshot_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"snapshot_timezone: unknown IANA time zone {self.snapshot_timezone!r}"
                ) from None


@dataclass
class TrainResult:
    """What a run produced: metric table, gate decisions, stage timings, run id."""

    run_id: str
    metrics: pd.DataFrame
    decisions: list[GateDecision]
    stages: list[Measurement]
    cutoff: pd.Timestamp
    fingerprint: dict[str, Any]
    snapshot_run: str | None = None  # the scoring run holding the serving snapshot
    by_origin: pd.DataFrame | None = None  # the rolling-origin backtest, per origin


def _log(msg: str) -> None:
    print(msg, flush=True)


def load_log(cfg: TrainConfig) -> Loaded:
    """The training log: ``data`` and the further ``sources`` on unified customers
    (:func:`features.sources.load_sources`), with the identity map and erasures of the
    ``identities`` store when one is given."""
    identity: dict[str, str] = {}
    erased: set[str] = set()
    if cfg.identities:
        store = open_store(cfg.identities)
        try:
            identity, erased = store.profiles.identity_map(), store.profiles.erased_hashes()
        finally:
            store.close()
        _log(
            f"identities from {cfg.identities}: {len(identity):,} links, {len(erased):,} erased ids"
        )
    more = [Source(name, Path(path)) for name, path in cfg.sources]
    primary = Source(cfg.primary_source, Path(cfg.data), cfg.mapping)
    return load_sources(primary, more, identity, erased)


def _fingerprint(
    loaded: Loaded, cutoff: pd.Timestamp, cutoffs: list[pd.Timestamp], horizon: int
) -> dict[str, Any]:
    r = loaded.report
    return {
        "data.sources": ",".join(r.per_source) or "primary",
        "data.linked_customers": r.linked_customers,
        "data.path": r.source,
        "data.sha256": r.sha256,
        "data.rows_in": r.rows_in,
        "data.rows_kept": r.rows_kept,
        "data.customers": r.customers,
        "data.first_ts": r.first_ts,
        "data.last_ts": r.last_ts,
        "backtest.cutoff": str(cutoff.date()),
        "horizon_days": horizon,
        "train.cutoffs": ",".join(str(c.date()) for c in cutoffs),
    }


def missing_champions(tracking_uri: str, names: tuple[str, ...] = tuple(GATE_METRICS)) -> list[str]:
    """Registered model names without a ``champion`` alias in the given store (cross-sell
    is not missing when the churn champion was trained without items)."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    missing = [n for n in names if champion_version(client, n) is None]
    churn = champion_version(client, "churn")
    if "cross_sell" in missing and churn is not None and CROSS_SELL_SKIPPED in churn.tags:
        missing.remove("cross_sell")  # the champions were trained on a log without items
    return missing


def champions_or_explain(tracking_uri: str) -> bool:
    """True if every model has a champion; else say on stderr how to train one (for CLIs)."""
    missing = missing_champions(tracking_uri)
    if missing:
        print(
            f"no champion for {missing} in {tracking_uri}: run `make run` or "
            "`python -m training --if-missing` first",
            file=sys.stderr,
        )
    return not missing


def train(cfg: TrainConfig, loaded: Loaded | None = None) -> TrainResult:
    """Run the whole training (see module docstring); prints progress per stage.

    ``loaded``: an already loaded (e.g. outcome-augmented, :mod:`training.retrain`) log to
    train on instead of reading ``cfg.data``.
    """
    with _engine(cfg) as engine:
        return _train(cfg, loaded, engine)


@dataclass(frozen=True)
class _Engine:
    """Where a run's heavy steps run: its snapshots and training frames, built from the log,
    the cutoffs stacked for training and those scored here (:class:`FeatureFrames`), and
    the boosters."""

    frames: Callable[[pd.DataFrame, list[pd.Timestamp], list[pd.Timestamp]], FeatureFrames]
    trainer: BoosterTrainer


@contextlib.contextmanager
def _engine(cfg: TrainConfig) -> Iterator[_Engine]:
    """The engine of ``cfg.engine`` (a Dask client stays open for the run)."""
    if cfg.engine == "local":
        yield _Engine(LocalFrames, LOCAL)
        return
    from features.distributed import ClusterFrames, connect
    from training.dask_engine import DaskTrainer

    with connect(cfg.scheduler) as client:
        trainer = DaskTrainer(client)
        _log(f"engine: snapshots, training frames and boosters on {trainer.describe()}")
        yield _Engine(functools.partial(ClusterFrames, client), trainer)


def _train(cfg: TrainConfig, loaded: Loaded | None, engine: _Engine) -> TrainResult:
    stages = StageLog()
    experiment_id = use_store(cfg.tracking_uri, cfg.experiment)
    client = MlflowClient()

    own_log = loaded is None
    if loaded is None:
        loaded = stages.run("load + clean log", lambda: load_log(cfg))
    # one copy of the log for the whole run, in time order (a cutoff's rows are a slice of it,
    # features.cutoff.rows_before) and its ids and labels integer-coded (groupings stay
    # cheap); logging and the serving snapshot read the same frame
    loaded = replace(loaded, transactions=coded_ids(in_time_order(loaded.transactions)))
    tx = loaded.transactions
    release_free_memory()  # what loading built and dropped: most of the load stage's peak
    _log(loaded.report.to_text())
    cutoff = cfg.cutoff if cfg.cutoff is not None else backtest_cutoff(tx, cfg.horizon)
    origins = _plan(tx, cutoff, cfg)
    cfg, protocol, why = choose_protocol(tx, cutoff, cfg)  # the newest origin's: refitted
    _log(f"protocol: {protocol} ({why})")
    fp = _fingerprint(loaded, cutoff, list(origins[0].train_cutoffs), cfg.horizon)
    fp |= {
        "backtest.origins": ",".join(o.label for o in origins),
        "protocol": protocol,
        "protocol.min_history_days": cfg.min_history_days,
        "protocol.step_days": cfg.step_days,
        "train.engine": cfg.engine,
    }
    if cfg.mapping is not None:  # how the export was read is part of what was trained on
        fp["data.mapping"] = json.dumps(
            {"file": cfg.mapping.source, "columns": dict(cfg.mapping.columns)}, sort_keys=True
        )
    fitted = _fit(stages, cfg, tx, origins, loaded.item_text, engine)
    run_id, decisions = stages.run(
        "mlflow: log, register, champion gate",
        functools.partial(log_run, cfg, client, fp, loaded, fitted),
    )
    for d in decisions:
        _log(
            f"gate {d.model} v{d.version}: {'PROMOTED' if d.promoted else 'kept champion'}"
            f" — {d.reason}"
        )
    table, by_origin, features = fitted.table, fitted.rolling.by_origin, fitted.snapshot
    del fitted  # the models and the backtest's recommenders are logged: freed before the snapshot
    release_free_memory()
    snapshot_run = None
    if own_log and cfg.snapshot_timezone:
        zone = cfg.snapshot_timezone
        snapshot_run = stages.run(
            "serving snapshot: build + log (scoring run)",
            lambda: log_snapshot_run(
                loaded,
                experiment_id,
                zone,
                data_path=cfg.data,
                tags={"training.run": run_id},
                features=features,
            ),
        )
        _log(f"serving snapshot logged: run {snapshot_run}")
    return TrainResult(run_id, table, decisions, stages.done, cutoff, fp, snapshot_run, by_origin)


def _fit(
    stages: StageLog,
    cfg: TrainConfig,
    tx: pd.DataFrame,
    origins: list[Origin],
    item_text: dict[str, str],
    engine: _Engine,
) -> Fitted:
    """Every snapshot of the run built once, the rolling-origin backtest and the refit; the
    snapshots are freed when it returns but the one at the end of the log, which the serving
    snapshot reuses."""
    end = tx["ts"].max().normalize() + pd.Timedelta(days=1)  # the refit's labels end here
    final_cutoffs = training_cutoffs(tx, end, **cutoff_kw(cfg))
    stacked, scored = list(final_cutoffs), [end]
    for o in origins:
        stacked += o.train_cutoffs
        scored.append(o.cutoff)
    frames = stages.run(
        f"features: snapshots at {len(set(stacked) | set(scored))} distinct cutoffs",
        lambda: engine.frames(tx, stacked, scored),
    )
    rolling = _backtest(stages, cfg, tx, origins, item_text, frames, engine.trainer)
    _log(
        f"\nrolling-origin backtest ({len(origins)} origins, horizon {cfg.horizon} d)\n"
        f"{rolling_markdown(rolling)}\n\nmean over origins\n{backtest_markdown(rolling.table)}\n"
    )
    return _refit(stages, cfg, tx, rolling, item_text, frames, end, final_cutoffs, engine.trainer)


def _plan(tx: pd.DataFrame, newest: pd.Timestamp, cfg: TrainConfig) -> list[Origin]:
    """The backtest origins (:func:`training.protocol.plan_origins`), printed with their
    protocols; a ValueError naming every reason when none fits."""
    origins, dropped = plan_origins(tx, newest, cfg, cfg.origins)
    for d in dropped:
        _log(f"origin left out: {d}")
    if not origins or origins[0].cutoff != newest:
        raise ValueError(
            f"no training protocol fits the backtest cutoff {newest.date()}: " + "; ".join(dropped)
        )
    for o in origins:
        _log(f"origin {o.label} ({o.window}): protocol {o.protocol} ({o.why})")
    return origins


def _backtest(
    stages: StageLog,
    cfg: TrainConfig,
    tx: pd.DataFrame,
    origins: list[Origin],
    item_text: dict[str, str],
    frames: FeatureFrames,
    trainer: BoosterTrainer,
) -> RollingResult:
    """The rolling-origin backtest of every model and baseline (cross-sell skipped, with the
    reason printed, for a log without items)."""
    skip = no_items_reason(tx)
    if skip is not None:
        _log(f"cross-sell: skipped ({skip})")
    return rolling_backtest(
        tx,
        origins,
        als_grid=cfg.als_grid,
        validation_users=cfg.validation_users,
        cross_sell=skip is None,
        run=stages.run,
        item_text=item_text,
        frames=frames,
        trainer=trainer,
    )


def _refit(
    stages: StageLog,
    cfg: TrainConfig,
    tx: pd.DataFrame,
    rolling: RollingResult,
    item_text: dict[str, str],
    frames: FeatureFrames,
    end: pd.Timestamp,
    final_cutoffs: list[pd.Timestamp],
    trainer: BoosterTrainer,
) -> Fitted:
    """Refit the backtested recipes on the ``final_cutoffs`` (labels end at ``end``, the day
    after the log's last row), boosters fitted by ``trainer``. Frees what each step is done
    with: every snapshot but ``end``'s once the training frame is built, the frame once the
    boosters are fitted."""
    final_frame = stages.run(
        f"refit: training frame ({len(final_cutoffs)} cutoffs)",
        lambda: frames.training_frame(final_cutoffs, cfg.horizon),
    )
    frames.keep_only(end)  # from here on only the serving snapshot (at the end) is read
    churn, nextp = stages.run(
        "churn + next purchase: refit on the newest cutoffs",
        functools.partial(fit_propensity, final_frame, cfg.horizon, trainer),
    )
    del final_frame  # fitted: not held through the hybrid's refit
    xs = rolling.xs
    recommender = (
        None
        if xs is None
        else stages.run(
            "cross-sell: refit the hybrid on the whole log",
            lambda: fit_final(tx, end, xs.params, item_text),
        )
    )
    return Fitted(rolling, churn, nextp, recommender, frames.snapshots[end])


def summary_json(result: TrainResult) -> str:
    """Machine-readable run summary (printed with ``--json``)."""
    return json.dumps(
        {
            "run_id": result.run_id,
            "snapshot_run": result.snapshot_run,
            "cutoff": str(result.cutoff.date()),
            "data": {
                "rows_kept": result.fingerprint["data.rows_kept"],
                "customers": result.fingerprint["data.customers"],
            },
            "decisions": [d.to_dict() for d in result.decisions],
            "stages": [m.__dict__ for m in result.stages],
        },
        indent=2,
    )
