"""The cross-sell model behind MLflow's pyfunc interface (registered as ``cross_sell``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from servable.crosssell.base import Recommender, positions_frame

# Recommender.load finds the saved class by name among the subclasses imported so far; the
# package's __init__ (always run before this module) imports all four.

__all__ = ["CrossSellPyfunc"]

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
