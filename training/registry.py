"""MLflow side of training: pyfunc wrappers, registration and the champion gate.

Registered models: ``churn`` and ``next_purchase`` (a :class:`SnapshotPyfunc` around a
:mod:`servable.propensity` model; input = the feature snapshot), ``cross_sell`` (see
:mod:`training.crosssell`) and ``offer_uplift`` (see :mod:`training.uplift`). Each is logged
with the :mod:`servable` package as ``code_paths`` and pinned requirements
(:mod:`training.packaging`), so it loads without this repository. Every version carries its backtest metrics as tags
(``backtest.<metric>``, ``@`` spelt ``_at_``), so the gate compares like with like without re-running anything.

**Champion gate** (:func:`champion_gate`): the alias ``champion`` moves to a new version
only if its gate metric, averaged over the rolling backtest origins, beats the current
champion's *and* every baseline's on the same customers, and it does not lose to a baseline
on most origins; with no champion yet, beating the baselines is enough; ``force`` overrides
(first deployment). The decision and its reason are returned, tagged on the version and
logged by the caller.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from servable.propensity import ChurnModel, NextPurchaseModel, SnapshotPyfunc, snapshot_output
from training.packaging import code_paths, pip_requirements

__all__ = [
    "CHAMPION",
    "GateDecision",
    "SnapshotPyfunc",
    "champion_gate",
    "champion_version",
    "load_champion",
    "log_snapshot_model",
    "metric_tag",
    "use_store",
]

CHAMPION = "champion"


class _QuietCloudPickle(logging.Filter):
    """Drop MLflow's per-model CloudPickle notice (our pyfuncs are our own code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


logging.getLogger("mlflow.pyfunc").addFilter(_QuietCloudPickle())


def log_snapshot_model(
    model: ChurnModel | NextPurchaseModel,
    name: str,
    example: pd.DataFrame,
    registered_model_name: str | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log (and register) a snapshot model as a pyfunc inside the active run.

    :class:`SnapshotPyfunc` (re-exported here: models registered before it moved to
    :mod:`servable` pickled ``training.registry.SnapshotPyfunc``) with the :mod:`servable`
    code, LightGBM pinned, and the signature of five snapshot rows and their scores.
    """
    input_example = example[model.input_columns].head(5).reset_index(drop=True)
    signature = infer_signature(input_example, snapshot_output(model, input_example))
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "model")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=SnapshotPyfunc(),
            artifacts={"model": str(path)},
            code_paths=code_paths(),
            input_example=input_example,
            signature=signature,
            registered_model_name=registered_model_name,
            pip_requirements=pip_requirements("lightgbm", "threadpoolctl"),
        )


@dataclass
class GateDecision:
    """What the champion gate decided for one model version, and why."""

    model: str
    version: str
    metric: str
    value: float
    promoted: bool
    reason: str
    champion_version: str | None = None
    champion_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def use_store(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` and select ``experiment``, creating it if needed.

    For a SQLite store the experiment's artifacts live beside the database
    (``<db folder>/artifacts/<experiment>``), not in ``./mlruns`` of whatever directory the
    process happens to run in. Under ``mlflow run`` (``MLFLOW_RUN_ID`` set) the run that
    MLflow created becomes the parent run. Returns the experiment id.
    """
    mlflow.set_tracking_uri(tracking_uri)
    launched = os.environ.get("MLFLOW_RUN_ID")
    if launched:  # started by `mlflow run`: log into the run (and experiment) it created
        exp_id = MlflowClient().get_run(launched).info.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        return exp_id
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri.removeprefix("sqlite:///"))
            location = (db.parent / "artifacts" / experiment).resolve().as_uri()
        exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def champion_version(client: MlflowClient, name: str) -> Any | None:
    """The model version holding the ``champion`` alias, or ``None``."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def metric_tag(metric: str) -> str:
    """The model-version tag holding a backtest metric (MLflow keys cannot contain '@')."""
    return "backtest." + metric.replace("@", "_at_")


def champion_gate(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    value: float,
    baselines: dict[str, float],
    force: bool = False,
    origin_losses: dict[str, tuple[int, int]] | None = None,
) -> GateDecision:
    """Move ``champion`` to ``version`` iff it beats the champion and the baselines.

    ``value`` and ``baselines`` are the backtest values of ``metric`` (higher is better),
    the mean over the rolling origins. ``origin_losses``: per baseline, (origins where the
    model did not beat it, origins) — a model losing to a baseline on most origins is
    refused even when its mean is higher. The new version is tagged with
    :func:`metric_tag`, the decision and its reason.
    """
    version = str(version)
    key = metric_tag(metric)
    client.set_model_version_tag(name, version, key, repr(float(value)))
    current = champion_version(client, name)
    cur_value = None
    if current is not None:
        tag = current.tags.get(key)
        cur_value = float(tag) if tag is not None else -math.inf
    lost_to = {b: v for b, v in baselines.items() if not value > v}
    mostly_lost = {b: ln for b, ln in (origin_losses or {}).items() if 2 * ln[0] > ln[1]}
    if not math.isfinite(value):
        promoted, reason = False, f"{metric} is not finite ({value})"
    elif mostly_lost:
        promoted = False
        reason = "loses on most backtest origins to " + ", ".join(
            f"{b} ({lost} of {n})" for b, (lost, n) in mostly_lost.items()
        )
    elif lost_to:
        promoted = False
        reason = "does not beat baseline(s) " + ", ".join(
            f"{b} ({v:.4f} >= {value:.4f})" for b, v in lost_to.items()
        )
    elif current is None:
        promoted, reason = True, f"no champion yet; beats baselines on {metric} ({value:.4f})"
    elif value > cur_value:
        promoted = True
        reason = (
            f"{metric} {value:.4f} beats champion v{current.version} "
            f"({cur_value:.4f}) and the baselines"
        )
    else:
        promoted = False
        reason = (
            f"{metric} {value:.4f} does not beat champion v{current.version} "
            f"({cur_value:.4f}); champion kept"
        )
    if force and not promoted:
        promoted, reason = True, f"forced; the gate alone would have said: {reason}"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = GateDecision(
        model=name,
        version=version,
        metric=metric,
        value=float(value),
        promoted=promoted,
        reason=reason,
        champion_version=None if current is None else str(current.version),
        champion_value=cur_value,
    )
    client.set_model_version_tag(name, version, "gate.promoted", str(promoted).lower())
    client.set_model_version_tag(name, version, "gate.reason", reason)
    return decision


def load_champion(name: str, alias: str = CHAMPION) -> Any:
    """Load ``models:/<name>@<alias>`` and return the unwrapped project object.

    Snapshot models come back as :class:`ChurnModel` / :class:`NextPurchaseModel`, the
    cross-sell model as its pyfunc wrapper (which holds the recommender and item index).
    """
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    inner = loaded.unwrap_python_model()
    return getattr(inner, "model", inner)


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (for run artifacts)."""
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
