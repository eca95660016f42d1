"""Shared fixtures: a synthetic transaction log with a known churn signal."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

from core.env import DEFAULT_DATA, configure_environment

configure_environment()  # thread counts and project-local homes before heavy imports

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features.contracts import validate_transactions  # noqa: E402


def synthetic_log(n_customers: int = 300, days: int = 540, seed: int = 0) -> pd.DataFrame:
    """Customers buy as Poisson processes with their own rate until a random death day.

    Half of them die at a random point in the log, so recency and frequency carry a real,
    learnable churn signal; items come from two families so cross-sell code has structure.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2020-01-01")
    rows = []
    for c in range(n_customers):
        rate = rng.uniform(1 / 60, 1 / 7)  # orders per day
        birth = rng.uniform(0, days * 0.5)
        death = rng.uniform(birth, days * 1.5) if c % 2 else days * 2
        t = birth
        k = 0
        while True:
            t += rng.exponential(1 / rate)
            if t >= min(death, days):
                break
            fam = 10000 + 100 * (c % 2)
            for j in range(int(rng.integers(1, 4))):
                rows.append(
                    (
                        f"C{c:04d}",
                        f"O{c:04d}-{k}",
                        start + pd.Timedelta(days=t),
                        f"{fam + int(rng.integers(0, 6))}",
                        float(rng.integers(1, 5)),
                        float(rng.uniform(1, 10)) + j,
                    )
                )
            k += 1
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
    )
    return validate_transactions(df.sort_values("ts").reset_index(drop=True), "synthetic")


@pytest.fixture(scope="session")
def real_log_slice(tmp_path_factory):
    """``slice(every)``: a CSV of every ``every``-th customer of the real log (by a stable
    hash of the id), cleaned, in the contract's columns."""
    from features.loaders import load_online_retail

    def write(every: int) -> Path:
        tx = load_online_retail(DEFAULT_DATA).transactions
        keep = tx["customer_id"].map(lambda c: zlib.crc32(c.encode()) % every == 0)
        cols = ["customer_id", "order_id", "ts", "item_id", "quantity", "unit_price"]
        path = tmp_path_factory.mktemp("slice") / f"every{every}.csv"
        tx.loc[keep, cols].to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def synthetic_tx() -> pd.DataFrame:
    return synthetic_log()


# --------------------------------------------------------------------------- service


@pytest.fixture(scope="session")
def champions(tmp_path_factory):
    """Champions trained on a slice of the real log (every 10th customer) in a temp store.

    Returns ``(data_csv, tracking_uri)``. The slice keeps the Online Retail II columns, so
    the service loads it with the same loader (and item names) as the full log.
    """
    import mlflow

    from training.pipeline import TrainConfig, train

    root = tmp_path_factory.mktemp("champions")
    raw = pd.read_csv(DEFAULT_DATA, dtype=str)
    keep = raw["Customer ID"].map(lambda c: isinstance(c, str) and zlib.crc32(c.encode()) % 10 == 0)
    data = root / "slice.csv"
    raw[keep].to_csv(data, index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = TrainConfig(
        data=data, tracking_uri=uri, force=True, als_grid="small", max_cutoffs=4, origins=2
    )
    train(cfg)
    mlflow.set_tracking_uri(None)
    return data, uri


@pytest.fixture(scope="session")
def service_env(champions):
    """A function: folder -> the REVIVAL_* variables pointing the service at the slice, its
    champions and a new store in ``folder`` (hold-out off unless a test sets it), whose
    first-start admin key is ``auth.TEST_KEY``, rate limits lifted (``auth.API_ENV``)."""
    from auth import API_ENV

    data, uri = champions

    def env(folder) -> dict[str, str]:
        return {
            "REVIVAL_DATA_PATH": str(data),
            "REVIVAL_MLFLOW_TRACKING_URI": uri,
            "REVIVAL_STORE_URL": f"sqlite:///{folder / 'store.db'}",
            "REVIVAL_HOLDOUT_SHARE": "0",
            **API_ENV,
        }

    return env


@pytest.fixture(scope="session")
def bento(tmp_path_factory):
    """``(home, tag, bento folder)`` of one ``bentoml build`` of the project into a fresh
    BentoML home (shared by the bento and topology end-to-end tests)."""
    import os
    import subprocess
    import sys

    from core.env import PROJECT_ROOT

    home = tmp_path_factory.mktemp("bentoml_home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(PROJECT_ROOT)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (info,) = (home / "bentos" / "revival").glob("*/bento.yaml")
    return home, f"revival:{info.parent.name}", info.parent


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def dask_client():
    """A ``distributed.Client`` of a ``LocalCluster``: 2 worker processes of one thread,
    1.5 GiB memory limit each (the shape the Dask engines are tested on)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="1.5GiB",
        dashboard_address=None,
    ) as cluster, Client(cluster) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="session")
def pg_server():
    """A running PostgreSQL (``REVIVAL_TEST_PG_URL`` or a throw-away cluster, see tests/pg.py).

    Fails, never skips, when there is none: the store must work on PostgreSQL.
    """
    from pg import start_pg

    try:
        server = start_pg()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A new contact store on each database: every store test runs on both (a test file
    may define its own ``store`` instead)."""
    from core.store import SqlContactStore

    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s = SqlContactStore(url)
    yield s
    s.close()


def forget_bentoml_metrics() -> None:
    """Unregister BentoML's HTTP metrics from the process-wide Prometheus registry.

    BentoML's metrics middleware registers its collectors once per ASGI app, so a second
    ``RevivalService.to_asgi()`` in one process fails with ``DuplicateTimeseries`` unless
    the previous app's collectors are gone.
    """
    if "bentoml" not in sys.modules:
        return
    from bentoml._internal.configuration.containers import BentoMLContainer

    registry = BentoMLContainer.metrics_client.get().registry
    for collector, names in list(registry._collector_to_names.items()):
        if any(n.startswith("bentoml_") for n in names):
            registry.unregister(collector)


@pytest.fixture(scope="module", autouse=True)
def _fresh_bentoml_metrics():
    """Each test module serving the API builds its own app (:func:`forget_bentoml_metrics`)."""
    yield
    forget_bentoml_metrics()


@pytest.fixture
def fresh_app():
    """Builds ``RevivalService.to_asgi()`` again within a module (a restart)."""

    def build():
        forget_bentoml_metrics()
        from service.service import RevivalService

        return RevivalService.to_asgi()

    return build
