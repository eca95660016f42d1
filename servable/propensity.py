"""LightGBM churn and next-purchase models over the point-in-time feature snapshot.

Both models read only :func:`features.build_features` output, so the service can score a
customer from the same snapshot it uses for the policy. Each model carries a fitted BG/NBD
(Fader, Hardie & Lee 2005) whose P(alive) and expected purchases are added as features:
the BG/NBD inputs are derived from the snapshot itself (``x`` = purchase days − 1,
``t_x`` = tenure − recency, ``T`` = tenure, in weeks), so training and serving agree.

* :class:`ChurnModel` — P(no order in the next ``horizon`` days), LightGBM binary.
* :class:`NextPurchaseModel` — P(order within 30 days) (LightGBM binary) and the expected
  days until the next order *given one within the horizon* (LightGBM regression on
  ``log1p(days)``), hence an expected next-order date.

Training uses a **time-ordered, purged** validation fold: the newest training cutoff is
the validation fold and only cutoffs whose label windows end before it train (overlapping
label windows would leak the validation labels through the same customers' rows). The
fold early-stops the booster and fits its calibration slope (never the backtest window);
the booster is then refit on every cutoff for ``refit_rounds`` × the early-stopped rounds,
so the served model has seen the newest behaviour. Every booster is fitted through a
:class:`BoosterTrainer` — :class:`LocalTrainer` (``lightgbm.train``) unless training passes
the Dask engine's (:mod:`training.dask_engine`); a model fits from the frame's columns and
row-wise functions of it (:mod:`servable.training_rows`), so a frame held by a cluster's
workers is never gathered. Prediction runs on one numpy array per
batch. Which snapshot columns a model trains on is the caller's choice (training passes
:func:`features.snapshot.model_columns`: all-time totals are not model inputs); the model
stores the list and reads only those columns when it predicts.

:class:`SnapshotPyfunc` is the MLflow pyfunc registered as ``churn`` and ``next_purchase``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from servable.bgnbd import BGNBD
from servable.training_rows import Array, TrainingRows, as_rows

__all__ = [
    "BG_FEATURES",
    "LOCAL",
    "BoosterTrainer",
    "ChurnModel",
    "GBMParams",
    "LocalTrainer",
    "NextPurchaseModel",
    "SnapshotPyfunc",
    "bgnbd_inputs",
    "fit_bgnbd",
    "fit_platt",
    "load_model",
    "snapshot_output",
]

WEEK = 7.0
_BG_INPUTS = ("purchase_days", "tenure_days", "recency_days")
BG_FEATURES = ["bg_p_alive", "bg_expected_30d", "bg_expected_h"]


@dataclass
class GBMParams:
    """LightGBM settings shared by the classifiers and the regressor (conservative, 2 cores)."""

    learning_rate: float = 0.03
    num_leaves: int = 15
    min_data_in_leaf: int = 80
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 5.0
    max_rounds: int = 2000
    early_stopping: int = 100
    refit_rounds: float = 1.2  # final refit on all cutoffs: early-stopped rounds × this
    num_threads: int = 2
    seed: int = 7

    def lgb_params(self, objective: str) -> dict[str, Any]:
        p = {
            k: v
            for k, v in self.__dict__.items()
            if k not in {"max_rounds", "early_stopping", "refit_rounds"}
        }
        return {
            **p,
            "objective": objective,
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }


def bgnbd_inputs(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD ``(x, t_x, T)`` in weeks from a feature snapshot."""
    x = np.maximum(features["purchase_days"].to_numpy(float) - 1.0, 0.0)
    big_t = features["tenure_days"].to_numpy(float) / WEEK
    t_x = features["tenure_days"].to_numpy(float) - features["recency_days"].to_numpy(float)
    t_x = np.where(x > 0, np.clip(t_x / WEEK, 0.0, big_t), 0.0)
    return x, t_x, big_t


def fit_bgnbd(features: pd.DataFrame) -> BGNBD:
    """Fit BG/NBD on a snapshot's customers (a small penalty keeps it off the bounds)."""
    x, t_x, big_t = bgnbd_inputs(features)
    return BGNBD(penalizer_coef=0.001).fit(x, t_x, big_t)


