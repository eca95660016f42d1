"""Offer uplift: which e-mail (or none) moves a customer, learned from a randomised campaign.

**Learners** (LightGBM underneath, one small interface — ``fit(X, treatment, y)``,
``predict_uplift(X)``, ``save(path)``, :func:`load_uplift`):

* :class:`TwoModelUplift` — the T-learner: one model per group, uplift = mu1(x) - mu0(x).
* :class:`XLearnerUplift` — Künzel, Sekhon, Bickel & Yu (2019), "Metalearners for estimating
  heterogeneous treatment effects using machine learning", PNAS 116(10). Stage 1 is the
  T-learner; stage 2 regresses the imputed effects D1 = y - mu0(x) (treated) and
  D0 = mu1(x) - y (control) on x, and tau(x) = g tau0(x) + (1 - g) tau1(x) with g the
  propensity — here the known randomisation share P(treated), not an estimate.
* :class:`ResponseModel` — the plain baseline: a model of P(y | treated, x) on the treated
  rows only, ranking customers by response rather than by uplift.
* :class:`RandomTargeting` — random scores (the Qini/AUUC zero point).

Binary outcomes use LightGBM's ``binary`` objective (the difference of probabilities is the
uplift); others (spend) the L2 ``regression`` objective. Categorical columns (category,
string or object dtype) are LightGBM categoricals with their levels stored in the model.

**Metrics** (written from the definitions; numbers match scikit-uplift 0.5.1 for binary
outcomes). Customers are ranked by descending predicted uplift (ties as scikit-uplift orders
them: a reversed stable ascending sort); curves have one vertex per distinct score, so they
do not depend on the order inside a tie. With N_t(k), N_c(k) treated / control customers and
Y_t(k), Y_c(k) their summed outcomes among the top k:

* Qini curve (Radcliffe 2007): Q(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k) (0 while N_c = 0).
* Qini coefficient = :func:`qini_coefficient`, scikit-uplift's ``qini_auc_score``: (area under
  the Qini curve - area under the random line from (0, 0) to (N, Q(N))) / (the same for the
  perfect curve). Random targeting scores 0 in expectation, the perfect ordering 1. The
  perfect curve, by default (``negative_effect=True``), ranks treated responders first and
  control responders last (score y t - y (1 - t)), i.e. allows for customers the e-mail puts
  off (Radcliffe's Q); ``negative_effect=False`` is Radcliffe's zero-downlift q0.
* AUUC = :func:`auuc`, scikit-uplift's ``uplift_auc_score``: the same normalisation on the
  uplift curve U(k) = (Y_t(k)/N_t(k) - Y_c(k)/N_c(k)) k, with scikit-uplift's perfect uplift
  curve. Random 0, perfect 1.
* uplift@k = :func:`uplift_at_k`: mean outcome of the treated minus that of the control among
  the top ``int(k N)`` customers by predicted uplift (strategy ``"overall"``, used in the
  experiment; ``"by_group"`` takes the top ``int(k N_t)`` treated and ``int(k N_c)`` control
  customers separately).

For a non-binary outcome (spend; scikit-uplift refuses those) the curves and uplift@k are
unchanged and the perfect orderings are extended: the Qini one is still y t - y (1 - t); the
uplift-curve one keeps scikit-uplift's classes with responder = (y > 0) and orders treated
responders by descending, control responders by ascending outcome. Random is still 0; the
perfect orderings score 1, but for spend they are not proven optimal, so values above 1 are
possible in principle.

**Hillstrom experiment** (:func:`run_experiment`, ``python -m training.uplift``): each
e-mail arm against the no-e-mail arm, outcomes visit (primary), conversion and spend, on
stratified (arm x visit x conversion) 50/50 splits of all 64,000 customers; split 0 (seed
``seed``) is the fixed split, the table reports mean and sample standard deviation over
``n_splits`` seeds. The chosen learner is then refitted on every row for each arm (visit)
and registered as one pyfunc ``offer_uplift`` (pre-treatment features in, one
``uplift_<arm>`` column per e-mail arm out) behind the champion gate of
:mod:`training.registry` (gate metric: mean Qini, men's e-mail, visit; baselines: random = 0
and the response model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema
from numpy.typing import ArrayLike

import mlflow
from core.env import HILLSTROM_DATA, configure_environment, default_tracking_uri
from features.loaders import file_sha256, hillstrom_arm_summary, load_hillstrom
from training.metrics import binary_flags, finite_values
from training.registry import GateDecision, champion_gate, metric_tag, use_store, write_json

__all__ = [
    "ARMS",
    "GATE_METRIC",
    "HILLSTROM_FEATURES",
    "FeatureEncoder",
    "LEARNERS",
    "MODEL_NAME",
    "OUTCOMES",
    "OfferUplift",
    "OfferUpliftPyfunc",
    "RandomTargeting",
    "ResponseModel",
    "TwoModelUplift",
    "UpliftExperiment",
    "UpliftModel",
    "UpliftParams",
    "XLearnerUplift",
    "auuc",
    "decile_uplift",
    "fit_offer_uplift",
    "load_uplift",
    "log_offer_uplift",
    "main",
    "make_learner",
    "perfect_qini_curve",
    "perfect_uplift_curve",
    "qini_coefficient",
    "qini_curve",
    "qini_plot",
    "run_experiment",
    "stratified_halves",
    "summary_markdown",
    "train_and_register",
    "uplift_at_k",
    "uplift_curve",
    "uplift_report",
]

MODEL_NAME = "offer_uplift"
HILLSTROM_FEATURES = ["recency", "history", "mens", "womens", "newbie", "zip_code", "channel"]
ARMS = ("mens_email", "womens_email")
CONTROL = "control"
OUTCOMES = ("visit", "conversion", "spend")
MODELS = ("x_learner", "two_model", "response", "random")
METRICS = ("qini", "auuc", "uplift_at_30")
# three equal randomised arms: an e-mail arm is half of (that arm + control)
HILLSTROM_PROPENSITY = 0.5
GATE_ARM, GATE_OUTCOME = "mens_email", "visit"
GATE_METRIC = f"qini.{GATE_ARM}.{GATE_OUTCOME}"
TOP_SHARE = 0.3


class _QuietCloudPickle(logging.Filter):
    """Drop MLflow's per-model CloudPickle notice (the pyfunc is this module's own code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


