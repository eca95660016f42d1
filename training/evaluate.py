"""``python -m training.evaluate``: forward-evaluate the registered champions on a log.

Scores the ``churn`` and ``next_purchase`` champions at ``--origins`` cutoffs, one horizon
apart, the newest at ``--cutoff`` (default: the day after the log's last day minus the horizon), against
what happened in the following ``horizon`` days, with the same baselines and populations as
training. Cross-sell (when the log has items and a champion exists) refits the champion's
recipe — its hybrid parameters, with the log's item descriptions — at each origin and scores
it, and its ALS alone, against item-kNN and popularity on the items each customer buys for
the first time (recall, NDCG, hit rate @10). Prints the
per-origin table and the mean, and logs them to an MLflow run. Use it on a *newer* log
than the champions were trained on: an origin inside the champions' training data is
in-sample — the run is tagged ``in_sample=true`` and a warning is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from core.env import DEFAULT_DATA, configure_environment, default_tracking_uri
from features.contracts import DataContractError
from features.cutoff import parse_cutoff
from features.labels import backtest_cutoff
from features.loaders import load_transactions
from features.mapping import add_mapping_option
from servable.crosssell.hybrid import HybridRecommender
from servable.crosssell.knn import ItemKNNRecommender
from servable.crosssell.popularity import PopularityRecommender
from training.backtest import backtest_markdown, evaluate_propensity
from training.crosssell import no_items_reason
from training.crosssell.backtest import long_table, score_populations
from training.protocol import Origin
from training.registry import CHAMPION, champion_version, load_champion, use_store
from training.rolling import RollingResult, log_rolling_metrics, rolling_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    p.add_argument("--data", default="", help=f"default {DEFAULT_DATA}")
    add_mapping_option(p)
    p.add_argument("--horizon", type=int, default=90)
    p.add_argument(
        "--cutoff", default=None, help="newest origin (default: day after the last day − horizon)"
    )
    p.add_argument("--origins", type=int, default=1, help="origins one horizon apart (1)")
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
    client = MlflowClient()
    versions = {n: champion_version(client, n) for n in ("churn", "next_purchase")}
    missing = [n for n, v in versions.items() if v is None]
    if missing:
        print(
            f"error: no '{CHAMPION}' alias for {missing}: run `python -m training` first",
            file=sys.stderr,
        )
        return 2
    try:
        loaded = load_transactions(args.data, args.mapping)
    except (DataContractError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tx = loaded.transactions
    cutoff = given if given is not None else backtest_cutoff(tx, args.horizon)
    trained_until = min(
        pd.Timestamp(v.tags.get("data.last_ts", "1970-01-01"))
        if "data.last_ts" in v.tags
        else pd.Timestamp.max
        for v in versions.values()
    )
    origins = [
        Origin(cutoff - pd.Timedelta(days=k * args.horizon), args.horizon, (), "champion", "")
        for k in range(max(args.origins, 1))
    ]
    result = _evaluate(client, tx, origins, loaded.item_text)
    table = result.table
    in_sample = origins[-1].cutoff < trained_until
    if in_sample:
        print(
            f"warning: origin {origins[-1].label} is inside the champions' training data "
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
                "eval.origins": ",".join(o.label for o in origins),
                "eval.horizon_days": args.horizon,
            }
        )
        log_rolling_metrics(result)
        md = f"{rolling_markdown(result)}\n\nmean over origins\n{backtest_markdown(table)}"
        (Path(tmp) / "evaluation.md").write_text(md)
        mlflow.log_artifact(str(Path(tmp) / "evaluation.md"))
    print(md)
    return 0


def _evaluate(
    client: MlflowClient, tx: pd.DataFrame, origins: list[Origin], text: dict[str, str]
) -> RollingResult:
    """The champions' metrics and their baselines' at every origin."""
    churn, nextp = load_champion("churn"), load_champion("next_purchase")
    recipe = None
    if champion_version(client, "cross_sell") is not None and no_items_reason(tx) is None:
        recipe = {"content_weight": 0.0, **load_champion("cross_sell").get_params()}
    tables = []
    for o in origins:
        t = evaluate_propensity(churn, nextp, tx, o.cutoff, o.horizon)[0]
        if recipe is not None:
            t = pd.concat([t, _cross_sell(tx, o, recipe, text)], ignore_index=True)
        t.insert(0, "origin", o.label)
        tables.append(t)
    return RollingResult(origins, pd.concat(tables, ignore_index=True), {}, None)


def _cross_sell(tx: pd.DataFrame, o: Origin, recipe: dict, text: dict[str, str]) -> pd.DataFrame:
    """The champion's recipe refitted at the origin, and its ALS alone, against item-kNN
    and popularity (their defaults, sharing the recipe's catalogue rule and popularity
    window)."""
    shared = {k: recipe[k] for k in ("active_days", "popularity_days") if k in recipe}
    hybrid = HybridRecommender(**recipe).fit(tx, o.cutoff, text)
    models = {
        "hybrid": hybrid,
        "als": hybrid.als_alone(),
        "knn": ItemKNNRecommender(**shared).fit(tx, o.cutoff),
        "popularity": PopularityRecommender(**shared).fit(tx, o.cutoff),
    }
    wide, _ = score_populations(models, tx, o.cutoff, o.horizon, 10)
    return long_table(wide)


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
