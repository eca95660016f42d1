"""Uplift learners on LightGBM: one small interface for the meta-learners and baselines.

Every learner has ``fit(X, treatment, y)``, ``predict_uplift(X)``, ``save(path)`` and is read
back by :func:`load_uplift`:

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

The served offer model is :class:`OfferUplift` (one learner per e-mail arm against the same
control) behind :class:`OfferUpliftPyfunc`, the pyfunc registered as ``offer_uplift``.
Choosing and fitting learners for a campaign is training's job (:mod:`training.uplift`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from servable.checks import binary_flags, finite_values, is_binary

__all__ = [
    "FeatureEncoder",
    "OfferUplift",
    "OfferUpliftPyfunc",
    "RandomTargeting",
    "ResponseModel",
    "TwoModelUplift",
    "UpliftModel",
    "UpliftParams",
    "XLearnerUplift",
    "load_uplift",
]


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
        self.objective = "binary" if is_binary(yv) else "regression"
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
