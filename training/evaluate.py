"""``python -m training.evaluate``: forward-evaluate the registered champions on a log.

Scores the ``churn`` and ``next_purchase`` champions at ``--cutoff`` (default: the log's
last day minus the horizon) against what happened in the following ``horizon`` days, with
the same baselines and populations as training, and logs the table to an MLflow run. Use
it on a *newer* log than the champions were trained on: if the cutoff falls inside the
champions' training data the run is tagged ``in_sample=true`` and a warning is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from core.env import DEFAULT_DATA, configure_environment, default_tracking_uri
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.labels import backtest_cutoff
from features.loaders import load_transactions
from features.mapping import add_mapping_option
from training.backtest import backtest_markdown, evaluate_propensity
from training.registry import CHAMPION, champion_version, load_champion, use_store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    p.add_argument("--data", default="", help=f"default {DEFAULT_DATA}")
    add_mapping_option(p)
    p.add_argument("--horizon", type=int, default=90)
    p.add_argument("--cutoff", default=None)
    p.add_argument("--tracking-uri", default=default_tracking_uri())
    p.add_argument("--experiment", default="revival")
    args = p.parse_args(argv)
    args.data = args.data or str(DEFAULT_DATA)  # "" (e.g. from MLproject) means the default
    try:
        given = parse_cutoff(args.cutoff) if args.cutoff else None
    except ValueError as exc:
        print(f"error: --cutoff: {exc}", file=sys.stderr)
        return 2
    use_store(args.tracking_uri, args.experiment)
    client = mlflow.tracking.MlflowClient()
    versions = {n: champion_version(client, n) for n in ("churn", "next_purchase")}
    missing = [n for n, v in versions.items() if v is None]
    if missing:
        print(
            f"error: no '{CHAMPION}' alias for {missing}: run `python -m training` first",
            file=sys.stderr,
        )
        return 2
    try:
        tx = load_transactions(args.data, args.mapping).transactions
    except (DataContractError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cutoff = given if given is not None else backtest_cutoff(tx, args.horizon)
    trained_until = min(
        pd.Timestamp(v.tags.get("data.last_ts", "1970-01-01"))
        if "data.last_ts" in v.tags
        else pd.Timestamp.max
        for v in versions.values()
    )
    churn, nextp = load_champion("churn"), load_champion("next_purchase")
    table, _ = evaluate_propensity(churn, nextp, tx, cutoff, args.horizon)
    in_sample = cutoff < trained_until
    if in_sample:
        print(
            f"warning: cutoff {cutoff.date()} is inside the champions' training data "
            f"(until {trained_until.date()}): these numbers are in-sample",
            file=sys.stderr,
        )
    with (
        mlflow.start_run(run_name=f"evaluate-{cutoff.date()}"),
        tempfile.TemporaryDirectory() as tmp,
    ):
        mlflow.set_tags(
            {
                "stage": "evaluation",
                "in_sample": str(in_sample).lower(),
                **{f"champion.{n}": v.version for n, v in versions.items()},
            }
        )
        mlflow.log_params(
            {
                "eval.data": args.data,
                "eval.cutoff": str(cutoff.date()),
                "eval.horizon_days": args.horizon,
            }
        )
        for _, r in table.iterrows():
            mlflow.log_metric(
                f"{r['task']}.{r['model']}.{r['population']}.{r['metric']}", r["value"]
            )
        md = backtest_markdown(table)
        (Path(tmp) / "evaluation.md").write_text(md)
        mlflow.log_artifact(str(Path(tmp) / "evaluation.md"))
    print(md)
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
