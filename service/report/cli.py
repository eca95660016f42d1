"""Write one campaign's report (treated vs hold-out) with its charts, from the contact store.

``python -m service.report --campaign X [--store-url U] [--data LOG] [--out reports/]
[--format md|html] [--start D] [--end D]`` writes the report and its PNG charts and prints
where; an unknown campaign exits with status 2 naming the configured ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from core.store import open_store
from service.config import load_settings
from service.engine import UnknownCampaign
from service.report.analysis import BadReportRequest, campaign_report
from service.report.render import write_report


def _date(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m service.report``: write one campaign's report (see the module docstring)."""

    parser = argparse.ArgumentParser(
        prog="python -m service.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--campaign", required=True, help="campaign id")
    parser.add_argument("--store-url", help="contact store (default: the settings' store_url)")
    parser.add_argument(
        "--data", type=Path, help="a transaction log whose orders count as outcomes"
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    parser.add_argument("--format", choices=("md", "html"), default="md")
    parser.add_argument("--start", type=_date, help="decisions from (ISO; default zone if naive)")
    parser.add_argument("--end", type=_date, help="decisions before (ISO)")
    args = parser.parse_args(argv)
    settings = load_settings()
    transactions = None
    if args.data is not None:
        from features.loaders import load_transactions

        try:
            transactions = load_transactions(args.data).transactions
        except (OSError, ValueError) as exc:
            print(f"error: cannot load {args.data}: {exc}", file=sys.stderr)
            return 2
    store = open_store(args.store_url or settings.store_url)
    try:
        report = campaign_report(store, args.campaign, args.start, args.end, settings, transactions)
    except UnknownCampaign as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except BadReportRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    path = write_report(report, args.out, args.format)
    print(f"wrote {path} (+ {path.stem.removesuffix('-report')}-gain.png, -segments.png)")
    print(report.overall.statement)
    print(report.overall.revenue_statement)
    return 0