def _bg_frame(bg: BGNBD, features: pd.DataFrame, horizon: int) -> np.ndarray:
    x, t_x, big_t = bgnbd_inputs(features)
    return np.column_stack(
        [
            bg.p_alive(x, t_x, big_t),
            bg.expected_purchases(30.0 / WEEK, x, t_x, big_t),
            bg.expected_purchases(horizon / WEEK, x, t_x, big_t),
        ]
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_platt(raw: np.ndarray, y: np.ndarray, intercept: bool = True) -> tuple[float, float]:
    """Platt scaling (Platt 1999) on the logit of the raw score: ``σ(a·logit(raw) + b)``.

    Strictly monotone (a > 0 is enforced), so calibration never changes the ranking — an
    isotonic step function would tie customers and cost AUC. ``intercept=False`` fixes
    ``b = 0``: temperature scaling (Guo et al. 2017), which corrects over- or
    under-confidence without moving the base rate.
    """
    from scipy.optimize import minimize

    z = _logit(raw)

    def nll(w: np.ndarray) -> float:
        s = w[0] * z + (w[1] if intercept else 0.0)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    bounds = [(1e-3, 100.0), (-50.0, 50.0) if intercept else (0.0, 0.0)]
    res = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=bounds)
    return float(res.x[0]), float(res.x[1])


class BoosterTrainer(Protocol):
    """Where a booster is fitted: :class:`LocalTrainer` (``lightgbm.train`` in this process,
    the default) or :class:`training.dask_engine.DaskTrainer` (``lightgbm.dask`` on a
    cluster's workers). Both take the same LightGBM parameters and early-stopping rule."""

    def early_stopped(
        self,
        params: dict[str, Any],
        train: tuple[Array, Array],
        valid: tuple[np.ndarray, np.ndarray],
        names: list[str],
        max_rounds: int,
        patience: int,
    ) -> lgb.Booster:
        """A booster trained on ``train`` until the loss of the objective on ``valid`` has
        not improved for ``patience`` rounds; its ``best_iteration`` is the best round.
        ``train`` is numpy, or Dask arrays held by the cluster (the Dask engine's frames)."""
        ...

    def rounds(
        self, params: dict[str, Any], x: Array, y: Array, names: list[str], rounds: int
    ) -> lgb.Booster:
        """A booster trained on ``(x, y)`` for exactly ``rounds`` rounds."""
        ...


class LocalTrainer:
    """``lightgbm.train`` in this process (early stopping: ``lightgbm.early_stopping``)."""

    def early_stopped(
        self,
        params: dict[str, Any],
        train: tuple[np.ndarray, np.ndarray],
        valid: tuple[np.ndarray, np.ndarray],
        names: list[str],
        max_rounds: int,
        patience: int,
    ) -> lgb.Booster:
        dtr = lgb.Dataset(*train, feature_name=names)
        return lgb.train(
            params,
            dtr,
            num_boost_round=max_rounds,
            valid_sets=[lgb.Dataset(*valid, reference=dtr)],
            callbacks=[lgb.early_stopping(patience, verbose=False)],
        )

    def rounds(
        self, params: dict[str, Any], x: np.ndarray, y: np.ndarray, names: list[str], rounds: int
    ) -> lgb.Booster:
        return lgb.train(params, lgb.Dataset(x, y, feature_name=names), num_boost_round=rounds)


LOCAL = LocalTrainer()


