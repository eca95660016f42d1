"""``python -m benchmarks.scale``: training on tiled logs — wall time, peak RSS, each stage.

Issue #19's table. For each ``--factors`` entry (default ``1,4``; the issue's sizes are
``1,4,16,64``) the shared log is tiled that many times (:func:`benchmarks.startup.tile_log`:
disjoint customers and invoices, timestamps kept) and ``python -m training --json`` runs on
it in a fresh interpreter, into a temp MLflow store, as the main job would. Wall time is
the child's, from spawn to exit; peak RSS is sampled from its process tree every 0.2 s;
the stages come from its JSON summary, summed by kind; the gate metrics are the mean
backtest metrics each model was gated on (churn and next purchase AUC, cross-sell recall@10),
which on a tiled log should equal the 1× ones within noise. Extra arguments after ``--`` go to
``python -m training`` (e.g. ``-- --origins 1`` for the single-window protocol).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.startup import tile_log
from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment

__all__ = ["STAGE_KINDS", "main", "stage_kind"]

#: how the training stages are grouped in the table (first match wins)
STAGE_KINDS = (
    ("load", ("load + clean log",)),
    ("features", ("features:", "training frame")),
    ("propensity", (": fit churn", ": score vs baselines")),
    ("cross-sell", ("cross-sell tune",)),
    ("refit", ("refit",)),
    ("mlflow", ("mlflow:",)),
    ("snapshot", ("serving snapshot",)),
)


def stage_kind(name: str) -> str:
    """The table column a training stage belongs to (``other`` if none)."""
    for kind, needles in STAGE_KINDS:
        if any(n in name for n in needles):
            return kind
    return "other"


def _run_training(data: Path, uri: str, extra: list[str]) -> tuple[dict, float, float]:
    """``python -m training --json`` on ``data``: its summary, wall seconds, peak RSS MiB."""
    cmd = [sys.executable, "-m", "training", "--data", str(data), "--tracking-uri", uri]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([*cmd, "--json", *extra], cwd=PROJECT_ROOT, stdout=out)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"python -m training failed on {data} (exit {proc.returncode})")
        out.seek(0)
        text = out.read()
    summary = json.loads(text[text.index("\n{\n") + 1 :])
    return summary, wall, peak / 2**20


def _row(factor: int, summary: dict, wall: float, peak_mib: float) -> str:
    by_kind: dict[str, float] = {}
    for stage in summary["stages"]:
        kind = stage_kind(stage["name"])
        by_kind[kind] = by_kind.get(kind, 0.0) + stage["seconds"]
    data = summary.get("data", {})
    cells = [
        f"{factor}×",
        f"{data.get('rows_kept', 0) / 1e6:.2f} M",
        f"{data.get('customers', 0):,}",
        f"{wall:.0f} s",
        f"{peak_mib / 1024:.2f} GB",
        *(f"{by_kind.get(k, 0.0):.1f} s" for k, _ in STAGE_KINDS),
        ", ".join(f"{d['model']} {d['value']:.4f}" for d in summary["decisions"]),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--factors", default="1,4", help="tiling factors, comma-separated")
    p.add_argument("training_args", nargs="*", help="after --: passed to python -m training")
    args = p.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    kinds = [k for k, _ in STAGE_KINDS]
    head = ["log", "lines (clean)", "customers", "wall", "peak RSS", *kinds, "gate metrics"]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(kinds) + "---|", flush=True)
    for factor in factors:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / f"tiled{factor}.csv.gz"
            print(f"[{factor}×] tiling the log", file=sys.stderr, flush=True)
            tile_log(Path(args.data), data, factor)
            print(f"[{factor}×] python -m training", file=sys.stderr, flush=True)
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            summary, wall, peak = _run_training(data, uri, args.training_args)
        print(_row(factor, summary, wall, peak), flush=True)
    return 0


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
