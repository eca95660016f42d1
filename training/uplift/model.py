"""The served offer model: one uplift model per e-mail arm (:class:`OfferUplift`), its fit on a
whole campaign table and its MLflow pyfunc (features in, ``uplift_<arm>`` out)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

import mlflow
from training.uplift.design import ARMS, CONTROL, HILLSTROM_FEATURES, MODEL_NAME
from training.uplift.learners import UpliftModel, UpliftParams, load_uplift, make_learner

__all__ = ["OfferUplift", "OfferUpliftPyfunc", "fit_offer_uplift", "log_offer_uplift"]


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
