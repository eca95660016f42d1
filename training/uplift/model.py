"""The served offer model's fit on a whole campaign table and its registration.

:class:`OfferUplift` (one uplift model per e-mail arm) and its pyfunc
:class:`OfferUpliftPyfunc` (features in, ``uplift_<arm>`` out) live in
:mod:`servable.uplift`, which is logged with the model; they are re-exported here (and
models registered before the move, which pickled ``training.uplift.model.OfferUpliftPyfunc``,
still load inside the repository)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema

from servable.uplift import OfferUplift, OfferUpliftPyfunc
from training.packaging import code_paths, pip_requirements
from training.uplift.design import ARMS, CONTROL, HILLSTROM_FEATURES, MODEL_NAME
from training.uplift.learners import UpliftParams, make_learner

__all__ = ["OfferUplift", "OfferUpliftPyfunc", "fit_offer_uplift", "log_offer_uplift"]


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


def _example(features: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Five rows with categoricals as plain strings (what a caller sends)."""
    ex = features[columns].head(5).reset_index(drop=True).copy()
    for col in ex.columns:
        if not pd.api.types.is_numeric_dtype(ex[col]):
            ex[col] = ex[col].astype(str).astype(object)
    return ex


def _signature(offer: OfferUplift, example: pd.DataFrame) -> ModelSignature:
    """Inferred from the example and its prediction, with the input columns' types relaxed to
    ``any``: MLflow checks that every feature column is there but does not convert them (it
    would refuse int64 for a double column and category dtype for a string one);
    :class:`FeatureEncoder` checks the values instead, and the input example shows them."""
    inferred = infer_signature(example, offer.predict(example))
    inputs = Schema([ColSpec(AnyType(), name) for name in inferred.inputs.input_names()])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


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
            input_example = _example(example, offer.input_columns)
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=OfferUpliftPyfunc(),
                artifacts={"model": str(path)},
                code_paths=code_paths(),
                input_example=input_example,
                signature=_signature(offer, input_example),
                registered_model_name=registered_model_name,
                pip_requirements=pip_requirements("lightgbm"),
                metadata=metadata,
            )
    finally:
        if run is not None:
            mlflow.end_run()
