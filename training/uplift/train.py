"""``python -m training.uplift``'s work: run the experiment, log it to MLflow, refit the chosen
learner on every row and register ``offer_uplift`` behind the champion gate."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.env import HILLSTROM_DATA, default_tracking_uri
from features.loaders import hillstrom_arm_summary, load_hillstrom
from features.tables import file_sha256
from training.registry import GateDecision, champion_gate, metric_tag, use_store, write_json
from training.uplift.design import (
    ARMS,
    GATE_ARM,
    GATE_METRIC,
    GATE_OUTCOME,
    HILLSTROM_FEATURES,
    HILLSTROM_PROPENSITY,
    MODEL_NAME,
    OUTCOMES,
)
from training.uplift.experiment import UpliftExperiment, run_experiment, summary_markdown
from training.uplift.learners import UpliftParams
from training.uplift.model import fit_offer_uplift, log_offer_uplift
from training.uplift.plots import qini_plot

__all__ = ["UpliftRunResult", "train_and_register"]


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
    decision = None
    with mlflow.start_run(run_name="uplift-hillstrom") as run, tempfile.TemporaryDirectory() as t:
        out = Path(t)
        mlflow.set_tags({"data.sha256": sha, "stage": "uplift"})
        _log_experiment(out, str(data), sha, df, arm_summary, exp, table, learner, params)
        info = log_offer_uplift(offer, df, registered_model_name=MODEL_NAME if register else None)
        if register:
            decision = _register(client, out, info, exp, sha, learner, force, log)
        run_id = run.info.run_id
    return UpliftRunResult(run_id, exp, decision, time.perf_counter() - started)


def _log_experiment(
    out: Path,
    data: str,
    sha: str,
    df: pd.DataFrame,
    arm_summary: pd.DataFrame,
    exp: UpliftExperiment,
    table: str,
    learner: str,
    params: UpliftParams,
) -> None:
    """Params, summary metrics, tables and Qini plots of the experiment, into the active run."""
    mlflow.log_params(
        {
            "data.path": data,
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


def _register(
    client: MlflowClient,
    out: Path,
    info: Any,
    exp: UpliftExperiment,
    sha: str,
    learner: str,
    force: bool,
    log: Any,
) -> GateDecision:
    """Tag the new ``offer_uplift`` version and run the champion gate (vs random and response)."""
    value = exp.mean(GATE_ARM, GATE_OUTCOME, learner)
    baselines = {"random": 0.0, "response": exp.mean(GATE_ARM, GATE_OUTCOME, "response")}
    version = str(info.registered_model_version)
    for key, val in {
        "data.sha256": sha,
        "learner": learner,
        "outcome": GATE_OUTCOME,
        "arms": ",".join(ARMS),
        **{
            metric_tag(f"qini.{arm}.{GATE_OUTCOME}"): repr(exp.mean(arm, GATE_OUTCOME, learner))
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
    return decision
