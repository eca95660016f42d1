"""``python -m benchmarks.uplift``: wall time and peak RSS of the Hillstrom offer-uplift
run (issue #5 target: the whole experiment under 60 s on 2 cores).

Steps: load the file; the experiment (2 arms x 3 outcomes x 4 models x 5 splits); the
final refit of both arms; then the complete ``python -m training.uplift`` run (experiment,
MLflow logging, registration and gate) against a throw-away SQLite store, so benchmarking
never registers into the project's store.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from core.env import HILLSTROM_DATA, configure_environment
from training.stages import Measurement, measure, print_table


def main(argv: list[str] | None = None) -> int:
    from features.loaders import load_hillstrom
    from training.uplift import fit_offer_uplift, run_experiment, train_and_register

    p = argparse.ArgumentParser(prog="python -m benchmarks.uplift", description=__doc__)
    p.add_argument("--data", default=str(HILLSTROM_DATA))
    args = p.parse_args(argv)
    rows: list[Measurement] = []
    with measure("load Hillstrom") as m:
        df = load_hillstrom(args.data)
    m.note = f"{len(df):,} rows"
    rows.append(m)
    with measure("experiment: 2 arms x 3 outcomes x 4 models x 5") as m:
        run_experiment(df)
    m.note = "target < 60 s"
    rows.append(m)
    with measure("final refit, both arms (visit)") as m:
        fit_offer_uplift(df)
    rows.append(m)
    with tempfile.TemporaryDirectory() as tmp, measure("python -m training.uplift (all)") as m:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        train_and_register(args.data, tracking_uri=uri, experiment="bench", log=lambda _: None)
    m.note = "incl. MLflow store creation, logging, registration"
    rows.append(m)
    print_table("offer uplift (Hillstrom): wall time and peak RSS", rows)
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