logging.getLogger("mlflow.pyfunc").addFilter(_QuietCloudPickle())

# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _inputs(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    u = finite_values("uplift", uplift, t.size, against="treatment")
    if t.sum() == 0 or t.sum() == t.size:
        raise ValueError("uplift metrics need both treated and control rows")
    return yv, u, t


def _is_binary(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)))


def _order(uplift: np.ndarray) -> np.ndarray:
    """Descending by uplift, ties as scikit-uplift (reversed stable ascending sort)."""
    return np.argsort(uplift, kind="mergesort")[::-1]


def _cumulative(y: np.ndarray, u: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Counts and outcome sums of both groups in the top k, at the end of each tie block."""
    order = _order(u)
    y, u, t = y[order], u[order], t[order]
    ends = np.r_[np.flatnonzero(np.diff(u) != 0), u.size - 1]
    n_all = ends + 1.0
    n_t = np.cumsum(t)[ends]
    y_t = np.cumsum(y * t)[ends]
    y_c = np.cumsum(y * (1.0 - t))[ends]
    return n_all, n_t, n_all - n_t, y_t, y_c


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def qini_curve(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve (Radcliffe 2007): (customers targeted, Y_t - Y_c N_t / N_c), from (0, 0)."""
    yv, u, t = _inputs(y, uplift, treatment)
    n_all, n_t, n_c, y_t, y_c = _cumulative(yv, u, t)
    return np.r_[0.0, n_all], np.r_[0.0, y_t - y_c * _ratio(n_t, n_c)]


def uplift_curve(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve: (customers targeted k, (Y_t/N_t - Y_c/N_c) k), from (0, 0)."""
    yv, u, t = _inputs(y, uplift, treatment)
    n_all, n_t, n_c, y_t, y_c = _cumulative(yv, u, t)
    return np.r_[0.0, n_all], np.r_[0.0, (_ratio(y_t, n_t) - _ratio(y_c, n_c)) * n_all]


def _oracle(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Treated responders first (largest outcome first), control responders last."""
    return y * t - y * (1.0 - t)


def perfect_qini_curve(
    y: ArrayLike, treatment: ArrayLike, negative_effect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The optimum Qini curve (scikit-uplift's ``perfect_qini_curve``).

    ``negative_effect=True``: the Qini curve of the ordering y t - y (1 - t). ``False``
    (binary outcomes only): the zero-downlift optimum, straight up to the total incremental
    responders R = Y_t - N_t Y_c / N_c at k = R, then flat (undefined unless R > 0).
    """
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    if negative_effect:
        return qini_curve(yv, _oracle(yv, t), t)
    if not _is_binary(yv):
        raise ValueError("negative_effect=False needs a binary outcome y")
    n_t, n_c = t.sum(), t.size - t.sum()
    if n_t == 0 or n_c == 0:
        raise ValueError("uplift metrics need both treated and control rows")
    r = yv[t == 1].sum() - n_t * yv[t == 0].sum() / n_c
    if r <= 0:
        raise ValueError(
            f"the zero-downlift optimum needs a positive total effect (incremental {r:.4g})"
        )
    return np.array([0.0, r, float(t.size)]), np.array([0.0, r, r])


def perfect_uplift_curve(y: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The optimum uplift curve (scikit-uplift's ``perfect_uplift_curve`` for binary y).

    Customers are ranked by the class score 2 [r == t] + s, r = [y > 0] the responders,
    s = r if control responders outnumber treated non-responders, else s = t: treated
    responders, then control non-responders, then the rest. For binary y that is
    scikit-uplift's ordering; for a non-binary y the treated responders are further ordered by
    descending and the control responders by ascending outcome.
    """
    t = binary_flags("treatment", treatment)
    yv = finite_values("y", y, t.size, against="treatment")
    r = (yv > 0).astype(float)
    control_responders = np.sum((r == 1) & (t == 0))
    treated_nonresponders = np.sum((r == 0) & (t == 1))
    summand = r if control_responders > treated_nonresponders else t
    scale = float(np.max(np.abs(yv))) or 1.0
    # within-class tie-break in (-1/4, 1/4): constant inside each class when y is binary
    return uplift_curve(yv, 2.0 * (r == t) + summand + 0.25 * _oracle(yv, t) / scale, t)


def _normalised_area(
    actual: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray], name: str
) -> float:
    xp, yp = perfect
    baseline = 0.5 * xp[-1] * yp[-1]  # the random line from (0, 0) to the curve's end
    best = float(np.trapezoid(yp, xp)) - baseline
    if best == 0:
        raise ValueError(f"{name} is undefined: the perfect curve has no area above random")
    return (float(np.trapezoid(actual[1], actual[0])) - baseline) / best


def qini_coefficient(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, negative_effect: bool = True
) -> float:
    """Normalised area between the Qini curve and the random line: random 0, perfect 1.

    scikit-uplift's ``qini_auc_score`` (same ``negative_effect`` flag, default ``True``).
    """
    yv, u, t = _inputs(y, uplift, treatment)
    return _normalised_area(
        qini_curve(yv, u, t), perfect_qini_curve(yv, t, negative_effect), "the Qini coefficient"
    )


def auuc(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Normalised area under the uplift curve (scikit-uplift's ``uplift_auc_score``)."""
    yv, u, t = _inputs(y, uplift, treatment)
    return _normalised_area(uplift_curve(yv, u, t), perfect_uplift_curve(yv, t), "AUUC")


def uplift_at_k(
    y: ArrayLike,
    uplift: ArrayLike,
    treatment: ArrayLike,
    k: float | int = TOP_SHARE,
    strategy: str = "overall",
) -> float:
    """Treated mean outcome minus control mean outcome among the top customers by uplift.

    scikit-uplift's ``uplift_at_k``. ``k`` is a share in (0, 1) or a count. ``"overall"``:
    the top ``int(k N)`` of all customers (a count: the top ``k``), each group's mean taken
    inside it. ``"by_group"``: the top ``int(k N_t)`` treated and ``int(k N_c)`` control
    customers (a count: ``k`` of each). Raises if a group has nobody in its top.
    """
    yv, u, t = _inputs(y, uplift, treatment)
    n = t.size
    is_share = isinstance(k, float)
    if is_share and not 0 < k < 1:
        raise ValueError(f"k as a share must be in (0, 1), got {k}")
    if not is_share and not (isinstance(k, int | np.integer) and 0 < k < n):
        raise ValueError(f"k as a count must be an integer in [1, {n - 1}], got {k!r}")
    order = _order(u)
    ys, ts = yv[order], t[order]
    if strategy == "overall":
        top = int(n * k) if is_share else int(k)
        yt, tt = ys[:top], ts[:top]
        treated, control = yt[tt == 1], yt[tt == 0]
    elif strategy == "by_group":
        n_t, n_c = int(t.sum()), int(n - t.sum())
        k_t, k_c = (int(n_t * k), int(n_c * k)) if is_share else (int(k), int(k))
        if k_t > n_t or k_c > n_c:
            raise ValueError(f"k={k} exceeds a group's size ({n_t} treated, {n_c} control)")
        treated, control = ys[ts == 1][:k_t], ys[ts == 0][:k_c]
    else:
        raise ValueError(f"strategy must be 'overall' or 'by_group', got {strategy!r}")
    if treated.size == 0 or control.size == 0:
        group = "treated" if treated.size == 0 else "control"
        raise ValueError(f"uplift@k is undefined: no {group} customer in the top (k={k})")
    return float(treated.mean() - control.mean())


def uplift_report(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> dict[str, float]:
    """Qini coefficient, AUUC and uplift@30% (strategy ``overall``) at once."""
    return {
        "qini": qini_coefficient(y, uplift, treatment),
        "auuc": auuc(y, uplift, treatment),
        "uplift_at_30": uplift_at_k(y, uplift, treatment, TOP_SHARE, "overall"),
    }


# ---------------------------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------------------------


@dataclass
class UpliftParams:
    """Small, heavily regularised LightGBM settings.

    Chosen on inner 50/50 splits of the fixed split's *training* half (3 seeds, both
    directions; mean visit Qini of the X-learner over both arms): 50 rounds x 4 leaves with
    at least 2,000 rows per leaf scored 0.047, against 0.020 for 200 rounds x 15 leaves with
    200 rows per leaf, which fits noise in the difference of two response models. One
    thread: the models are tiny, and OpenMP threads on a busy 2-core machine only wait.
    """

    num_rounds: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 4
    min_data_in_leaf: int = 2000
    feature_fraction: float = 1.0
    lambda_l2: float = 10.0
    max_bin: int = 63
    num_threads: int = 1
    seed: int = 7

    def lgb_params(self, objective: str) -> dict[str, Any]:
        p = {k: v for k, v in asdict(self).items() if k != "num_rounds"}
        return {
            **p,
            "objective": objective,
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }


@dataclass
class FeatureEncoder:
    """Pre-treatment columns -> a float matrix; categoricals as codes of their fitted levels.

    A level not seen in fitting becomes missing (LightGBM's missing branch); extra columns in
    the input are ignored, a missing one is an error.
    """

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, x: pd.DataFrame) -> FeatureEncoder:
        cats: dict[str, list[str]] = {}
        for col in x.columns:
            s = x[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                cats[col] = sorted(str(v) for v in s.cat.categories)
            elif not pd.api.types.is_numeric_dtype(s):
                cats[col] = sorted({str(v) for v in s.dropna()})
        return cls([str(c) for c in x.columns], cats)

    @property
    def categorical(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.categories]

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in x.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s) {missing}")
        out = np.empty((len(x), len(self.columns)), dtype=float)
        for j, col in enumerate(self.columns):
            s = x[col]
            if col in self.categories:
                codes = _level_codes(s, self.categories[col])
                out[:, j] = np.where(codes >= 0, codes, np.nan)
            else:
                try:
                    out[:, j] = pd.to_numeric(s).to_numpy(dtype=float, na_value=np.nan)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"feature column {col!r} is not numeric: {err}") from err
        return out


def _level_codes(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Position of each value's text in ``levels``; -1 for missing or unseen values."""
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    try:
        text = cat.cat.rename_categories(str)
    except ValueError:  # two categories with the same text (1 and "1"): go value by value
        text = values.astype(object).where(values.notna()).map(str, na_action="ignore")
    return np.asarray(pd.Categorical(text, categories=levels).codes)


def _fit_inputs(
    x: pd.DataFrame, treatment: ArrayLike, y: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(x, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame, got {type(x).__name__}")
    t = binary_flags("treatment", treatment)
    if t.size != len(x):
        raise ValueError(f"length mismatch: X has {len(x)} rows, treatment has {t.size}")
    yv = finite_values("y", y, t.size, against="treatment")
    if t.sum() == 0 or t.sum() == t.size:
        raise ValueError("fitting an uplift model needs both treated and control rows")
    return t, yv


class UpliftModel:
    """Base class: ``fit(X, treatment, y)``, ``predict_uplift(X)``, ``save`` / ``load``.

    ``X`` is a DataFrame of pre-treatment features, ``treatment`` 0/1 (1 = received the
    offer), ``y`` the outcome (binary: LightGBM ``binary``; otherwise ``regression``).
    Subclasses set ``kind`` and implement ``_fit(x, t, y)`` and ``_predict(x)`` on the encoded
    matrix, keeping their LightGBM boosters in ``self.boosters``.
    """

    kind: ClassVar[str] = ""
    _kinds: ClassVar[dict[str, type[UpliftModel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        UpliftModel._kinds[cls.kind] = cls

    def __init__(self, params: UpliftParams | None = None) -> None:
        self.params = params or UpliftParams()
        self.encoder: FeatureEncoder | None = None
        self.objective: str | None = None
        self.boosters: dict[str, lgb.Booster] = {}
        self.info: dict[str, Any] = {}

    # -- public API -----------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, treatment: ArrayLike, y: ArrayLike) -> UpliftModel:
        """Fit on a randomised campaign table; returns ``self``."""
        t, yv = _fit_inputs(X, treatment, y)
        self.encoder = FeatureEncoder.fit(X)
        self.objective = "binary" if _is_binary(yv) else "regression"
        self.info = {"rows": int(t.size), "treated": int(t.sum()), "outcome_mean": yv.mean()}
        self._fit(self.encoder.transform(X), t, yv)
        return self

    def predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted effect of the treatment on the outcome per row (a score for baselines)."""
        if self.encoder is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return np.asarray(self._predict(self.encoder.transform(X)), dtype=float)

    @property
    def input_columns(self) -> list[str]:
        if self.encoder is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return list(self.encoder.columns)

    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (boosters as LightGBM text models)."""
        if self.encoder is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "kind": self.kind,
            "params": asdict(self.params),
            "encoder": asdict(self.encoder),
            "objective": self.objective,
            "info": self.info,
            "extra": self._extra(),
            "boosters": {k: b.model_to_string() for k, b in self.boosters.items()},
        }
        (path / "model.json").write_text(json.dumps(state, default=float))
        return path

    @classmethod
    def load(cls, path: str | Path) -> UpliftModel:
        """Read a model written by :meth:`save` (the kind is in the file)."""
        return load_uplift(path)

    # -- for subclasses -------------------------------------------------------------------

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _extra(self) -> dict[str, Any]:
        return {}

    def _restore(self, extra: dict[str, Any]) -> None:
        """Set what :meth:`_extra` saved."""

    def _train(self, x: np.ndarray, y: np.ndarray, objective: str | None = None) -> lgb.Booster:
        data = lgb.Dataset(
            x,
            y,
            feature_name=self.encoder.columns,
            categorical_feature=self.encoder.categorical,
            free_raw_data=True,
        )
        return lgb.train(
            self.params.lgb_params(objective or self.objective),
            data,
            num_boost_round=self.params.num_rounds,
        )


def load_uplift(path: str | Path) -> UpliftModel:
    """Load any :class:`UpliftModel` written by ``save``."""
    state = json.loads((Path(path) / "model.json").read_text())
    kind = state["kind"]
    if kind not in UpliftModel._kinds:
        raise ValueError(f"{path}: unknown uplift model kind {kind!r}")
    model = UpliftModel._kinds[kind].__new__(UpliftModel._kinds[kind])
    UpliftModel.__init__(model, UpliftParams(**state["params"]))
    model.encoder = FeatureEncoder(**state["encoder"])
    model.objective = state["objective"]
    model.info = state["info"]
    model.boosters = {k: lgb.Booster(model_str=s) for k, s in state["boosters"].items()}
    model._restore(state["extra"])
    return model


class TwoModelUplift(UpliftModel):
    """T-learner: mu1 on the treated, mu0 on the control rows; uplift = mu1(x) - mu0(x)."""

    kind = "two_model"

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        self.boosters = {
            "mu_treated": self._train(x[t == 1], y[t == 1]),
            "mu_control": self._train(x[t == 0], y[t == 0]),
        }

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.boosters["mu_treated"].predict(x) - self.boosters["mu_control"].predict(x)


class XLearnerUplift(UpliftModel):
    """X-learner (Künzel et al. 2019) with a known propensity.

    ``propensity`` = P(treated) by design of the randomisation; ``None`` takes the treated
    share of the fitting rows (the same thing, measured, for a randomised table).
    """

    kind = "x_learner"

    def __init__(self, params: UpliftParams | None = None, propensity: float | None = None):
        super().__init__(params)
        if propensity is not None and not 0 < propensity < 1:
            raise ValueError(f"propensity must be in (0, 1), got {propensity}")
        self.propensity = propensity

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        if self.propensity is None:
            self.propensity = float(t.mean())
        treated, control = t == 1, t == 0
        mu1 = self._train(x[treated], y[treated])
        mu0 = self._train(x[control], y[control])
        d1 = y[treated] - mu0.predict(x[treated])  # imputed effect on the treated
        d0 = mu1.predict(x[control]) - y[control]  # imputed effect on the control
        self.boosters = {
            "mu_treated": mu1,
            "mu_control": mu0,
            "tau_treated": self._train(x[treated], d1, "regression"),
            "tau_control": self._train(x[control], d0, "regression"),
        }

    def _predict(self, x: np.ndarray) -> np.ndarray:
        g = self.propensity
        tau0 = self.boosters["tau_control"].predict(x)
        tau1 = self.boosters["tau_treated"].predict(x)
        return g * tau0 + (1.0 - g) * tau1

    def _extra(self) -> dict[str, Any]:
        return {"propensity": self.propensity}

    def _restore(self, extra: dict[str, Any]) -> None:
        self.propensity = extra["propensity"]


class ResponseModel(UpliftModel):
    """Baseline: P(y | treated, x) (or E[y | treated, x]) fitted on the treated rows only.

    ``predict_uplift`` returns that response score — what a campaign targeted on "who
    responds" would rank by, blind to who would have responded anyway.
    """

    kind = "response"

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        self.boosters = {"mu_treated": self._train(x[t == 1], y[t == 1])}

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.boosters["mu_treated"].predict(x)


class RandomTargeting(UpliftModel):
    """Baseline: uniform random scores (seeded; the same rows in the same order score alike)."""

    kind = "random"

    def __init__(self, params: UpliftParams | None = None, seed: int = 0) -> None:
        super().__init__(params)
        self.seed = seed

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> None:
        self.boosters = {}

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(x))

    def _extra(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _restore(self, extra: dict[str, Any]) -> None:
        self.seed = int(extra["seed"])


LEARNERS: dict[str, type[UpliftModel]] = {
    "x_learner": XLearnerUplift,
    "two_model": TwoModelUplift,
    "response": ResponseModel,
    "random": RandomTargeting,
}


def make_learner(name: str, params: UpliftParams, seed: int = 0) -> UpliftModel:
    """A fresh learner by table name (the X-learner with the Hillstrom design propensity)."""
    if name == "x_learner":
        return XLearnerUplift(params, propensity=HILLSTROM_PROPENSITY)
    if name == "random":
        return RandomTargeting(params, seed=seed)
    if name in LEARNERS:
        return LEARNERS[name](params)
    raise ValueError(f"unknown learner {name!r} (expected one of {list(LEARNERS)})")


# ---------------------------------------------------------------------------------------------
# Offer model: one uplift model per offer arm, served as one pyfunc
# ---------------------------------------------------------------------------------------------


class OfferUplift:
    """Per-arm uplift models against the same control: features in, ``uplift_<arm>`` out."""

    def __init__(self, models: dict[str, UpliftModel], outcome: str = "visit") -> None:
        if not models:
            raise ValueError("an offer model needs at least one arm")
        self.models = dict(models)
        self.outcome = outcome

    @property
    def arms(self) -> list[str]:
        return list(self.models)

    @property
    def input_columns(self) -> list[str]:
        cols: list[str] = []
        for m in self.models.values():
            cols += [c for c in m.input_columns if c not in cols]
        return cols

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {f"uplift_{arm}": m.predict_uplift(features) for arm, m in self.models.items()},
            index=features.index,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for arm, m in self.models.items():
            m.save(path / arm)
        (path / "offer.json").write_text(json.dumps({"arms": self.arms, "outcome": self.outcome}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> OfferUplift:
        path = Path(path)
        meta = json.loads((path / "offer.json").read_text())
        return cls({arm: load_uplift(path / arm) for arm in meta["arms"]}, meta["outcome"])


def fit_offer_uplift(
    df: pd.DataFrame,
    learner: str = "x_learner",
    arms: tuple[str, ...] = ARMS,
    outcome: str = "visit",
    params: UpliftParams | None = None,
) -> OfferUplift:
    """Fit ``learner`` for each arm against control on every row of a campaign table."""
    params = params or UpliftParams()
    models = {}
    for arm in arms:
        sub = df[df["treatment"].isin([arm, CONTROL])]
        t = (sub["treatment"] == arm).to_numpy()
        models[arm] = make_learner(learner, params).fit(
            sub[HILLSTROM_FEATURES], t, sub[outcome].to_numpy()
        )
    return OfferUplift(models, outcome)


class OfferUpliftPyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc around :class:`OfferUplift`: pre-treatment features in, ``uplift_<arm>`` out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = OfferUplift.load(context.artifacts["model"])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.model.predict(model_input).reset_index(drop=True)


def _example(features: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Five rows with categoricals as plain strings (what a caller sends)."""
    ex = features[columns].head(5).reset_index(drop=True).copy()
    for col in ex.columns:
        if not pd.api.types.is_numeric_dtype(ex[col]):
            ex[col] = ex[col].astype(str).astype(object)
    return ex


def _signature(offer: OfferUplift) -> ModelSignature:
    """Outputs only: the input is not enforced by MLflow (it would refuse int64 for a double
    column and category dtype for a string one); :class:`FeatureEncoder` checks it instead
    (missing columns, non-numeric values), and the input example documents it."""
    return ModelSignature(
        outputs=Schema([ColSpec(DataType.double, f"uplift_{arm}") for arm in offer.arms])
    )


def log_offer_uplift(
    offer: OfferUplift,
    example: pd.DataFrame,
    name: str = MODEL_NAME,
    registered_model_name: str | None = MODEL_NAME,
    trained_on: str = "hillstrom",
) -> mlflow.models.model.ModelInfo:
    """Log (and register) ``offer`` as a pyfunc inside the active run (one is started if
    none is active). Returns MLflow's ``ModelInfo``. The metadata records the arms, the
    feature columns and ``trained_on``, so the service can tell whose offers it covers."""
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"lightgbm=={lgb.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]
    metadata = {
        "arms": ",".join(offer.arms),
        "outcome": offer.outcome,
        "learners": ",".join(m.kind for m in offer.models.values()),
        "output": ",".join(f"uplift_{a}" for a in offer.arms),
        "input_columns": ",".join(offer.input_columns),
        "trained_on": trained_on,
    }
    active = mlflow.active_run() is not None
    run = mlflow.start_run(run_name=name) if not active else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = offer.save(Path(tmp) / "model")
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=OfferUpliftPyfunc(),
                artifacts={"model": str(path)},
                input_example=_example(example, offer.input_columns),
                signature=_signature(offer),
                registered_model_name=registered_model_name,
                pip_requirements=requirements,
                metadata=metadata,
            )
    finally:
        if run is not None:
            mlflow.end_run()


# ---------------------------------------------------------------------------------------------
# Hillstrom experiment
# ---------------------------------------------------------------------------------------------


def stratified_halves(df: pd.DataFrame, seed: int) -> np.ndarray:
    """A 50/50 split stratified by arm x visit x conversion; True = training half."""
    from sklearn.model_selection import train_test_split

    strata = (
        df["treatment"].astype(str)
        + "|"
        + df["visit"].astype(int).astype(str)
        + "|"
        + df["conversion"].astype(int).astype(str)
    )
    train_idx, _ = train_test_split(
        np.arange(len(df)), test_size=0.5, random_state=seed, stratify=strata.to_numpy()
    )
    mask = np.zeros(len(df), dtype=bool)
    mask[train_idx] = True
    return mask


@dataclass
class UpliftExperiment:
    """What :func:`run_experiment` measured."""

    scores: pd.DataFrame  # long: seed, arm, outcome, model, metric, value
    summary: pd.DataFrame  # arm, outcome, model, metric, mean, std, fixed
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # arm -> model -> Qini curve
    deciles: dict[str, dict[str, np.ndarray]]  # arm -> model -> uplift per decile
    seeds: list[int]
    seconds: float
    params: UpliftParams

    def mean(
        self, arm: str, outcome: str, model: str, metric: str = "qini", stat: str = "mean"
    ) -> float:
        """A summary value: ``stat`` is ``mean``, ``std`` or ``fixed`` (the fixed split)."""
        s = self.summary
        sel = s[(s.arm == arm) & (s.outcome == outcome) & (s.model == model) & (s.metric == metric)]
        if sel.empty:
            raise KeyError(f"no {metric} for {arm}/{outcome}/{model}")
        return float(sel[stat].iloc[0])


def decile_uplift(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> np.ndarray:
    """Treated minus control mean outcome in each tenth of customers ranked by uplift."""
    yv, u, t = _inputs(y, uplift, treatment)
    out = []
    for g in np.array_split(_order(u), 10):
        tg = t[g]
        treated, control = yv[g][tg == 1], yv[g][tg == 0]
        out.append(treated.mean() - control.mean() if treated.size and control.size else np.nan)
    return np.asarray(out)


def run_experiment(
    df: pd.DataFrame,
    arms: tuple[str, ...] = ARMS,
    outcomes: tuple[str, ...] = OUTCOMES,
    n_splits: int = 5,
    seed: int = 0,
    params: UpliftParams | None = None,
    models: tuple[str, ...] = MODELS,
    log: Any = None,
) -> UpliftExperiment:
    """Every model x arm x outcome on ``n_splits`` stratified 50/50 splits (seeds
    ``seed .. seed + n_splits - 1``; the first is the fixed split whose curves are kept)."""
    params = params or UpliftParams()
    started = time.perf_counter()
    seeds = [seed + i for i in range(n_splits)]
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    deciles: dict[str, dict[str, np.ndarray]] = {}
    x_all = df[HILLSTROM_FEATURES]
    for split_no, s in enumerate(seeds):
        train = stratified_halves(df, s)
        for arm in arms:
            in_arm = df["treatment"].isin([arm, CONTROL]).to_numpy()
            tr, te = in_arm & train, in_arm & ~train
            t_tr = (df["treatment"].to_numpy()[tr] == arm).astype(float)
            t_te = (df["treatment"].to_numpy()[te] == arm).astype(float)
            for outcome in outcomes:
                y = df[outcome].to_numpy(dtype=float)
                for name in models:
                    model = make_learner(name, params, seed=s).fit(x_all[tr], t_tr, y[tr])
                    u = model.predict_uplift(x_all[te])
                    for metric, value in uplift_report(y[te], u, t_te).items():
                        rows.append(
                            {
                                "seed": s,
                                "arm": arm,
                                "outcome": outcome,
                                "model": name,
                                "metric": metric,
                                "value": value,
                            }
                        )
                    if split_no == 0 and outcome == GATE_OUTCOME:
                        curves.setdefault(arm, {})[name] = qini_curve(y[te], u, t_te)
                        deciles.setdefault(arm, {})[name] = decile_uplift(y[te], u, t_te)
                if split_no == 0 and outcome == GATE_OUTCOME:
                    curves[arm]["perfect"] = perfect_qini_curve(y[te], t_te)
            if log is not None:
                log(f"    split {split_no + 1}/{n_splits} (seed {s}) {arm}: done")
    scores = pd.DataFrame(rows)
    keys = ["arm", "outcome", "model", "metric"]
    summary = (
        scores.groupby(keys, sort=False)["value"]
        .agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        .reset_index()
    )
    fixed = scores[scores.seed == seeds[0]].set_index(keys)["value"]
    summary["fixed"] = [fixed[tuple(r)] for r in summary[keys].itertuples(index=False)]
    return UpliftExperiment(
        scores, summary, curves, deciles, seeds, time.perf_counter() - started, params
    )


_HEADERS = {"qini": "Qini", "auuc": "AUUC", "uplift_at_30": "uplift@30%"}


def summary_markdown(summary: pd.DataFrame) -> str:
    """Rows arm x outcome x model; cells ``mean ± std`` over the splits."""
    wide = summary.pivot_table(
        index=["arm", "outcome", "model"],
        columns="metric",
        values=["mean", "std"],
        sort=False,
    )
    metrics = [m for m in METRICS if ("mean", m) in wide.columns]
    lines = [
        "| arm | outcome | model | " + " | ".join(_HEADERS[m] for m in metrics) + " |",
        "|---|---|---|" + "---:|" * len(metrics),
    ]
    for (arm, outcome, model), row in wide.iterrows():
        cells = [f"{row[('mean', m)]:.4f} ± {row[('std', m)]:.4f}" for m in metrics]
        lines.append(f"| {arm} | {outcome} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def qini_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    deciles: dict[str, np.ndarray],
    path: str | Path,
    title: str,
    qini: dict[str, float] | None = None,
) -> Path:
    """Three panels: Qini curves with the perfect curve and the random line; each curve minus
    the random line (the gain the Qini coefficient integrates); observed uplift per decile of
    predicted uplift. ``curves`` maps names to :func:`qini_curve` output (``"perfect"``
    dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("curves is empty: pass at least one model")
    fig, (ax_q, ax_g, ax_d) = plt.subplots(1, 3, figsize=(19, 5))
    n = max(float(x[-1]) for x, _ in curves.values())
    end = float(next(iter(curves.values()))[1][-1])
    for name, (x, q) in curves.items():
        label = name if not qini or name not in qini else f"{name} (Qini {qini[name]:.3f})"
        style = {"color": "k", "ls": ":", "lw": 1} if name == "perfect" else {}
        ax_q.plot(100 * x / n, q, label=label, **style)
        if name != "perfect":
            ax_g.plot(100 * x / n, q - end * x / n, label=label)
    ax_q.plot([0, 100], [0, end], "k--", lw=1, label="random (line)")
    ax_q.set(
        xlabel="customers targeted (%)",
        ylabel="incremental responders (Qini curve)",
        title=title,
        xlim=(0, 100),
    )
    ax_g.axhline(0.0, color="k", ls="--", lw=1, label="random (line)")
    ax_g.set(
        xlabel="customers targeted (%)",
        ylabel="incremental responders above the random line",
        title="Qini curve minus random",
        xlim=(0, 100),
    )
    for ax in (ax_q, ax_g):
        ax.legend(fontsize=8, loc="upper left" if ax is ax_g else "lower right")
        ax.grid(alpha=0.3)
    width = 0.8 / max(len(deciles), 1)
    d = np.arange(1, 11)
    for i, (name, values) in enumerate(deciles.items()):
        ax_d.bar(d + (i - (len(deciles) - 1) / 2) * width, values, width=width, label=name)
    ax_d.axhline(0.0, color="k", lw=1)
    ax_d.set(
        xlabel="decile of predicted uplift (1 = highest)",
        ylabel="treated − control mean outcome",
        title="Observed uplift per decile",
        xticks=d,
    )
    ax_d.legend(fontsize=8)
    ax_d.grid(alpha=0.3, axis="y")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# CLI: experiment, MLflow run, registration behind the champion gate
# ---------------------------------------------------------------------------------------------


@dataclass
class UpliftRunResult:
    """What ``python -m training.uplift`` produced."""

    run_id: str
    experiment: UpliftExperiment
    decision: GateDecision | None
    seconds: float


def _metric_key(arm: str, outcome: str, model: str, metric: str, stat: str) -> str:
    return f"uplift.{arm}.{outcome}.{model}.{metric}.{stat}"


def train_and_register(
    data: str | Path = HILLSTROM_DATA,
    tracking_uri: str | None = None,
    experiment: str = "revival",
    force: bool = False,
    learner: str = "x_learner",
    n_splits: int = 5,
    seed: int = 0,
    params: UpliftParams | None = None,
    register: bool = True,
    log: Any = print,
) -> UpliftRunResult:
    """Run the Hillstrom experiment, log it to MLflow, refit and register ``offer_uplift``."""
    if learner not in ("x_learner", "two_model"):
        raise ValueError(f"learner must be x_learner or two_model, got {learner!r}")
    started = time.perf_counter()
    params = params or UpliftParams()
    use_store(tracking_uri or default_tracking_uri(), experiment)
    client = MlflowClient()
    df = load_hillstrom(data)
    sha = file_sha256(data)
    arm_summary = hillstrom_arm_summary(df)
    log(f"Hillstrom: {len(df):,} customers, sha256 {sha[:12]}…\n{arm_summary.round(4)}\n")
    exp = run_experiment(df, n_splits=n_splits, seed=seed, params=params, log=log)
    table = summary_markdown(exp.summary)
    log(
        f"\nuplift on the test halves, mean ± std over {n_splits} stratified 50/50 splits "
        f"(seeds {exp.seeds[0]}..{exp.seeds[-1]}), {exp.seconds:.1f} s\n\n{table}\n"
    )
    offer = fit_offer_uplift(df, learner, ARMS, GATE_OUTCOME, params)
    value = exp.mean(GATE_ARM, GATE_OUTCOME, learner)
    baselines = {"random": 0.0, "response": exp.mean(GATE_ARM, GATE_OUTCOME, "response")}
    decision = None
    with mlflow.start_run(run_name="uplift-hillstrom") as run, tempfile.TemporaryDirectory() as t:
        out = Path(t)
        mlflow.set_tags({"data.sha256": sha, "stage": "uplift"})
        mlflow.log_params(
            {
                "data.path": str(data),
                "data.sha256": sha,
                "data.rows": len(df),
                "features": ",".join(HILLSTROM_FEATURES),
                "arms": ",".join(ARMS),
                "outcomes": ",".join(OUTCOMES),
                "split": "stratified 50/50 by arm x visit x conversion",
                "split.seeds": ",".join(map(str, exp.seeds)),
                "learner": learner,
                "x_learner.propensity": HILLSTROM_PROPENSITY,
                "uplift_at_k.strategy": "overall",
                "qini.normalisation": "sklift qini_auc_score, negative_effect=True",
                **{f"gbm.{k}": v for k, v in asdict(params).items()},
            }
        )
        metrics = {}
        for r in exp.summary.itertuples(index=False):
            for stat in ("mean", "std", "fixed"):
                key = _metric_key(r.arm, r.outcome, r.model, r.metric, stat)
                metrics[key] = float(getattr(r, stat))
        metrics["experiment_seconds"] = exp.seconds
        mlflow.log_metrics(metrics)
        exp.scores.to_csv(out / "uplift_scores.csv", index=False)
        exp.summary.to_csv(out / "uplift_table.csv", index=False)
        (out / "uplift_table.md").write_text(table + "\n")
        arm_summary.to_csv(out / "arm_summary.csv")
        for f in ("uplift_scores.csv", "uplift_table.csv", "uplift_table.md", "arm_summary.csv"):
            mlflow.log_artifact(str(out / f))
        for arm in ARMS:
            qini = {
                m: exp.mean(arm, GATE_OUTCOME, m, "qini", "fixed")
                for m in exp.curves[arm]
                if m != "perfect"
            }
            qini_plot(
                exp.curves[arm],
                exp.deciles[arm],
                out / f"qini_{arm}_visit.png",
                f"Qini curve: {arm} vs no e-mail, visit (fixed split, test half)",
                qini,
            )
            mlflow.log_artifact(str(out / f"qini_{arm}_visit.png"), artifact_path="plots")
        info = log_offer_uplift(offer, df, registered_model_name=MODEL_NAME if register else None)
        if register:
            version = str(info.registered_model_version)
            for key, val in {
                "data.sha256": sha,
                "learner": learner,
                "outcome": GATE_OUTCOME,
                "arms": ",".join(ARMS),
                **{
                    metric_tag(f"qini.{arm}.{GATE_OUTCOME}"): repr(
                        exp.mean(arm, GATE_OUTCOME, learner)
                    )
                    for arm in ARMS
                },
            }.items():
                client.set_model_version_tag(MODEL_NAME, version, key, val)
            decision = champion_gate(
                client, MODEL_NAME, version, GATE_METRIC, value, baselines, force=force
            )
            write_json(out / "gate.json", decision.to_dict())
            mlflow.log_artifact(str(out / "gate.json"))
            state = "promoted" if decision.promoted else "kept"
            mlflow.set_tag(f"gate.{MODEL_NAME}", f"{state}: {decision.reason}"[:5000])
            log(
                f"gate {MODEL_NAME} v{version}: "
                f"{'PROMOTED' if decision.promoted else 'not promoted'} — {decision.reason}"
            )
        run_id = run.info.run_id
    return UpliftRunResult(run_id, exp, decision, time.perf_counter() - started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.uplift",
        description="Hillstrom offer-uplift experiment; logs to MLflow and registers "
        f"{MODEL_NAME!r} behind the champion gate.",
    )
    p.add_argument("--data", default=str(HILLSTROM_DATA), help="Hillstrom CSV(.gz)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under mlflow/)"
    )
    p.add_argument("--experiment", default="revival")
    p.add_argument("--force", action="store_true", help="promote even if the gate says no")
    p.add_argument("--learner", choices=["x_learner", "two_model"], default="x_learner")
    p.add_argument("--splits", type=int, default=5, help="repeated 50/50 splits (5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed split (0)")
    p.add_argument("--rounds", type=int, default=UpliftParams.num_rounds, help="boosting rounds")
    p.add_argument(
        "--min-leaf",
        type=int,
        default=UpliftParams.min_data_in_leaf,
        help="LightGBM min_data_in_leaf (lower it for small campaign tables)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if min(args.splits, args.rounds, args.min_leaf) < 1:
        print("error: --splits, --rounds and --min-leaf must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.data).exists():
        print(f"error: --data: no such file {args.data}", file=sys.stderr)
        return 2
    result = train_and_register(
        data=args.data,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        force=args.force,
        learner=args.learner,
        n_splits=args.splits,
        seed=args.seed,
        params=UpliftParams(num_rounds=args.rounds, min_data_in_leaf=args.min_leaf),
    )
    print(f"run {result.run_id}; total {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
