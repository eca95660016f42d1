"""``python -m benchmarks.startup``: a replica's start-up, featurising the log vs a stored snapshot.

Each configuration starts a fresh interpreter that builds :class:`service.runtime.Runtime`
exactly as the service does (settings from ``policy.yaml`` + ``REVIVAL_*``); the time is the
wall time from spawning the process until the runtime is ready (interpreter, imports,
champions, snapshot, scoring every customer, store), and the peak RSS is the child's own
``ru_maxrss`` when it is ready; then the replica's first batch is timed (``decide_batch``:
every customer ranked, a page of 100 decided; best of 3, customers/s). *before*: the
snapshot featurised from the CSV (``snapshot: data``); *after*: the snapshot training
stored, pinned by its run id. Both run on the shared log and on a tiled copy of it
(customers and invoices of tile k > 0 prefixed ``t<k>-``, timestamps kept; written to a
temp dir, gzip level 1 like the shared file's format), alternating before and after in each
round; the table shows the median over rounds.

Champions: ``--tracking-uri`` with champions already in it, or (default) a quick training
on the shared log into a temp store (``python -m training --als-grid small --max-cutoffs
4``); the tiled snapshot is scored with those champions (unknown customers get no ALS
items), which is all a start-up benchmark needs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from core.env import DEFAULT_DATA, PROJECT_ROOT, configure_environment

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main", "tile_log"]

EXPERIMENT = "revival"


def tile_log(src: Path, dst: Path, tiles: int) -> None:
    """Write ``tiles`` disjoint copies of the Online Retail II log ``src`` to ``dst``: the
    customers and invoices of copy k > 0 prefixed ``t<k>-``, timestamps kept, rows in the
    source's time order: each day's lines (a run of one date in the file) are written once
    per copy before the next day's, so no copy jumps back in time. One day's copies are in
    memory at a time, so a 64× log needs little more than the 1× one."""
    import gzip

    import numpy as np
    import pandas as pd

    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    day = raw["InvoiceDate"].str[:10].to_numpy()
    bounds = [0, *(np.flatnonzero(day[1:] != day[:-1]) + 1), len(raw)]
    with gzip.open(dst, "wt", compresslevel=1, newline="") as out:
        raw.head(0).to_csv(out, index=False)
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            part = raw.iloc[start:end]
            copies = pd.concat([_tile_copy(part, k) for k in range(tiles)])
            copies.to_csv(out, index=False, header=False)


def _tile_copy(part: pd.DataFrame, k: int) -> pd.DataFrame:
    """Copy ``k`` of some raw lines: customers and invoices prefixed ``t<k>-`` (k > 0)."""
    if not k:
        return part
    part = part.copy()
    cust = part["Customer ID"]
    part["Customer ID"] = cust.where(cust == "", f"t{k}-" + cust)
    part["Invoice"] = part["Invoice"].str.replace(r"^([AC]?)", rf"\g<1>t{k}-", regex=True)
    return part


def _python(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m …`` in the project; its stdout (stderr shown on failure)."""
    out = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def _store_snapshot(uri: str, data: Path) -> str:
    """Log a snapshot run of ``data`` (``training.score --snapshot-only``); its run id."""
    out = _python(
        "training.score",
        "--snapshot-only",
        "--data",
        str(data),
        "--tracking-uri",
        uri,
        "--experiment",
        EXPERIMENT,
    )
    found = re.search(r"logged: run (\w+)", out)
    if found is None:
        raise RuntimeError(f"training.score printed no run id:\n{out}")
    return found.group(1)


