"""``python -m benchmarks.customers``: profile import and identity resolution at 100,000 rows.

The shared log tiled ``--tiles`` times (disjoint customers, :func:`tile_log`) gives the
customer ids. A CRM export of ``--rows`` profiles is made from them: 80 % profiles with an
e-mail and a phone (half with an e-mail consent), 20 % profiles of other customers of the
log that share one of those e-mails (each one a merge: one person under two shop ids), and
one phone typed on 50 profiles (over-shared: it must merge nobody). Rows: wall time,
rows/s, and the peak RSS during that row alone (the process's RSS at its start included):

* the import (``python -m service.customers import``'s code: validate, normalise,
  upsert, stitch, consents) into a new SQLite store;
* reading the identity map, and resolving 10,000 identifier references one by one
  (what each ``/decide`` by identifier does);
* loading the tiled log with and without the identity map (:func:`load_sources`), i.e.
  the cost of unified customers in every feature build.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.startup import tile_log
from core.env import DEFAULT_DATA, configure_environment

__all__ = ["main"]


def _reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    """Peak RSS since :func:`_reset_peak` (VmHWM), else of the whole process."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(name: str, seconds: float, n: int | None = None) -> str:
    rate = f"{n / seconds:,.0f}" if n else ""
    return f"| {name} | {seconds:,.1f} | {'' if n is None else f'{n:,}'} | {rate} | {_peak_mib():,.0f} |"


def profile_export(customers: list[str], rows: int, path: Path) -> dict[str, int]:
    """Write the CRM export described in the module docstring; returns its make-up."""
    n_pos = rows // 5
    n_shop = rows - n_pos
    if rows > len(customers):
        raise ValueError(f"--rows {rows}: only {len(customers):,} customers; tile more")
    shop = pd.DataFrame(
        {
            "id": customers[:n_shop],
            "src": "",
            "mail": [f"u{i}@example.com" for i in range(n_shop)],
            "tel": [f"+447{i:09d}" for i in range(n_shop)],
            "email_ok": ["yes" if i % 2 else "" for i in range(n_shop)],
        }
    )
    shop.loc[n_shop - 50 :, "tel"] = "+447000000000"  # one phone on 50 members
    pos = pd.DataFrame(
        {
            "id": customers[n_shop : n_shop + n_pos],
            "src": "",
            "mail": [f"U{i}@Example.com " for i in range(n_pos)],
            "tel": "",
            "email_ok": "",
        }
    )
    pd.concat([shop, pos], ignore_index=True).to_csv(path, index=False)
    return {"first": n_shop, "linked": n_pos, "over_shared": 50}


def _resolve_bench(store, refs: list[str]) -> float:
    t0 = time.perf_counter()
    for ref in refs:
        store.profiles.resolve([ref])
    return time.perf_counter() - t0


def run(tiles: int, rows: int, folder: Path) -> list[str]:
    from core.store import open_store
    from features.loaders import load_transactions
    from features.sources import Source, load_sources
    from service.config import load_settings
    from service.customers import CustomerDesk
    from service.customers.importer import import_profiles

    out = []
    data = folder / f"tiled-{tiles}.csv.gz"
    t0 = time.perf_counter()
    if not data.exists():
        tile_log(DEFAULT_DATA, data, tiles)
    column = pd.read_csv(data, usecols=["Customer ID"], dtype=str)["Customer ID"]
    customers = sorted(column.dropna().unique())
    del column
    out.append(_row(f"tile the log ×{tiles}, read its customer ids", time.perf_counter() - t0))
    export = folder / "profiles.csv"
    _reset_peak()
    t0 = time.perf_counter()
    makeup = profile_export(customers, rows, export)
    out.append(_row("write the CRM export", time.perf_counter() - t0, rows))
    settings = load_settings()
    store = open_store(f"sqlite:///{folder / 'store.db'}")
    desk = CustomerDesk(settings, store)
    pairs = ["customer_id=id", "source=src", "email=mail", "phone=tel", "consent_email=email_ok"]
    _reset_peak()
    t0 = time.perf_counter()
    report = import_profiles(export, desk, settings, pairs=pairs)
    out.append(
        _row(
            "import: validate, normalise, upsert, stitch, consents", time.perf_counter() - t0, rows
        )
    )
    assert report.merges == makeup["linked"] and report.refused_rows == 0, report.to_text()
    assert len(report.over_shared) == 1, report.over_shared
    _reset_peak()
    t0 = time.perf_counter()
    identity = store.profiles.identity_map()
    out.append(_row("read the identity map", time.perf_counter() - t0, len(identity)))
    refs = [
        f"email:u{i}@example.com"
        for i in range(0, makeup["first"], max(1, makeup["first"] // 10_000))
    ]
    _reset_peak()
    seconds = _resolve_bench(store, refs)
    out.append(_row("resolve one identifier reference (each)", seconds, len(refs)))
    store.close()
    _reset_peak()
    t0 = time.perf_counter()
    load_transactions(data)
    out.append(_row("load the log (no identity)", time.perf_counter() - t0))
    _reset_peak()
    t0 = time.perf_counter()
    unified = load_sources(Source("shop", data), [], identity)
    linked = unified.report.linked_customers
    out.append(
        _row(f"load the log on unified customers ({linked:,} linked)", time.perf_counter() - t0)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.customers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--tiles", type=int, default=20, help="copies of the shared log (20)")
    p.add_argument("--rows", type=int, default=100_000, help="profile rows (100,000)")
    p.add_argument("--folder", default=None, help="work folder (default: a temporary one)")
    args = p.parse_args(argv)
    configure_environment()
    print("| customers | wall s | rows | rows/s | peak RSS MiB (this row) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="revival-customers-") as tmp:
        folder = Path(args.folder or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for line in run(args.tiles, args.rows, folder):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
