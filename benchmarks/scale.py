"""``python -m benchmarks.scale``: training on tiled logs — wall time, peak RSS, each stage.

Issue #19's table. For each ``--factors`` entry (default ``1,4``; the issue's sizes are
``1,4,16,64``) the shared log is tiled that many times (:func:`benchmarks.startup.tile_log`:
disjoint customers and invoices, timestamps kept) and ``python -m training --json`` runs on
it in a fresh interpreter, into a temp MLflow store, as the main job would. Wall time is
the child's, from spawn to exit; peak RSS is sampled from its process tree every 0.2 s;
the stages come from its JSON summary, summed by kind, and *peak in* names the stage whose
own sampled peak was highest; the gate metrics are the mean
backtest metrics each model was gated on (churn and next purchase AUC, cross-sell recall@10),
which on a tiled log should equal the 1× ones within noise. Extra arguments after ``--`` go to
``python -m training`` (e.g. ``-- --origins 1`` for the single-window protocol).

``--dask-workers N --worker-memory LIMIT`` trains on the Dask engine instead: a
``LocalCluster`` of N one-thread worker processes with that memory limit each is started
here and passed as ``--engine dask --scheduler ADDRESS``; the peak RSS then also counts the
cluster's processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _run_training(
    data: Path, uri: str, extra: list[str], also: list[psutil.Process] = ()
) -> tuple[dict, float, float]:
    """``python -m training --json`` on ``data``: its summary, wall seconds, peak RSS MiB
    (of its process tree and the ``also`` processes, e.g. a cluster's workers)."""
    cmd = [sys.executable, "-m", "training", "--data", str(data), "--tracking-uri", uri]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([*cmd, "--json", *extra], cwd=PROJECT_ROOT, stdout=out)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True), *also]
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
    top = max(summary["stages"], key=lambda m: m["peak_rss_mib"])
    data = summary.get("data", {})
    cells = [
        f"{factor}×",
        f"{data.get('rows_kept', 0) / 1e6:.2f} M",
        f"{data.get('customers', 0):,}",
        f"{wall:.0f} s",
        f"{peak_mib / 1024:.2f} GB",
        f"{stage_kind(top['name'])} ({top['peak_rss_mib'] / 1024:.2f} GB)",
        *(f"{by_kind.get(k, 0.0):.1f} s" for k, _ in STAGE_KINDS),
        ", ".join(f"{d['model']} {d['value']:.4f}" for d in summary["decisions"]),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--factors", default="1,4", help="tiling factors, comma-separated")
    p.add_argument(
        "--dask-workers",
        type=int,
        default=0,
        help="train on the Dask engine: a LocalCluster of this many workers (0: local engine)",
    )
    p.add_argument("--worker-memory", default="4GiB", help="memory limit per Dask worker (4GiB)")
    p.add_argument("training_args", nargs="*", help="after --: passed to python -m training")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.dask_workers:
            cluster = stack.enter_context(_cluster(args.dask_workers, args.worker_memory))
            args.training_args += ["--engine", "dask", "--scheduler", cluster.scheduler_address]
        _table(args)
    return 0


@contextlib.contextmanager
def _cluster(workers: int, memory: str) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` one-thread processes, ``memory`` each; their stdout
    (LightGBM's native socket chatter) goes to stderr, away from the table."""
    from distributed import Client, LocalCluster

    print(f"LocalCluster: {workers} workers × 1 thread, {memory} each", file=sys.stderr)
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, memory_limit=memory, dashboard_address=None
    ) as cluster:
        with Client(cluster) as client:
            client.run(os.dup2, 2, 1)
        yield cluster


def _table(args: argparse.Namespace) -> None:
    """One table row per tiling factor (see the module docstring)."""
    factors = [int(f) for f in args.factors.split(",")]
    kinds = [k for k, _ in STAGE_KINDS]
    head = ["log", "lines (clean)", "customers", "wall", "peak RSS", "peak in", *kinds]
    print("| " + " | ".join([*head, "gate metrics"]) + " |")
    print("|---|---:|---:|---:|---:|---|" + "---:|" * len(kinds) + "---|", flush=True)
    for factor in factors:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / f"tiled{factor}.csv.gz"
            print(f"[{factor}×] tiling the log", file=sys.stderr, flush=True)
            tile_log(Path(args.data), data, factor)
            print(f"[{factor}×] python -m training", file=sys.stderr, flush=True)
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            summary, wall, peak = _run_training(
                data, uri, args.training_args, psutil.Process().children(recursive=True)
            )
        print(_row(factor, summary, wall, peak), flush=True)


if __name__ == "__main__":
    configure_environment()
    raise SystemExit(main())