@dataclass
class _Classifier:
    """A LightGBM booster plus a calibrator fitted on a later, purged time fold: the slope
    of Platt scaling only. The fold is one season (the newest cutoff's label window), so an
    intercept fitted on it would carry that season's base rate into every other window —
    on the rolling backtest it doubled the calibration error (docs/results.md)."""

    booster: lgb.Booster
    platt: tuple[float, float]
    best_iteration: int = 0

    @classmethod
    def fit(
        cls,
        x: Array,
        y: Array,
        tr: Array,
        va: Array,
        names: list[str],
        params: GBMParams,
        trainer: BoosterTrainer = LOCAL,
    ) -> _Classifier:
        first, final, (x_va, y_va) = _train(x, y, tr, va, names, params, "binary", trainer)
        platt = fit_platt(first.predict(x_va), y_va, intercept=False)
        return cls(final, platt, first.best_iteration)

    def predict(self, x: np.ndarray) -> np.ndarray:
        a, b = self.platt
        return 1.0 / (1.0 + np.exp(-(a * _logit(self.booster.predict(x)) + b)))

    def state(self) -> dict[str, Any]:
        return {
            "model": self.booster.model_to_string(),
            "best_iteration": self.best_iteration,
            "platt": list(self.platt),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> _Classifier:
        return cls(lgb.Booster(model_str=s["model"]), tuple(s["platt"]), int(s["best_iteration"]))


def _train(
    x: Array,
    y: Array,
    tr: Array,
    va: Array,
    names: list[str],
    params: GBMParams,
    objective: str,
    trainer: BoosterTrainer = LOCAL,
    rows: Array | None = None,
) -> tuple[lgb.Booster, lgb.Booster, tuple[np.ndarray, np.ndarray]]:
    """Early-stop on the validation fold, then refit on every row for the same number of
    rounds scaled by ``params.refit_rounds`` (the newest cutoffs matter most when serving).
    ``rows``: the rows that take part (default all; each fold is its part of them).

    Returns ``(validation_booster, final_booster, validation_fold)``; the first booster
    calibrates on the fold (numpy arrays ``(x, y)``).
    """
    lgb_params = params.lgb_params(objective)
    if rows is not None:
        tr, va = tr & rows, va & rows
    valid = np.asarray(x[va]), np.asarray(y[va])  # computed here if they are Dask arrays
    first = trainer.early_stopped(
        lgb_params, (x[tr], y[tr]), valid, names, params.max_rounds, params.early_stopping
    )
    rounds = max(1, round(first.best_iteration * params.refit_rounds))
    x, y = (x, y) if rows is None else (x[rows], y[rows])
    return first, trainer.rounds(lgb_params, x, y, names, rounds), valid


def _split_by_time(frame: pd.DataFrame | TrainingRows, horizon: int) -> tuple[Array, Array]:
    """Validation fold = the newest cutoff; training fold = cutoffs whose label windows end
    on or before it (purged: an overlapping label window would leak the validation labels
    of the same customers through near-identical rows)."""
    rows = as_rows(frame)
    newest = rows.newest()
    cut = rows.column("cutoff")
    va = cut == newest.to_datetime64()
    tr = cut + np.timedelta64(horizon, "D") <= newest.to_datetime64()
    if not tr.any():
        raise ValueError(
            f"no training cutoff ends its {horizon}-day label window before the validation "
            f"cutoff {newest.date()}: give more cutoffs or more history"
        )
    return tr, va


@dataclass
class _SnapshotModel:
    """Shared plumbing: feature matrix with BG/NBD columns, persistence, importances."""

    horizon: int = 90
    params: GBMParams = field(default_factory=GBMParams)
    feature_names: list[str] = field(default_factory=list)
    bgnbd: BGNBD | None = None
    info: dict[str, Any] = field(default_factory=dict)

    kind = "base"

    @property
    def input_columns(self) -> list[str]:
        """Snapshot columns the model reads (its features plus the BG/NBD inputs)."""
        base = [c for c in self.feature_names if c not in BG_FEATURES]
        return base + [c for c in _BG_INPUTS if c not in base]

    def matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The model's input matrix for a snapshot (base columns + BG/NBD columns)."""
        if self.bgnbd is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        base = [c for c in self.feature_names if c not in BG_FEATURES]
        missing = [c for c in self.input_columns if c not in features.columns]
        if missing:
            raise ValueError(f"feature snapshot lacks column(s) {missing}")
        x = features[base].to_numpy(dtype=np.float64)
        return np.hstack([x, _bg_frame(self.bgnbd, features, self.horizon)])

    def _fit_classifier(
        self,
        rows: TrainingRows,
        columns: list[str],
        label: str,
        bgnbd: BGNBD | None,
        trainer: BoosterTrainer,
    ) -> tuple[Array, Array, Array]:
        """Fit ``self.clf`` on ``label``; returns the matrix and the train/validation masks."""
        tr, va = _split_by_time(rows, self.horizon)
        newest = rows.newest()
        self.feature_names = [c for c in columns if c not in BG_FEATURES] + BG_FEATURES
        # BG/NBD is fitted on the newest cutoff; older cutoffs' BG/NBD features come from
        # the same population parameters
        self.bgnbd = bgnbd or fit_bgnbd(rows.at(newest))
        x = rows.rowwise(self.matrix, len(self.feature_names))
        y = rows.column(label).astype(float)
        self.clf = _Classifier.fit(x, y, tr, va, self.feature_names, self.params, trainer)
        self.info = {
            "rows": len(rows),
            "train_rows": int(tr.sum()),
            "calibration_rows": int(va.sum()),
            "calibration_cutoff": str(newest.date()),
            "best_iteration": int(self.clf.best_iteration),
        }
        return x, tr, va

    def _boosters(self) -> dict[str, lgb.Booster]:
        raise NotImplementedError

    def importance(self) -> pd.DataFrame:
        """Gain importance per booster, one column each."""
        out = {
            name: pd.Series(b.feature_importance("gain"), index=b.feature_name())
            for name, b in self._boosters().items()
        }
        return pd.DataFrame(out).fillna(0.0)

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (boosters as LightGBM text models)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "kind": self.kind,
            "horizon": self.horizon,
            "params": self.params.__dict__,
            "feature_names": self.feature_names,
            "bgnbd": self.bgnbd.to_dict(),
            "info": self.info,
            **self._state(),
        }
        (path / "model.json").write_text(json.dumps(state))
        return path