def _child() -> int:
    """The measured replica: build the runtime, print what it took as one JSON line."""
    import resource

    t0 = time.perf_counter()
    configure_environment()
    from service.config import load_settings
    from service.runtime import Runtime
    from service.schemas import BatchRequest

    runtime = Runtime(load_settings())
    ready = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    snap = runtime.state.snapshot
    # the replica's first batch: every customer ranked, the first page of 100 decided
    page = BatchRequest(now=snap.at + timedelta(days=5), limit=100)
    runtime.decide_batch(page)
    batch_s = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        runtime.decide_batch(page)
        batch_s = min(batch_s, time.perf_counter() - start)
    print(
        json.dumps(
            {
                "runtime_s": ready,
                "snapshot_s": snap.seconds,
                "customers": len(snap.features),
                "source": snap.source,
                "peak_rss_mib": peak,
                "batch_per_s": len(snap.features) / batch_s,
            }
        ),
        flush=True,
    )
    runtime.close()
    return 0


def _measure(env: dict[str, str]) -> dict:
    """Spawn one replica with ``env``; wall time until its ready line, and what it reported."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.startup", "--child"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    wall = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0 or not line.startswith("{"):
        raise RuntimeError(f"replica failed ({proc.returncode}):\n{line}{err[-3000:]}")
    return json.loads(line) | {"wall_s": wall}


def _table(results: dict[tuple[str, str], list[dict]]) -> str:
    head = (
        "| log | snapshot | customers | start-up wall s | Runtime() s | snapshot s "
        "| peak RSS MiB | wall vs before | decide_batch customers/s |"
        "\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for (log, mode), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "source"}
        before = results.get((log, "before"))  # none with --after-only
        ratio = (
            f"{med['wall_s'] / statistics.median(r['wall_s'] for r in before):.2f}×"
            if before
            else "–"
        )
        lines.append(
            f"| {log} | {mode} | {runs[0]['customers']:,} | {med['wall_s']:.1f} "
            f"| {med['runtime_s']:.1f} | {med['snapshot_s']:.2f} | {med['peak_rss_mib']:,.0f} "
            f"| {ratio} | {med['batch_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Online Retail II log")
    p.add_argument("--tracking-uri", default="", help="a store with champions (default: train)")
    p.add_argument("--tiles", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median shown)")
    p.add_argument(
        "--after-only",
        action="store_true",
        help="only start from the stored snapshot (featurising a large tiled log at start-up "
        "takes minutes and the memory this benchmark shows it saves)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child()
    work = Path(tempfile.mkdtemp(prefix="revival-startup-"))
    try:
        uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
        if not args.tracking_uri:
            print(f"training champions on {args.data} into {uri} …", flush=True)
            _python(
                "training",
                *("--data", args.data, "--tracking-uri", uri, "--force"),
                *("--als-grid", "small", "--max-cutoffs", "4", "--no-snapshot"),
            )
        tiled = work / f"online_retail_x{args.tiles}.csv.gz"
        tile_log(Path(args.data), tiled, args.tiles)
        logs = {"shared log": Path(args.data), f"{args.tiles}× tiled": tiled}
        runs = {name: _store_snapshot(uri, path) for name, path in logs.items()}
        print(f"stored snapshots: {runs}", flush=True)
        every = ("after",) if args.after_only else ("before", "after")
        results: dict[tuple[str, str], list[dict]] = {
            (name, mode): [] for name in logs for mode in every
        }
        for r in range(args.rounds):
            modes = every if r % 2 == 0 else every[::-1]
            for i, (name, path) in enumerate(logs.items()):
                for mode in modes:
                    env = os.environ | {
                        "REVIVAL_DATA_PATH": str(path),
                        "REVIVAL_MLFLOW_TRACKING_URI": uri,
                        "REVIVAL_STORE_URL": f"sqlite:///{work / f'store-{r}-{i}-{mode}.db'}",
                        "REVIVAL_SNAPSHOT": "data" if mode == "before" else runs[name],
                        "REVIVAL_HOLDOUT_SHARE": "0",
                    }
                    res = _measure(env)
                    results[(name, mode)].append(res)
                    print(
                        f"round {r + 1} {name:>11} {mode:>6}: {res['wall_s']:.1f} s, "
                        f"{res['peak_rss_mib']:,.0f} MiB ({res['source']})",
                        flush=True,
                    )
        print(f"\nreplica start-up, median of {args.rounds} alternating rounds")
        print(_table(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    configure_environment()
    sys.exit(main())
