"""Every registered model loads and predicts without this repository (issue #15).

For each of ``churn``, ``next_purchase``, ``cross_sell`` (the session ``champions``, trained
on a slice of the real log) and ``offer_uplift`` (fitted on the real Hillstrom table and
registered here, as ``python -m training.uplift`` does), a ``python -I`` subprocess in an
empty folder — the repository off ``sys.path`` and this project's editable-install finder
removed — loads ``models:/<name>/<version>``, predicts on the logged input example and checks
that nothing of ``core``, ``features``, ``training`` or ``service`` was imported and that
``servable`` came from the model's own ``code/`` folder. The parent compares the predictions
with the same model's in the repository and checks the pinned requirements.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import Model

from core.env import HILLSTROM_DATA
from features.loaders import load_hillstrom
from training.registry import use_store
from training.uplift import MODEL_NAME, UpliftParams, fit_offer_uplift, log_offer_uplift

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def _checkouts() -> list[str]:
    """This worktree and every folder the editable install maps our packages to."""
    roots = {str(REPO)}
    for finder in sys.meta_path:
        mapping = getattr(sys.modules.get(finder.__module__), "MAPPING", None)
        if "__editable__" in finder.__module__ and isinstance(mapping, dict):
            roots |= {str(Path(p).parent) for p in mapping.values()}
    return sorted(roots)


# what each model's requirements must pin beyond mlflow, cloudpickle, numpy, pandas, scipy
EXTRA = {
    "churn": {"lightgbm", "threadpoolctl"},
    "next_purchase": {"lightgbm", "threadpoolctl"},
    "cross_sell": {"implicit", "threadpoolctl"},
    MODEL_NAME: {"lightgbm"},
}
BASE = {"mlflow", "cloudpickle", "numpy", "pandas", "scipy"}

# Runs under `python -I` (no cwd, no PYTHON* variables on sys.path). The site-packages .pth
# of `pip install -e .` has installed a meta-path finder (and a path hook) that maps our
# packages to the checkout: drop them before anything imports mlflow.
CHILD = r"""
import importlib.util, json, sys
from pathlib import Path

uri, model_uri, out_file, repo_roots, extra_ids = sys.argv[1:6]
repo_roots = set(json.loads(repo_roots))

def editable(obj):
    return "__editable__" in (getattr(obj, "__module__", None) or "")

sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
sys.path[:] = [p for p in sys.path if "__editable__" not in p and p not in repo_roots]
sys.path_importer_cache.clear()
OURS = ("core", "features", "training", "service", "servable")
for name in OURS:
    assert importlib.util.find_spec(name) is None, f"{name} is still importable"

import mlflow
from mlflow.models import Model

mlflow.set_tracking_uri(uri)
before = list(sys.path)
model = mlflow.pyfunc.load_model(model_uri)
local = mlflow.artifacts.download_artifacts(model_uri)
example = Model.load(local).load_input_example(local)
params = Model.load(local).load_input_example_params(local)
out = model.predict(example, params=params)
extra = json.loads(extra_ids)
if extra:  # known customers: the recommender's own picks, not only the popular fallback
    import pandas as pd
    more = model.predict(pd.DataFrame({"customer_id": extra}), params={"k": 5})
    out = pd.concat([out, more], ignore_index=True)

added = [p for p in sys.path if p not in before]
for name in OURS[:-1]:
    assert not any(m == name or m.startswith(name + ".") for m in sys.modules), name
servable = sys.modules["servable"].__file__
assert any(Path(servable).is_relative_to(p) for p in added), (servable, added)
assert Path(servable).parent.parent.name == "code", servable
out.to_pickle(out_file)
print(json.dumps({"servable": servable, "rows": len(out), "columns": list(out.columns)}))
print(out.head(10).to_string())
"""


@pytest.fixture(scope="module")
def offer_store(tmp_path_factory):
    """``offer_uplift`` v1 in its own store: the X-learner on the real Hillstrom table."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('offer') / 'mlflow.db'}"
    use_store(uri, "portable")
    try:
        table = load_hillstrom(HILLSTROM_DATA)
        offer = fit_offer_uplift(table, "x_learner", params=UpliftParams(num_rounds=20))
        with mlflow.start_run():
            info = log_offer_uplift(offer, table)
        assert str(info.registered_model_version) == "1"
    finally:
        mlflow.set_tracking_uri(None)
    return uri


@pytest.fixture(scope="module")
def stores(champions, offer_store):
    _, uri = champions
    return {"churn": uri, "next_purchase": uri, "cross_sell": uri, MODEL_NAME: offer_store}


def _in_repo(uri: str, model_uri: str) -> tuple[pd.DataFrame, Path, list[str]]:
    """The model's predictions on its input example here, its local copy, and (cross-sell)
    five customers it knows."""
    mlflow.set_tracking_uri(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(model_uri))
        meta = Model.load(str(local))
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    example = meta.load_input_example(str(local))
    out = model.predict(example, params=meta.load_input_example_params(str(local)))
    inner = model.unwrap_python_model().model
    known = [str(c) for c in getattr(inner, "customer_ids", [])[:5]]
    if known:
        more = model.predict(pd.DataFrame({"customer_id": known}), params={"k": 5})
        assert (more["source"] == "model").any()  # the factors are used, not only popularity
        out = pd.concat([out, more], ignore_index=True)
    assert meta.signature is not None and meta.signature.inputs and meta.signature.outputs
    return out, local, known


@pytest.mark.parametrize("name", ["churn", "next_purchase", "cross_sell", MODEL_NAME])
def test_model_loads_and_predicts_without_the_repository(name, stores, tmp_path):
    uri, model_uri = stores[name], f"models:/{name}/1"
    expected, local, known = _in_repo(uri, model_uri)

    pins = dict(line.split("==", 1) for line in (local / "requirements.txt").read_text().split())
    assert not any("revival" in p for p in pins)
    assert set(pins) == BASE | EXTRA[name]
    assert pins == {p: importlib.metadata.version(p) for p in pins}
    code = local / "code"
    assert [p.name for p in code.iterdir()] == ["servable"]
    assert not list(code.rglob("__pycache__"))

    work = tmp_path / "empty"
    work.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out_file = tmp_path / "out.pkl"
    args = [uri, model_uri, str(out_file), json.dumps(_checkouts()), json.dumps(known)]
    proc = subprocess.run(
        [sys.executable, "-I", str(script), *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[0])
    assert "/code/servable/" in report["servable"]
    assert not any(Path(report["servable"]).is_relative_to(r) for r in _checkouts())
    got = pd.read_pickle(out_file)
    assert len(got) == len(expected) > 0
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=0)