@dataclass
class ChurnModel(_SnapshotModel):
    """P(no order in the next ``horizon`` days), calibrated."""

    clf: _Classifier | None = None
    kind = "churn"

    def fit(
        self,
        frame: pd.DataFrame | TrainingRows,
        columns: list[str],
        bgnbd: BGNBD | None = None,
        trainer: BoosterTrainer = LOCAL,
    ) -> ChurnModel:
        """Fit on a stacked training frame (features + ``churn`` label + ``cutoff``), using
        the feature ``columns`` (e.g. ``features.model_columns(frame)``); ``trainer``: where
        the boosters are fitted."""
        self._fit_classifier(as_rows(frame), list(columns), "churn", bgnbd, trainer)
        return self

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per snapshot row."""
        return self.clf.predict(self.matrix(features))

    def _boosters(self) -> dict[str, lgb.Booster]:
        return {"churn": self.clf.booster}

    def _state(self) -> dict[str, Any]:
        return {"clf": self.clf.state()}


@dataclass
class NextPurchaseModel(_SnapshotModel):
    """P(order within 30 days) and expected days to the next order (given one in horizon)."""

    clf: _Classifier | None = None
    days: lgb.Booster | None = None
    kind = "next_purchase"

    def fit(
        self,
        frame: pd.DataFrame | TrainingRows,
        columns: list[str],
        bgnbd: BGNBD | None = None,
        trainer: BoosterTrainer = LOCAL,
    ) -> NextPurchaseModel:
        """Fit on a stacked frame with ``buy_30d``, ``days_to_next``, ``next_observed``, using
        the feature ``columns``; ``trainer``: where the boosters are fitted."""
        rows = as_rows(frame)
        x, tr, va = self._fit_classifier(rows, list(columns), "buy_30d", bgnbd, trainer)
        # regression only on rows whose next order fell inside the horizon (not censored)
        d = rows.column("days_to_next").astype(float)
        seen = rows.column("next_observed").astype(bool) & (d < self.horizon)
        first, self.days, _ = _train(
            x,
            np.log1p(d),
            tr,
            va,
            self.feature_names,
            self.params,
            "regression_l1",
            trainer,
            rows=seen,
        )
        self.info.update(regression_rows=int(seen.sum()), best_iteration_days=first.best_iteration)
        return self

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """``p_buy_30d`` and ``expected_days`` (from the snapshot's cutoff) per row."""
        x = self.matrix(features)
        days = np.clip(np.expm1(self.days.predict(x)), 0.0, float(self.horizon))
        return pd.DataFrame(
            {"p_buy_30d": self.clf.predict(x), "expected_days": days}, index=features.index
        )

    def _boosters(self) -> dict[str, lgb.Booster]:
        return {"p_buy_30d": self.clf.booster, "days": self.days}

    def _state(self) -> dict[str, Any]:
        return {"clf": self.clf.state(), "days": self.days.model_to_string()}


def load_model(path: str | Path) -> ChurnModel | NextPurchaseModel:
    """Load a model written by ``save`` (the kind is in the file)."""
    state = json.loads((Path(path) / "model.json").read_text())
    common = {
        "horizon": state["horizon"],
        "params": GBMParams(**state["params"]),
        "feature_names": state["feature_names"],
        "bgnbd": BGNBD.from_dict(state["bgnbd"]),
        "info": state["info"],
    }
    if state["kind"] == "churn":
        return ChurnModel(**common, clf=_Classifier.from_state(state["clf"]))
    if state["kind"] == "next_purchase":
        return NextPurchaseModel(
            **common,
            clf=_Classifier.from_state(state["clf"]),
            days=lgb.Booster(model_str=state["days"]),
        )
    raise ValueError(f"{path}: unknown model kind {state['kind']!r}")


def snapshot_output(model: ChurnModel | NextPurchaseModel, features: pd.DataFrame) -> pd.DataFrame:
    """What the pyfunc returns: ``p_churn``, or ``p_buy_30d`` and ``expected_days``, one row
    per input row (a fresh 0..n-1 index)."""
    out = model.predict(features)
    if isinstance(out, pd.DataFrame):
        return out.reset_index(drop=True)
    return pd.DataFrame({"p_churn": out})


class SnapshotPyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc around a churn / next-purchase model: feature snapshot in, scores out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(context.artifacts["model"])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return snapshot_output(self.model, model_input)
