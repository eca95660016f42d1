"""What gets registered: the final hybrid (ALS + content) refit on the whole log, logged as the pyfunc
:class:`CrossSellPyfunc` (it lives in :mod:`servable.crosssell.pyfunc`, logged with the
model; re-exported here, so models registered before the move, which pickled
``training.crosssell.model.CrossSellPyfunc``, still load inside the repository)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from servable.crosssell.base import DAY, Recommender
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.pyfunc import CrossSellPyfunc
from training.packaging import code_paths, pip_requirements

__all__ = ["CrossSellPyfunc", "fit_final", "log_pyfunc", "no_items_reason"]


def no_items_reason(tx: pd.DataFrame) -> str | None:
    """Why cross-sell cannot train on ``tx`` (a log without item ids), or None."""
    if "item_id" not in tx.columns or not tx["item_id"].notna().any():
        return "the log has no item ids"
    return None


def fit_final(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | None = None,
    params: Mapping[str, Any] | None = None,
    item_text: Mapping[str, str] | None = None,
) -> HybridRecommender:
    """Refit the hybrid with the chosen ``params`` on every row before ``cutoff`` (for
    serving); ``item_text`` maps item ids to their descriptions (the content vectors).

    ``cutoff`` defaults to the day after the log's last day (all rows are used).
    """
    if cutoff is None:
        cutoff = transactions["ts"].max().normalize() + DAY
    model = HybridRecommender(**dict(params or {}))
    return model.fit(transactions, cutoff, item_text)  # type: ignore[return-value]


def _signature() -> ModelSignature:
    inputs = Schema(
        [
            ColSpec("string", "customer_id", required=False),
            ColSpec("string", "item_id", required=False),
            ColSpec("long", "k", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "customer_id", required=False),
            ColSpec("string", "query_item_id", required=False),
            ColSpec("long", "rank"),
            ColSpec("string", "item_id"),
            ColSpec("string", "item_name", required=False),
            ColSpec("double", "score", required=False),
            ColSpec("string", "source"),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("mode", "string", "recommend"),
            ParamSpec("k", "long", 10),
            ParamSpec("exclude_seen", "boolean", True),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc(
    recommender: Recommender,
    name: str = "cross_sell",
    item_names: pd.DataFrame | None = None,
    registered_model_name: str | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log ``recommender`` as a :class:`CrossSellPyfunc` model in the active MLflow run.

    ``item_names`` (columns ``item_id``, ``name``; e.g. ``Loaded.items``) labels the items in
    the output. Starts (and ends) a run if none is active. With ``registered_model_name`` the
    model is also registered (a new version). Returns MLflow's ``ModelInfo``.
    """
    recommender._check_fitted()
    names: list[str | None] | None = None
    if item_names is not None and len(item_names):
        lookup = dict(
            zip(item_names["item_id"].astype(str), item_names["name"].astype(object), strict=True)
        )
        names = [
            None if pd.isna(lookup.get(i)) else str(lookup[i])
            for i in recommender.item_ids.tolist()
        ]
    # a made-up id (served the popularity fallback): no real customer id in the artifacts
    input_example = pd.DataFrame({"customer_id": ["example-customer"]})
    metadata = {
        "recommender": type(recommender).__name__,
        "params": json.dumps(recommender.get_params(), default=str),
        "cutoff": recommender.cutoff.isoformat(),
        "n_customers": len(recommender.customer_ids),
        "n_items": len(recommender.item_ids),
    }
    run = nullcontext() if mlflow.active_run() else mlflow.start_run(run_name=name)
    with tempfile.TemporaryDirectory() as tmp, run:
        model_dir = recommender.save(Path(tmp) / "recommender")
        index_path = Path(tmp) / "item_index.json"
        index_path.write_text(json.dumps({"item_id": recommender.item_ids.tolist(), "name": names}))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=CrossSellPyfunc(),
            artifacts={"recommender": str(model_dir), "item_index": str(index_path)},
            code_paths=code_paths(),
            signature=_signature(),
            input_example=(input_example, {"mode": "recommend", "k": 10}),
            registered_model_name=registered_model_name,
            pip_requirements=pip_requirements("implicit", "threadpoolctl"),
            metadata=metadata,
        )
