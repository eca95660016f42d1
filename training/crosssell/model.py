"""What gets registered: the final ALS refit on the whole log and its MLflow pyfunc
(:class:`CrossSellPyfunc`; loading it needs numpy, pandas, scipy and this package, not
implicit)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import mlflow
from training.crosssell.als import ALSRecommender
from training.crosssell.base import DAY, Recommender, positions_frame

__all__ = ["CrossSellPyfunc", "fit_final", "log_pyfunc"]


def fit_final(
    transactions: pd.DataFrame,
    cutoff: pd.Timestamp | None = None,
    params: Mapping[str, Any] | None = None,
) -> ALSRecommender:
    """Refit ALS with the chosen ``params`` on every row before ``cutoff`` (for serving).

    ``cutoff`` defaults to the day after the log's last day (all rows are used).
    """
    if cutoff is None:
        cutoff = transactions["ts"].max().normalize() + DAY
    model = ALSRecommender(**dict(params or {}))
    return model.fit(transactions, cutoff)  # type: ignore[return-value]


_OUTPUT_COLUMNS = ["rank", "item_id", "item_name", "score", "source"]


class CrossSellPyfunc(mlflow.pyfunc.PythonModel):
    """A fitted :class:`Recommender` behind MLflow's pyfunc interface.

    Artifacts: ``recommender`` (a directory written by :meth:`Recommender.save`) and
    ``item_index`` (JSON: the model's item ids and, when known, their names). Call with
    ``params={"mode": ..., "k": ..., "exclude_seen": ...}``:

    * ``mode="recommend"`` (default): input column ``customer_id``; output ``customer_id,
      rank, item_id, item_name, score, source`` — the top-k items each customer has not bought
      or returned (``exclude_seen``); unknown customers get popular items (``source="popular"``,
      ``score`` NaN);
    * ``mode="similar"``: input column ``item_id``; output ``query_item_id, rank, item_id,
      item_name, score, source`` — items bought together with each input item.

    An optional integer input column ``k`` overrides ``params["k"]`` per row.
    """

    def __init__(self) -> None:
        self.model: Recommender | None = None
        self.names: dict[str, str] = {}

    def load_context(self, context: Any) -> None:
        self.model = Recommender.load(context.artifacts["recommender"])
        index = json.loads(Path(context.artifacts["item_index"]).read_text())
        names = index.get("name") or [None] * len(index["item_id"])
        self.names = {i: n for i, n in zip(index["item_id"], names, strict=True) if n is not None}

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            self.load_context(context)
        params = dict(params or {})
        mode = params.get("mode") or "recommend"
        k_default = int(params.get("k") or 10)
        exclude_seen = bool(params.get("exclude_seen", True))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if mode == "recommend":
            key, query = "customer_id", "customer_id"
        elif mode == "similar":
            key, query = "item_id", "query_item_id"
        else:
            raise ValueError(f"mode must be 'recommend' or 'similar', got {mode!r}")
        if key not in frame.columns or frame[key].isna().any():
            raise ValueError(f"mode={mode!r} needs a non-empty '{key}' column in the input")
        ids = frame[key].astype(str).str.strip().tolist()
        if "k" in frame.columns:
            ks = pd.to_numeric(frame["k"], errors="coerce").fillna(k_default).astype(int)
            ks = ks.clip(lower=1).tolist()
        else:
            ks = [k_default] * len(ids)
        if not ids:
            return pd.DataFrame(columns=[query, *_OUTPUT_COLUMNS])
        if mode == "recommend":
            positions = self.model._recommend_positions(ids, max(ks), exclude_seen)
        else:
            positions = self.model._similar_positions(ids, max(ks))
        positions = [(p[:k], v[:k], min(m, k)) for (p, v, m), k in zip(positions, ks, strict=True)]
        out = positions_frame(query, ids, positions, self.model.item_ids)
        out.insert(3, "item_name", out["item_id"].map(self.names).astype(object))
        return out.reset_index(drop=True)


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
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"scipy=={scipy.__version__}",
    ]
    run = nullcontext() if mlflow.active_run() else mlflow.start_run(run_name=name)
    with tempfile.TemporaryDirectory() as tmp, run:
        model_dir = recommender.save(Path(tmp) / "recommender")
        index_path = Path(tmp) / "item_index.json"
        index_path.write_text(json.dumps({"item_id": recommender.item_ids.tolist(), "name": names}))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=CrossSellPyfunc(),
            artifacts={"recommender": str(model_dir), "item_index": str(index_path)},
            signature=_signature(),
            input_example=(input_example, {"mode": "recommend", "k": 10}),
            registered_model_name=registered_model_name,
            pip_requirements=requirements,
            metadata=metadata,
        )
