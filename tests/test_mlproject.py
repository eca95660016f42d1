"""The MLflow Project (mlflow/MLproject): typed entry points whose commands our CLIs accept.

Each entry point's command is rendered by MLflow's own project loader with its defaults and
with explicit values, then parsed by the CLI it calls: empty defaults mean the project's
defaults and booleans arrive as words. The ``score`` entry point then really runs under
``mlflow run`` against the test champions.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
import yaml
from mlflow.projects import _project_spec

from core.env import DEFAULT_DATA, HILLSTROM_DATA, PROJECT_ROOT
from training.__main__ import parser as train_parser
from training.retrain import parser as retrain_parser
from training.uplift.cli import parser as uplift_parser

PROJECT = PROJECT_ROOT / "mlflow"
ENTRY_POINTS = {"train", "evaluate", "score", "retrain", "uplift"}


def project():
    # mlflow.projects has no public loader of an MLproject; run() uses this one.
    return _project_spec.load_project(str(PROJECT))


def argv(entry: str, params: dict | None = None) -> tuple[str, list[str]]:
    """The module an entry point runs and its arguments, as MLflow renders them."""
    command = project().get_entry_point(entry).compute_command(params or {}, storage_dir=None)
    words = shlex.split(command)
    assert words[:3] == ["PYTHONPATH=..", "python", "-m"], command
    return words[3], words[4:]


def test_entry_points_types_and_environment():
    spec = project()
    assert set(spec._entry_points) == ENTRY_POINTS
    assert spec.env_type == "python_env"
    env = yaml.safe_load((PROJECT / "python_env.yaml").read_text())
    pins = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert env["python"] == "3.11" and env["dependencies"] == pins["dependencies"]
    types = {
        (entry, name): p.type
        for entry, ep in spec._entry_points.items()
        for name, p in ep.parameters.items()
    }
    assert types[("train", "horizon")] == "int" and types[("score", "k")] == "int"
    assert types[("uplift", "min_leaf")] == "int" and types[("retrain", "min_treated")] == "int"
    assert "string" not in {t for (e, n), t in types.items() if n in {"horizon", "k", "seed"}}


def test_defaults_render_to_what_the_clis_accept():
    module, args = argv("train")
    assert module == "training"
    train = train_parser().parse_args(args)
    assert (train.data, train.cutoff, train.force, train.horizon) == ("", "", "false", 90)
    assert train.mapping is None and train.origins == 4  # "" is no mapping
    mapped = train_parser().parse_args(
        argv("train", {"mapping": str(PROJECT_ROOT / "examples/mappings/orders_amount.yaml")})[1]
    )
    assert mapped.mapping.columns["customer_id"] == "customer_id"
    module, args = argv("retrain")
    retrain = retrain_parser().parse_args(args)
    assert module == "training.retrain"
    assert (retrain.force, retrain.attribution_only, retrain.since, retrain.data) == (
        False,
        False,
        "",
        "",
    )
    module, args = argv("uplift", {"force": "true", "splits": 3})
    uplift = uplift_parser().parse_args(args)
    assert module == "training.uplift" and uplift.force is True and uplift.splits == 3
    assert argv("evaluate")[0] == "training.evaluate" and argv("score")[0] == "training.score"
    assert DEFAULT_DATA.is_file() and HILLSTROM_DATA.is_file()  # what "" stands for


def test_bare_flags_still_mean_yes():
    assert retrain_parser().parse_args(["--force", "--attribution-only"]).force is True
    assert uplift_parser().parse_args(["--force"]).force is True
    with pytest.raises(SystemExit):
        uplift_parser().parse_args(["--force", "maybe"])


def test_a_non_number_is_refused_by_the_cli():
    # MLflow renders an int parameter as given; the CLI's own type check refuses it.
    with pytest.raises(SystemExit):
        train_parser().parse_args(argv("train", {"horizon": "ninety"})[1])


@pytest.mark.e2e
def test_mlflow_run_score_with_the_champions(champions, tmp_path):
    data, uri = champions
    out = tmp_path / "scores.csv"
    # --env-manager local runs the command's `python` from PATH: this interpreter's
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    env.pop("MLFLOW_RUN_ID", None)
    run = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(PROJECT), "-e", "score"]
        + ["--env-manager", "local", "-P", f"data={data}", "-P", f"out={out}", "-P", "k=3"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    scores = pd.read_csv(out)
    assert len(scores) > 100 and {"customer_id", "p_churn", "top_items"} <= set(scores.columns)
    assert scores["top_items"].dropna().str.split().str.len().max() <= 3
