"""``python -m benchmarks.training``: the full training run on the real log, wall time and peak
RSS per stage (targets from issue #3: under 90 s and 3 GB in total on 2 cores).

Runs against a throw-away SQLite MLflow store so benchmarking never moves a real champion.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from core.env import DEFAULT_DATA, configure_environment
from training.stages import Measurement, print_table


def main(argv: list[str] | None = None) -> int:
    from training.pipeline import TrainConfig, train

    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        t0 = time.perf_counter()
        result = train(TrainConfig(data=Path(args.data), tracking_uri=uri, force=True))
        total = time.perf_counter() - t0
    rows = list(result.stages)
    rows.append(
        Measurement(
            "TOTAL (incl. imports of the run)",
            total,
            max(m.peak_rss_mib for m in rows),
            "target < 90 s, < 3072 MiB",
        )
    )
    print_table("training: wall time and peak RSS per stage", rows)
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
